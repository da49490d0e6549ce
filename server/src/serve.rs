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
    providers::{Catalogue, ProviderRouter, Timeouts},
};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server from its flags and runs it until `shutdown` resolves.
pub async fn serve(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    // The catalogue is checked before anything is created: a typo stops the server at once.
    let catalogue = load_catalogue(&args)?;
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
    let providers = ProviderRouter::new(
        catalogue,
        Timeouts {
            connect: Duration::from_millis(args.upstream_connect_timeout_ms),
            first_token: Duration::from_millis(args.first_token_timeout_ms),
            idle: Duration::from_millis(args.stream_idle_timeout_ms),
        },
    )
    .context("cannot build the provider clients")?;
    let limiter = crate::limits::Limiter::new(args.redis_url.clone(), &args.redis_prefix, args.rate_limit_per_min);
    limiter.connect().await;
    let metrics = Metrics::default();
    metrics.redis_up.set(i64::from(limiter.redis_up()));
    let state = AppState(Arc::new(AppInner {
        db: db.clone(),
        providers,
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
        https: tls.is_some(),
    }));
    let app_providers = state.providers.provider_names();
    let app = crate::http::router(state);
    let listener = TcpListener::bind(&args.bind).await.with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(
        database = ?db.backend(),
        providers = ?app_providers,
        tls = tls.is_some(),
        "ant-server {} starting",
        aniate_proto::VERSION
    );
    if let Some((before, after)) = raise_open_files_limit() {
        tracing::info!(before, after, "raised the soft limit on open files to the hard limit");
    }
    let limits = ConnectionLimits {
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        max_connections: args.max_connections as usize,
    };
    // Tokens and tools are served from memory while this keeps them in step with changes
    // made by other replicas and by `ant-server admin` (db::cache).
    let (stop_watch, watch_stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn({
        let db = db.clone();
        async move {
            db.watch_caches(async {
                let _ = watch_stopped.await;
            })
            .await;
        }
    });
    let served = run(listener, app, tls, limits, shutdown).await;
    let _ = stop_watch.send(());
    let _ = watcher.await;
    db.close().await;
    served
}

/// The provider catalogue: the `ANIATE_PROVIDERS` file, checked, or else the one provider
/// `default` from `ANIATE_UPSTREAM_URL` and `ANIATE_UPSTREAM_API_KEY`.
fn load_catalogue(args: &ServeArgs) -> anyhow::Result<Catalogue> {
    let Some(path) = &args.providers else {
        return Ok(Catalogue::single(&args.upstream_url, args.upstream_api_key.clone()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the provider catalogue {} (ANIATE_PROVIDERS)", path.display()))?;
    Catalogue::parse(&text, |name| std::env::var(name).ok())
        .map_err(|err| anyhow::anyhow!("the provider catalogue {} is invalid: {err}", path.display()))
}

/// What one client may hold of the server: how long it may take to send a request's head
/// (which is also how long a kept-alive HTTP/1.1 connection may sit idle, since waiting for the
/// next request is waiting for its head), and how many connections may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains for up to
/// [`DRAIN_TIMEOUT`]. Prints `ant-server listening on URL` to stdout once accepting, for
/// scripts and tests that start the server on port 0.
pub async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    announce(&format!("ant-server listening on {scheme}://{addr}"));
    match tls {
        None => serve_plain(listener, app, limits, shutdown).await?,
        Some(config) => {
            let handle = axum_server::Handle::new();
            let shutdown_handle = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                tracing::info!("shutting down; draining in-flight requests");
                shutdown_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
            });
            let std_listener = listener.into_std()?;
            let mut server = axum_server::from_tcp_rustls(std_listener, config).handle(handle);
            server
                .http_builder()
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            server.serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The plain-HTTP accept loop: at most `limits.max_connections` connections are open (further
/// clients wait in the listen backlog, as with nginx's `worker_connections`), each with the
/// header timeout, TCP_NODELAY, and its peer's address for the handlers.
async fn serve_plain(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto::Builder,
        service::TowerToHyperService,
    };
    use tower::ServiceExt;

    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let builder = std::sync::Arc::new(builder);
    // Each connection task holds a receiver; a send asks them to finish gracefully, and the
    // sender's `closed()` resolves when the last one is gone.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = std::sync::Arc::clone(&permits).acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait a
                    // moment rather than spin.
                    tracing::warn!(cause = %err, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers stream as many small writes: without TCP_NODELAY, Nagle's algorithm holds
        // each write until the previous one is acknowledged, and a delayed ACK stalls it 40 ms.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(cause = %err, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let service =
            TowerToHyperService::new(tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            }));
        let builder = std::sync::Arc::clone(&builder);
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(builder.serve_connection_with_upgrades(TokioIo::new(tcp), service));
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::trace!(cause = %err, "connection ended with an error");
                    }
                    return;
                }
                _ = stop_rx.changed() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(err) = conn.await {
                tracing::trace!(cause = %err, "connection ended with an error while draining");
            }
        });
    }
    tracing::info!("shutting down; draining in-flight requests");
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, stop_tx.closed()).await.is_err() {
        tracing::warn!("drain timed out; closing the remaining connections");
    }
    Ok(())
}

/// Raises this process's soft limit on open files to its hard limit, so that the connection cap,
/// not the descriptor limit (often a soft 1024), is what bounds the open connections. Returns
/// the limit before and after, or `None` when there was nothing to raise or it failed.
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write the one struct we pass, which lives
        // on this stack frame for both calls.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
                return None;
            }
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return None;
            }
            // `rlim_t` is u64 on Linux and macOS, but not on every Unix.
            #[allow(clippy::unnecessary_cast)]
            Some((before as u64, limit.rlim_max as u64))
        }
    }
    #[cfg(not(unix))]
    None
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
