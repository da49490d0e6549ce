//! `bench-ipc`: a minimal client of the daemon's socket, the second reference that
//! `bench/daemon.py` times `ant` against.
//!
//! It does what `ant what FILE --fresh` asks the daemon to do, and nothing more: reads the file,
//! connects to `$ANIATE_HOME/aniated.sock`, writes the hello and a `run_tool` request in one
//! write (the frames of `aniate_proto::ipc`, as `ant` does), reads the replies with blocking
//! reads until `done`, and prints the answer's text. No async runtime, no command line parser,
//! no configuration: so `bench-ipc` − `bench-oneshot` is what the daemon's hop costs, and
//! `ant` − `bench-ipc` what `ant` adds around it.
//!
//! Usage: `ANIATE_HOME=H bench-ipc SLUG FILE [--language LANG] [--server URL]`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-ipc: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn run() -> Result<(), String> {
    Err("the daemon's socket is a Unix socket; this system has none".to_owned())
}

#[cfg(unix)]
fn run() -> Result<(), String> {
    use std::{
        io::{BufRead, BufReader, Write},
        os::unix::net::UnixStream,
    };

    use aniate_proto::ipc::{
        ClientFrame, ClientHello, DaemonFrame, PROTOCOL, Reply, Request, RequestFrame, RunToolParams,
    };

    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ANIATE_HOME=H bench-ipc SLUG FILE [--language LANG] [--server URL]";
    let [slug, file, rest @ ..] = args.as_slice() else { return Err(usage.to_owned()) };
    let (mut language, mut server) = (None, None);
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or(usage)?.clone();
        match flag.as_str() {
            "--language" => language = Some(value),
            "--server" => server = Some(value),
            _ => return Err(usage.to_owned()),
        }
    }
    let home = std::env::var("ANIATE_HOME").map_err(|_| "set ANIATE_HOME".to_owned())?;
    let content = std::fs::read_to_string(file).map_err(|err| format!("cannot read {file}: {err}"))?;
    let filename = std::path::Path::new(file).file_name().map(|name| name.to_string_lossy().into_owned());
    let hello = ClientFrame::Hello(ClientHello { protocol: PROTOCOL, client: "bench-ipc".to_owned() });
    let params = RunToolParams { tool: slug.clone(), content, instructions: None, filename, language, fresh: true };
    let request = ClientFrame::Request(RequestFrame { server, ..RequestFrame::new(1, Request::RunTool(params)) });
    let mut frames = Vec::new();
    for frame in [&hello, &request] {
        serde_json::to_writer(&mut frames, frame).map_err(|err| err.to_string())?;
        frames.push(b'\n');
    }

    let socket = format!("{home}/aniated.sock");
    let mut stream = UnixStream::connect(&socket).map_err(|err| format!("cannot connect to {socket}: {err}"))?;
    // A bench must not hang on a daemon that stops answering.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(|err| err.to_string())?;
    stream.write_all(&frames).map_err(|err| format!("cannot send the request: {err}"))?;
    let mut text = String::new();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|err| format!("cannot read a reply: {err}"))?;
        match serde_json::from_str::<DaemonFrame>(&line).map_err(|err| format!("a bad frame: {err}"))? {
            DaemonFrame::Hello(_) => {}
            DaemonFrame::Reply(reply) => match reply.event {
                Reply::Delta(delta) => text.push_str(&delta.text),
                Reply::Done(_) => {
                    let mut stdout = std::io::stdout().lock();
                    return writeln!(stdout, "{text}").map_err(|err| format!("cannot write the answer: {err}"));
                }
                Reply::Error(error) => return Err(error.message),
                event if event.is_final() => return Err(format!("the request ended without `done`: {event:?}")),
                _ => {}
            },
        }
    }
    Err("the daemon closed the connection before `done`".to_owned())
}
