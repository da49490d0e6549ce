//! `ant-server serve`: open the database, build the app, listen (HTTP or HTTPS), and shut
//! down gracefully.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::{
    cli::ServeArgs,
    db::{Db, redact_url},
    http::{AppInner, AppState, Limits},
    metrics::Metrics,
    upstream::{Provider, ProviderConfig},
};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server from its flags and runs it until `shutdown` resolves.
pub async fn serve(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| format!("cannot load TLS certificate {} and key {}", cert.display(), key.display()))?,
        ),
        _ => None,
    };
    let url = args.db.resolve_url()?;
    // The data dir is used (and so created) only for what was not given a place of its own.
    let data_dir = match (&args.db.database_url, &args.files_dir) {
        (Some(_), Some(_)) => None,
        _ => Some(args.db.resolve_data_dir()?),
    };
    let files_dir = match &args.files_dir {
        Some(dir) => dir.clone(),
        None => args.db.resolve_data_dir()?.join("files"),
    };
    crate::private_files::create_private_dir(&files_dir)
        .with_context(|| format!("cannot create the files dir {}", files_dir.display()))?;
    // An older version, or a copy made by hand, may have left them readable by others.
    let mut private: Vec<(std::path::PathBuf, bool)> = data_dir.into_iter().map(|dir| (dir, false)).collect();
    private.push((files_dir.clone(), true));
    private.extend(crate::private_files::sqlite_files(&url).into_iter().map(|file| (file, false)));
    for (path, recursive) in &private {
        match crate::private_files::make_private(path, *recursive) {
            Ok(0) => {}
            Ok(n_changed) => tracing::warn!(
                n_changed,
                path = %path.display(),
                "took group and other permissions off {n_changed} of the server's files and dirs: others could read them"
            ),
            Err(err) => {
                tracing::warn!(cause = %err, path = %path.display(), "could not make the server's files private to its user")
            }
        }
    }
    let db = Db::open(&url).await.with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
    let provider = Provider::new(ProviderConfig {
        base_url: args.upstream_url.clone(),
        api_key: args.upstream_api_key.clone(),
        connect_timeout: Duration::from_millis(args.upstream_connect_timeout_ms),
        first_token_timeout: Duration::from_millis(args.first_token_timeout_ms),
        idle_timeout: Duration::from_millis(args.stream_idle_timeout_ms),
    })
    .context("cannot build the provider client")?;
    let limiter = crate::limits::Limiter::new(args.redis_url.clone(), &args.redis_prefix, args.rate_limit_per_min);
    limiter.connect().await;
    let metrics = Metrics::default();
    metrics.redis_up.set(i64::from(limiter.redis_up()));
    let state = AppState(Arc::new(AppInner {
        db: db.clone(),
        provider,
        metrics,
        limits: Limits {
            max_content_bytes: args.max_content_bytes,
            allow_signup: args.allow_signup,
            max_file_bytes: args.max_file_bytes,
            token_ttl_ms: i64::from(args.token_ttl_days) * 24 * 60 * 60 * 1000,
        },
        limiter,
        files: crate::http::files::FileStore { dir: files_dir },
        guards: crate::guard::GuardCache::default(),
        guard_words: usize::from(args.guard_words),
        throttle: crate::throttle::AuthThrottle::new(args.signups_per_hour),
        metrics_token: args.metrics_token.clone().filter(|token| !token.is_empty()),
    }));
    let app = crate::http::router(state);
    let listener = TcpListener::bind(&args.bind).await.with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(
        database = ?db.backend(),
        upstream = %args.upstream_url,
        tls = tls.is_some(),
        "ant-server {} starting",
        aniate_proto::VERSION
    );
    run(listener, app, tls, shutdown).await?;
    db.close().await;
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains for up to
/// [`DRAIN_TIMEOUT`]. Prints `ant-server listening on URL` to stdout once accepting, for
/// scripts and tests that start the server on port 0.
pub async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    announce(&format!("ant-server listening on {scheme}://{addr}"));
    match tls {
        None => {
            use axum::serve::ListenerExt;
            // Answers stream as many small writes: without TCP_NODELAY, Nagle's algorithm holds
            // each write until the previous one is acknowledged, and a delayed ACK stalls it 40 ms.
            let listener = listener.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(cause = %err, "could not set TCP_NODELAY");
                }
            });
            let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            });
            let mut server = std::pin::pin!(server.into_future());
            tokio::select! {
                result = &mut server => result?,
                () = shutdown => {
                    tracing::info!("shutting down; draining in-flight requests");
                    let _ = stop_tx.send(true);
                    if tokio::time::timeout(DRAIN_TIMEOUT, server).await.is_err() {
                        tracing::warn!("drain timed out; closing the remaining connections");
                    }
                }
            }
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let shutdown_handle = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                tracing::info!("shutting down; draining in-flight requests");
                shutdown_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
            });
            let std_listener = listener.into_std()?;
            axum_server::from_tcp_rustls(std_listener, config)
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn announce(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the server; the log says the same.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    tracing::info!("{line}");
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called,
/// not when it is first polled, so a stop that comes while the server is still starting (say,
/// migrating) is a clean stop rather than a kill by signal. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
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
