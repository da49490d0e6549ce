//! `ant`: parses the command line and runs it; errors become messages and exit codes.

use std::process::ExitCode;

use aniate_cli::{
    app::Started,
    args::{Invocation, parse_invocation},
    exit::{Exit, Failure, hint_of},
    render,
};

fn main() -> ExitCode {
    let args = std::env::args_os().skip(1).collect();
    let cli = match parse_invocation(args, std::env::var_os("ANIATE_SERVER")) {
        Ok(Invocation::Cli(cli)) => cli,
        Ok(Invocation::Version) => {
            // The client's version only, as `gh`, `cargo` and `uv` print theirs: no socket, no
            // runtime. `ant version` also asks the daemon and the server.
            println!("ant {}", aniate_proto::VERSION);
            return Exit::Ok.into();
        }
        Err(err) => {
            let exit = Exit::for_clap_error(&err);
            let _ = err.print();
            return exit.into();
        }
    };
    let json = cli.global.json;
    let colored = render::style::use_color(
        cli.global.color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // A tool run through a running daemon is done without an async runtime.
    let result = match aniate_cli::app::start(cli) {
        Started::Done(result) => result,
        Started::Async(rest) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(aniate_cli::app::finish(rest)),
            Err(err) => {
                eprintln!("error: cannot start the async runtime: {err}");
                return Exit::Error.into();
            }
        },
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(err) => {
            let exit = Exit::for_error(&err);
            let message = match err.downcast_ref::<Failure>() {
                Some(failure) => failure.to_string(),
                None => format!("{err:#}"),
            };
            if exit != Exit::Ok && !message.is_empty() {
                if json {
                    let error =
                        serde_json::json!({"error": {"message": message, "hint": hint_of(&err), "exit": exit.code()}});
                    eprintln!("{error}");
                } else {
                    eprint!("{}", render::message::render_error(&message, hint_of(&err), colored));
                }
            }
            exit.into()
        }
    }
}
