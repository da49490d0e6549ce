//! `aniated`: the Aniate daemon. Usually started on demand by `ant` or `ant-lsp`; also runs
//! under systemd or launchd.

use std::process::ExitCode;

use aniate_proto::ipc::{IpcError, IpcErrorCode};
use aniated::{
    client::EXIT_ALREADY_RUNNING,
    daemon::{self, StartError},
    engine::{Engine, EngineOptions},
    home::Home,
};
use clap::Parser;

fn main() -> ExitCode {
    let args = aniated::cli::Args::parse();
    let home = match Home::from_env() {
        Ok(home) => home,
        Err(err) => {
            eprintln!("aniated: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = home.ensure() {
        eprintln!("aniated: {err}");
        return ExitCode::FAILURE;
    }
    if args.stdio {
        return serve_stdio(home);
    }
    aniated::init_logging(&home, args.foreground);
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Blocking work is small file and cache I/O: a few threads do it. Tokio's default (up to
    // 512, one per concurrent call) let the soak's 64 streams grow the daemon's threads, and
    // with them its memory, for thousands of runs.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(4).enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aniated: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        let (listener, _lock, origin) = match daemon::bind_or_inherit(&home) {
            Ok(bound) => bound,
            Err(err @ StartError::AlreadyRunning { .. }) => {
                tracing::info!("{err}");
                eprintln!("aniated: {err}");
                return ExitCode::from(EXIT_ALREADY_RUNNING as u8);
            }
            Err(err) => {
                tracing::error!("{err}");
                eprintln!("aniated: {err}");
                return ExitCode::FAILURE;
            }
        };
        let engine = match Engine::open(home.clone(), EngineOptions { cache: true, server: None }) {
            Ok(engine) => engine,
            Err(err) => {
                tracing::error!("{err}");
                eprintln!("aniated: {err}");
                return ExitCode::FAILURE;
            }
        };
        let _watcher = aniated::watch::spawn(&engine)
            .map_err(|err| tracing::warn!(cause = %err, "not watching files; restart the daemon after editing them"))
            .ok();
        let background = engine.spawn_background();
        daemon::run(engine, listener, origin, shutdown).await;
        background.abort();
        ExitCode::SUCCESS
    })
}

/// `aniated --stdio`: one client, `ant --no-daemon`, over the socket on stdin; no lock, no socket
/// file, no result cache (the daemon may hold it), and no background work. One thread: it serves
/// one command.
fn serve_stdio(home: Home) -> ExitCode {
    aniated::init_stderr_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aniated: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match Engine::open(home, EngineOptions { cache: false, server: None }) {
            Ok(engine) => match served(engine).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("aniated: {err}");
                    ExitCode::FAILURE
                }
            },
            Err(err) => {
                // Told to the client, which reports it as its own error; said here only when
                // there is no client to tell.
                if let Err(unsent) = refused(IpcError::new(IpcErrorCode::Internal, err.clone())).await {
                    eprintln!("aniated: {err}\naniated: {unsent}");
                }
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(unix)]
async fn served(engine: Engine) -> Result<(), String> {
    daemon::serve_stdio(engine).await
}

#[cfg(unix)]
async fn refused(error: IpcError) -> Result<(), String> {
    daemon::refuse_stdio(error).await
}

#[cfg(not(unix))]
async fn served(_engine: Engine) -> Result<(), String> {
    Err("--stdio needs a Unix socket; run without it".to_owned())
}

#[cfg(not(unix))]
async fn refused(_error: IpcError) -> Result<(), String> {
    Err("--stdio needs a Unix socket; run without it".to_owned())
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not when it is first
/// polled: called before the socket is bound, a stop that comes right after the start (the
/// socket is connectable, the engine is still opening) is a clean stop, not a kill by signal
/// that leaves the socket behind.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let terminate = received(signal(SignalKind::terminate()).ok());
        let interrupt = received(signal(SignalKind::interrupt()).ok());
        async move {
            tokio::select! {
                () = terminate => {},
                () = interrupt => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
