//! `ant`: parses the command line and runs it; errors become messages and exit codes.

use std::process::ExitCode;

use aniate_cli::{
    args::Cli,
    exit::{Exit, Failure, hint_of},
    render,
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.kind() == clap::error::ErrorKind::DisplayVersion => {
            print_versions();
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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return Exit::Error.into();
        }
    };
    match runtime.block_on(aniate_cli::app::run(cli)) {
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

/// `ant --version`: this client's version, and the daemon's and server's when a daemon runs.
/// With no daemon it costs nothing more than printing a line: no daemon is started for it.
fn print_versions() {
    println!("ant {}", aniate_proto::VERSION);
    let Ok(home) = aniated::home::Home::from_env() else { return };
    if !home.socket.exists() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    runtime.block_on(async {
        let mut options = aniated::client::ClientOptions::new(format!("ant/{}", aniate_proto::VERSION));
        options.autostart = false;
        let ask = async {
            let client = aniated::client::DaemonClient::connect_once(&home, &options).await.ok()?;
            let replies = client.request(aniate_proto::ipc::Request::Status).await.ok()?;
            replies.result::<aniate_proto::ipc::StatusResult>().await.ok()
        };
        if let Ok(Some(status)) = tokio::time::timeout(std::time::Duration::from_millis(500), ask).await {
            println!("aniated {} (pid {})", status.version, status.pid);
            match status.server_version {
                Some(version) => println!("ant-server {version} at {}", status.server),
                None => println!("ant-server at {} (not reached yet)", status.server),
            }
        }
    });
}
