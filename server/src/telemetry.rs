//! Logging: `tracing` to stderr, filtered by `ANIATE_LOG` (e.g. `debug`, `ant_server=debug`).
//!
//! **Architecture Invariant:** no log line carries a system prompt, a password, a token or
//! the user's content. Requests are logged by id, route, status and timings only.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The filter when `ANIATE_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,h2=warn,rustls=warn";

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_env("ANIATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json().with_writer(std::io::stderr)).init();
    } else {
        let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).init();
    }
}
