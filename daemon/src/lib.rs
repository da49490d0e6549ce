//! `aniated`, the Aniate daemon, and the client side it shares with `ant` and `ant-lsp`.
//!
//! The daemon keeps the user's token, the installed tools and a pooled, pre-warmed connection
//! to the server, so that a tool run pays only for the model call.
//!
//! Layout:
//! - [`home`], [`config`], [`credentials`], [`fsutil`]: the files under `ANIATE_HOME`, written
//!   atomically.
//! - [`store`]: installed tools (`tools/<slug>.json`), mirrored in memory.
//! - [`server`]: the HTTP client of `ant-server`.
//! - [`cache`]: the result cache in `state.redb`.
//! - [`engine`]: the state and the handling of every request; used by the daemon, and by the
//!   private one-command daemon `ant --no-daemon` starts (`aniated --stdio`).
//! - [`replies`]: the replies to one request, local or remote alike.
//! - [`frames`], [`daemon`]: the NDJSON socket protocol, the daemon's listener, and the one
//!   connection `aniated --stdio` serves.
//! - [`client`]: connecting to the daemon (and starting it) from `ant` and `ant-lsp`.
//! - [`watch`]: reloading when files under the home change.
//!
//! **Architecture Invariant:** nothing here ever sees a system prompt: the server sends tool
//! metadata only.

pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod engine;
pub mod frames;
pub mod fsutil;
pub mod home;
pub mod replies;
pub mod server;
pub mod store;
pub mod watch;

/// Sets up logging: `ANIATE_LOG` filter (default `info`), to the daemon's log file, and to
/// stderr too when `to_stderr`.
pub fn init_logging(home: &home::Home, to_stderr: bool) {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    let filter = EnvFilter::try_from_env("ANIATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let log_path = home.log_path();
    // Keep one previous log; a daemon that runs for weeks must not fill the disk.
    if std::fs::metadata(&log_path).is_ok_and(|meta| meta.len() > 10 * 1024 * 1024) {
        let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).ok();
    let _ = fsutil::make_private(&log_path);
    let file_layer = file.map(|file| fmt::layer().with_ansi(false).with_writer(std::sync::Mutex::new(file)));
    let stderr_layer = to_stderr.then(|| fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry().with(filter).with(file_layer).with(stderr_layer).init();
}

/// Logging for `aniated --stdio`, a private daemon of one command: to stderr (the command's),
/// and only when `ANIATE_LOG` asks for it. The daemon's log file belongs to the daemon.
pub fn init_stderr_logging() {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    if let Ok(filter) = EnvFilter::try_from_env("ANIATE_LOG") {
        tracing_subscriber::registry().with(filter).with(fmt::layer().with_writer(std::io::stderr)).init();
    }
}
