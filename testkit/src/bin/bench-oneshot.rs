//! `bench-oneshot`: a minimal one-shot HTTP client of `ant-server`, the reference that
//! `bench/daemon.py` times `ant` against.
//!
//! It does what `ant what FILE` asks the server to do, and nothing more: reads the file, sends
//! `POST /tool/SLUG` (plain text, not Server-Sent Events) over a fresh TCP connection with the
//! standard library alone, and prints the answer. No async runtime, no TLS, no connection pool,
//! no configuration files: the floor a client process can reach, so that what `ant` and its daemon
//! add is measured against it.
//!
//! Usage: `ANIATE_TOKEN=T bench-oneshot http://127.0.0.1:8787 what small.py [--language python]`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::ExitCode,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-oneshot: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ANIATE_TOKEN=T bench-oneshot http://HOST:PORT SLUG FILE [--language LANG]";
    let [server, slug, file, rest @ ..] = args.as_slice() else { return Err(usage.to_owned()) };
    let language = match rest {
        [] => None,
        [flag, language] if flag == "--language" => Some(language.as_str()),
        _ => return Err(usage.to_owned()),
    };
    let authority = server
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .ok_or_else(|| format!("{server}: only http:// URLs"))?;
    let token = std::env::var("ANIATE_TOKEN").map_err(|_| "set ANIATE_TOKEN".to_owned())?;
    let content = std::fs::read_to_string(file).map_err(|err| format!("cannot read {file}: {err}"))?;
    let filename = std::path::Path::new(file).file_name().map(|name| name.to_string_lossy().into_owned());
    let body = serde_json::json!({"content": content, "filename": filename, "language": language}).to_string();

    let mut request = format!(
        "POST /tool/{slug} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    let mut stream = TcpStream::connect(authority).map_err(|err| format!("cannot connect to {authority}: {err}"))?;
    stream.write_all(&request).map_err(|err| format!("cannot send the request: {err}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|err| format!("cannot read the answer: {err}"))?;

    let head_end =
        response.windows(4).position(|window| window == b"\r\n\r\n").ok_or("the answer has no complete head")?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head.split(' ').nth(1).unwrap_or("");
    let body = &response[head_end + 4..];
    let chunked = head.lines().any(|line| line.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    if status != "200" {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&body).and_then(|()| stdout.flush()).map_err(|err| format!("cannot write the answer: {err}"))
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|window| window == b"\r\n").ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size `{size_text}`"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("a chunk cut short")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("a chunk without its line end")?;
    }
}
