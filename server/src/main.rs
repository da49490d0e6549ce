//! `ant-server`: parses flags, sets up logging, runs.

use std::process::ExitCode;

use ant_server::cli::{Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    // Before anything is created: the database and stored files are nobody else's to read.
    ant_server::private_files::set_private_umask();
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Serve(args) if args.log_format == "json");
    ant_server::telemetry::init(json_logs);
    // The server needs a process-wide rustls provider for HTTPS; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => ant_server::serve::serve(*args, ant_server::serve::shutdown_signal()).await,
            Command::Manpages { dir } => ant_server::cli::write_manpages(&dir),
            Command::Admin(command) => {
                let mut stdin = std::io::stdin().lock();
                let mut stdout = std::io::stdout().lock();
                ant_server::admin_cli::run(command, &mut stdin, &mut stdout).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
