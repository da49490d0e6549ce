//! `ant-lsp`: parses the command line, sets up logging (stderr only: stdout is the LSP
//! channel) and serves LSP on stdio with [`aniate_lsp::serve`].

use std::io::Write;
use std::process::ExitCode;

use aniate_lsp::cli::{self, Action};

fn main() -> ExitCode {
    match cli::parse(std::env::args().skip(1)) {
        Action::Version => print_and_exit(&cli::version()),
        Action::Help => print_and_exit(cli::HELP),
        Action::Usage(message) => {
            eprintln!("error: {message}\n\nFor more information, try '--help'");
            ExitCode::from(2)
        }
        Action::Serve => serve(),
    }
}

fn print_and_exit(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`ant-lsp --help | head -1`) is not an error worth reporting.
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}

fn serve() -> ExitCode {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ANIATE_LOG").unwrap_or_else(|_| EnvFilter::new("warn,aniate_lsp=info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    let home = match aniated::home::Home::from_env() {
        Ok(home) => home,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(version = aniate_lsp::VERSION, home = %home.root.display(), "ant-lsp starting");
    runtime.block_on(aniate_lsp::serve(tokio::io::stdin(), tokio::io::stdout(), home));
    // Pending tasks (a daemon connection being made) must not keep the editor waiting.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::SUCCESS
}
