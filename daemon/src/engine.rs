//! [`Engine`]: the daemon's state and the handling of every request.
//!
//! `aniated` runs one engine for all its clients and keeps it warm; `ant --no-daemon` runs a
//! private `aniated --stdio` with an engine of its own for a single command, so both paths share
//! this code and produce the same output.
//!
//! **Architecture Invariant:** running an installed tool makes no network call before the tool
//! request itself: the tool's metadata, the token and every input check are local.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aniate_proto::{
    api::RunToolRequest,
    error::ErrorCode,
    event::{Delta, Meta, StreamEvent},
    ipc::{
        InstallResult, IpcError, IpcErrorCode, LoginParams, MarketplaceEntry, MarketplaceResult, PROTOCOL, Reply,
        Request, RunDone, RunToolParams, StatusResult, ToolUpdate, ToolsListResult, UninstallResult, UpdateResult,
        WhoamiResult,
    },
    tool::is_valid_slug,
};
use tokio::sync::watch;

use crate::{
    cache::{self, ResultCache},
    config::{Config, check_transport, server_origin},
    credentials::{self, StoredLogin},
    home::Home,
    replies::{Replies, ReplySender},
    server::{ServerClient, ToolsFetch},
    store::ToolStore,
};

/// The largest file a tool run may send, as the server's default limit.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// Replies of one request that may wait in its channel for the client to take them.
pub const REPLY_CAPACITY: usize = 64;

/// How often the daemon touches the server to keep its pooled connection open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(25);

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Use the result cache in `state.redb` (the daemon does; `--no-daemon` does not, since the
    /// daemon may hold the file).
    pub cache: bool,
    /// A server URL that wins over `ANIATE_SERVER` and the config (`ant --server`).
    pub server: Option<String>,
}

/// A request's own server and token, when its client sent them (`ant --server`,
/// `ANIATE_SERVER`, `ANIATE_TOKEN`); absent, the daemon's configured server and stored login.
#[derive(Clone, Default)]
pub struct RequestContext {
    pub server: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where one request goes, and the token it may send there.
struct Session {
    server: ServerClient,
    origin: String,
    /// Whether `server` is the daemon's configured one (whose state the daemon tracks).
    is_default: bool,
    /// The token for `origin`, or why there is none.
    token: Result<String, IpcError>,
}

impl Session {
    fn token(&self) -> Result<String, IpcError> {
        self.token.clone()
    }

    /// What cached results are keyed by besides the request: this server and this token.
    fn cache_scope(&self) -> Option<[u8; 32]> {
        self.token.as_ref().ok().map(|token| cache::scope(&self.origin, token))
    }
}

/// The daemon's state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    home: Home,
    config: RwLock<Config>,
    server: RwLock<ServerClient>,
    /// The stored login (token and origin), re-read when `credentials` changes.
    login: RwLock<Option<StoredLogin>>,
    /// `ANIATE_TOKEN` of the daemon's own environment (a service unit), for its configured
    /// server only. Clients send theirs with each request; `ant` does not pass its own on
    /// when it starts the daemon.
    env_token: Option<String>,
    store: ToolStore,
    cache: Option<ResultCache>,
    started: Instant,
    requests_served: AtomicU64,
    cache_hits: AtomicU64,
    server_reachable: AtomicBool,
    tools_etag: Mutex<Option<String>>,
    server_version: Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn internal(err: impl std::fmt::Display) -> IpcError {
    tracing::error!(cause = %err, "internal error");
    IpcError::new(IpcErrorCode::Internal, err.to_string())
}

/// A file under `ANIATE_HOME` could not be written or removed; the previous one is intact
/// (atomic writes).
fn storage(err: std::io::Error) -> IpcError {
    tracing::warn!(cause = %err, "could not store a file");
    IpcError::new(IpcErrorCode::Storage, err.to_string())
        .with_hint("free some disk space or make ANIATE_HOME writable, then try again; nothing stored was changed")
}

impl Engine {
    /// Loads config, credentials and installed tools, and builds the server client. Warnings
    /// (a corrupt config or tool file) are logged, not fatal.
    pub fn open(home: Home, options: EngineOptions) -> Result<Engine, String> {
        home.ensure().map_err(|err| err.to_string())?;
        let (config, warning) = Config::load(&home);
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let server_url = options.server.clone().unwrap_or_else(|| config.server_url());
        let server = ServerClient::new(&server_url, config.ca_cert_path().as_deref())?;
        let (store, warnings) = ToolStore::load(&home);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let cache = if options.cache {
            match ResultCache::open(&home.state_path()) {
                Ok(cache) => Some(cache),
                Err(err) => {
                    tracing::warn!(cause = %err, "result cache unavailable; running without it");
                    None
                }
            }
        } else {
            None
        };
        let login = credentials::load(&home, &config.server_url());
        let env_token = credentials::env_token();
        let (shutdown, _) = watch::channel(false);
        Ok(Engine(Arc::new(Inner {
            home,
            config: RwLock::new(config),
            server: RwLock::new(server),
            login: RwLock::new(login),
            env_token,
            store,
            cache,
            started: Instant::now(),
            requests_served: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            server_reachable: AtomicBool::new(false),
            tools_etag: Mutex::new(None),
            server_version: Mutex::new(None),
            shutdown,
        })))
    }

    pub fn home(&self) -> &Home {
        &self.0.home
    }

    pub fn server(&self) -> ServerClient {
        self.0.server.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn login(&self) -> Option<StoredLogin> {
        self.0.login.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_login(&self, login: Option<StoredLogin>) {
        *self.0.login.write().unwrap_or_else(std::sync::PoisonError::into_inner) = login;
    }

    /// Checks that a token may go to `url`: HTTPS, or plain HTTP to this machine, or plain HTTP
    /// elsewhere with `allow_insecure_http = true` (logged as a warning at every use). That
    /// setting is read from `config.toml` at each such use, not from the copy the file watcher
    /// refreshes, so a command right after `ant config set` sees it.
    fn check_transport(&self, url: &str) -> Result<(), IpcError> {
        if check_transport(url, false) == Ok(None) {
            return Ok(());
        }
        let (config, _) = Config::load(&self.0.home);
        match check_transport(url, config.allow_insecure_http()) {
            Ok(None) => Ok(()),
            Ok(Some(warning)) => {
                tracing::warn!("{warning}");
                Ok(())
            }
            Err(why) => Err(IpcError::new(IpcErrorCode::BadRequest, why).with_hint(
                "use the server's https:// URL; to accept the risk, `ant config set allow_insecure_http true`",
            )),
        }
    }

    /// The server a request goes to (its own, else the configured one) and the token it may
    /// send there: its own, else the stored login if that belongs to the same origin. A token
    /// never goes to another origin than the one it was stored for.
    fn session(&self, context: &RequestContext) -> Result<Session, IpcError> {
        let default = self.server();
        let requested = context.server.as_deref().map(str::trim).filter(|url| !url.is_empty());
        let server = match requested {
            Some(url) if url.trim_end_matches('/') != default.base() => default.with_base(url),
            _ => default.clone(),
        };
        let is_default = server.base() == default.base();
        let origin = server_origin(server.base())
            .map_err(|err| IpcError::new(IpcErrorCode::BadRequest, err).with_hint("check `ant config get server`"))?;
        self.check_transport(server.base())?;
        let token = if let Some(token) = context.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Ok(token.to_owned())
        } else if let Some(token) = self.0.env_token.clone().filter(|_| is_default) {
            Ok(token)
        } else {
            match self.login() {
                Some(login) if login.origin == origin => Ok(login.token),
                Some(login) => Err(IpcError::new(
                    IpcErrorCode::NotLoggedIn,
                    format!(
                        "not logged in to {origin}: the stored login is for {} and is never sent elsewhere",
                        login.origin
                    ),
                )
                .with_hint(format!(
                    "run `ant login` to log in to {origin} (it replaces the login for {}), or set ANIATE_TOKEN",
                    login.origin
                ))),
                None => Err(IpcError::new(IpcErrorCode::NotLoggedIn, "not logged in")
                    .with_hint("run `ant login` (or set ANIATE_TOKEN)")),
            }
        };
        Ok(Session { server, origin, is_default, token })
    }

    /// Empties the result cache (at login and logout); a failure is logged, not fatal.
    fn clear_cache(&self) {
        if let Some(cache) = &self.0.cache
            && let Err(err) = cache.clear()
        {
            tracing::warn!(cause = %err, "could not clear the result cache");
        }
    }

    /// Resolves when a client asked the daemon to stop.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.0.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Re-reads `config.toml` (rebuilding the server client if the server or CA changed) and
    /// the tools dir; called when those files change.
    pub fn reload(&self) {
        let (config, warning) = Config::load(&self.0.home);
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let changed = {
            let current = self.0.config.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            current.server_url() != config.server_url() || current.ca_cert_path() != config.ca_cert_path()
        };
        if changed {
            match ServerClient::new(&config.server_url(), config.ca_cert_path().as_deref()) {
                Ok(server) => {
                    tracing::info!(server = %server.base(), "server settings changed");
                    *self.0.server.write().unwrap_or_else(std::sync::PoisonError::into_inner) = server;
                    *self.0.tools_etag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                Err(err) => tracing::warn!("keeping the previous server settings: {err}"),
            }
        }
        *self.0.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        for warning in self.0.store.reload() {
            tracing::warn!("{warning}");
        }
        let server_url = self.0.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).server_url();
        self.set_login(credentials::load(&self.0.home, &server_url));
    }

    /// Makes the result cache durable; called when the daemon stops.
    pub fn flush(&self) {
        if let Some(cache) = &self.0.cache
            && let Err(err) = cache.flush()
        {
            tracing::warn!(cause = %err, "could not flush the result cache");
        }
    }

    /// Opens the pooled connection to the server now, so the first tool run finds it open.
    pub async fn warm_up(&self) {
        let ping = self.server().ping().await;
        let reachable = ping.is_ok();
        if let Ok(Some(version)) = ping {
            *self.0.server_version.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(version);
        }
        self.0.server_reachable.store(reachable, Ordering::Relaxed);
        tracing::debug!(reachable, "server connection warmed");
    }

    /// Keeps the connection warm and checks for tool updates, until the engine is dropped.
    pub fn spawn_background(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut last_ping = Instant::now().checked_sub(KEEPALIVE_INTERVAL).unwrap_or_else(Instant::now);
            let mut last_update_check: Option<Instant> = None;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine(inner);
                let update_every = Duration::from_secs(
                    engine.0.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).update_check_secs(),
                );
                let update_due =
                    !update_every.is_zero() && last_update_check.is_none_or(|at| at.elapsed() >= update_every);
                if update_due {
                    // A /tools request also keeps the connection warm.
                    if last_update_check.is_none() {
                        engine.warm_up().await;
                    }
                    last_update_check = Some(Instant::now());
                    last_ping = Instant::now();
                    engine.check_updates().await;
                } else if last_ping.elapsed() >= KEEPALIVE_INTERVAL {
                    last_ping = Instant::now();
                    engine.warm_up().await;
                }
                let tick =
                    if update_every.is_zero() { KEEPALIVE_INTERVAL } else { update_every.min(KEEPALIVE_INTERVAL) };
                if let Some(cache) = engine.0.cache.clone()
                    && let Ok(Err(err)) = tokio::task::spawn_blocking(move || cache.sync()).await
                {
                    tracing::warn!(cause = %err, "could not sync the result cache");
                }
                drop(engine);
                tokio::time::sleep(tick).await;
            }
        })
    }

    /// Asks the server (with `If-None-Match`) whether installed tools have newer versions.
    pub async fn check_updates(&self) {
        let etag = self.0.tools_etag.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match self.server().tools(etag.as_deref()).await {
            Ok(ToolsFetch::Modified { tools, etag }) => {
                self.0.server_reachable.store(true, Ordering::Relaxed);
                self.0.store.mark_updates(&tools);
                *self.0.tools_etag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = etag;
                tracing::debug!(n_tools = tools.len(), "checked for tool updates");
            }
            Ok(ToolsFetch::NotModified) => {
                self.0.server_reachable.store(true, Ordering::Relaxed);
                tracing::debug!("tools unchanged");
            }
            Err(err) => {
                self.0.server_reachable.store(false, Ordering::Relaxed);
                tracing::debug!(cause = %err, "update check failed");
            }
        }
    }

    /// Handles one request. The work runs in a task of its own; dropping the returned
    /// [`Replies`] early aborts it, which closes any server request it had open.
    pub fn handle(&self, request: Request) -> Replies {
        self.handle_in(request, RequestContext::default())
    }

    /// Handles one request with the server and token its client sent, as [`Engine::handle`].
    pub fn handle_in(&self, request: Request, context: RequestContext) -> Replies {
        let (tx, replies) = Replies::channel(REPLY_CAPACITY);
        let engine = self.clone();
        let task = tokio::spawn(async move { engine.respond(request, context, tx).await });
        let abort = task.abort_handle();
        replies.on_cancel(move || abort.abort())
    }

    /// Handles one request in the caller's task, sending its replies on `tx` (made with
    /// [`Replies::channel`] and [`REPLY_CAPACITY`]); dropping the future cancels the request.
    /// The daemon relays the replies from the same task, so a reply wakes no other task.
    pub async fn respond(&self, request: Request, context: RequestContext, tx: ReplySender) {
        self.0.requests_served.fetch_add(1, Ordering::Relaxed);
        let method = request.method();
        let outcome = match request {
            Request::RunTool(params) => self.run_tool(params, &context, &tx).await,
            Request::Chat(params) => self.chat(params, &context, &tx).await,
            other => match self.call(other, &context).await {
                Ok(value) => {
                    let _ = tx.send(Reply::Result(value)).await;
                    Ok(())
                }
                Err(err) => Err(err),
            },
        };
        if let Err(error) = outcome {
            tracing::debug!(method, code = ?error.code, "request failed");
            let _ = tx.send(Reply::Error(error)).await;
        }
    }

    async fn call(&self, request: Request, context: &RequestContext) -> Result<serde_json::Value, IpcError> {
        fn json(value: impl serde::Serialize) -> Result<serde_json::Value, IpcError> {
            serde_json::to_value(value).map_err(internal)
        }
        // Requests answered here, with no server.
        match request {
            Request::ToolsList => return json(ToolsListResult { tools: self.0.store.list() }),
            Request::Uninstall { slug } => {
                if !self.0.store.uninstall(&slug).map_err(storage)? {
                    return Err(IpcError::new(IpcErrorCode::NotInstalled, format!("tool `{slug}` is not installed"))
                        .with_hint("`ant list` shows the installed tools"));
                }
                return json(UninstallResult { slug });
            }
            Request::Logout => {
                self.logout(context).await?;
                return Ok(serde_json::Value::Null);
            }
            Request::Status => return json(self.status()),
            Request::Shutdown => {
                tracing::info!("shutdown requested by a client");
                let _ = self.0.shutdown.send(true);
                return Ok(serde_json::Value::Null);
            }
            Request::Cancel { .. } => {
                return Err(IpcError::new(
                    IpcErrorCode::BadRequest,
                    "cancel only applies to requests on a daemon connection",
                ));
            }
            Request::RunTool(_) | Request::Chat(_) => return Err(internal("runs and chats are streamed, not called")),
            _ => {}
        }
        let session = self.session(context)?;
        let server = &session.server;
        match request {
            Request::Marketplace => json(self.marketplace(&session).await?),
            Request::Install { slugs } => json(self.install(&session, slugs).await?),
            Request::Update => json(self.update(&session).await?),
            Request::Login(params) => {
                let token = match params {
                    LoginParams::Token { token } => token.trim().to_owned(),
                    LoginParams::Password { email, password } => server.login(&email, &password).await?,
                };
                json(self.adopt_token(&session, token).await?)
            }
            Request::Signup { email, password } => {
                let token = server.signup(&email, &password).await?;
                json(self.adopt_token(&session, token).await?)
            }
            Request::LogoutAll => {
                server.logout_all(&session.token()?).await?;
                credentials::delete(&self.0.home).map_err(storage)?;
                self.set_login(None);
                self.clear_cache();
                Ok(serde_json::Value::Null)
            }
            Request::Whoami => {
                let me = server.me(&session.token()?).await?;
                json(WhoamiResult { me, server: server.base().to_owned() })
            }
            Request::BrewList => json(server.brews(&session.token()?).await?),
            Request::BrewShow { id } => json(server.brew(&session.token()?, &id).await.map_err(not_found_brew)?),
            Request::BrewCreate(brew) => json(server.create_brew(&session.token()?, &brew).await?),
            Request::BrewEdit { id, patch } => {
                json(server.edit_brew(&session.token()?, &id, &patch).await.map_err(not_found_brew)?)
            }
            Request::BrewDelete { id } => {
                server.delete_brew(&session.token()?, &id).await.map_err(not_found_brew)?;
                Ok(serde_json::Value::Null)
            }
            Request::FilesPush { path, name } => {
                let token = session.token()?;
                let path = std::path::PathBuf::from(path);
                let name =
                    name.or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned())).ok_or_else(|| {
                        IpcError::new(IpcErrorCode::BadRequest, format!("{} has no file name", path.display()))
                    })?;
                let content = tokio::fs::read(&path).await.map_err(|err| {
                    IpcError::new(IpcErrorCode::BadRequest, format!("cannot read {}: {err}", path.display()))
                })?;
                json(server.upload_file(&token, &name, content).await?)
            }
            Request::FilesList => json(server.files(&session.token()?).await?),
            Request::FilesRm { id } => {
                server.delete_file(&session.token()?, id).await?;
                Ok(serde_json::Value::Null)
            }
            Request::Usage => json(server.usage(&session.token()?).await?),
            Request::ToolsList
            | Request::Uninstall { .. }
            | Request::Logout
            | Request::Status
            | Request::Shutdown
            | Request::Cancel { .. }
            | Request::RunTool(_)
            | Request::Chat(_) => Err(internal("a local request reached the server path")),
        }
    }

    /// Checks a token with the server, then stores it (0600) bound to the server's origin and
    /// uses it. Cached results of the previous login are dropped.
    async fn adopt_token(&self, session: &Session, token: String) -> Result<WhoamiResult, IpcError> {
        if token.is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, "the token is empty"));
        }
        let me = session.server.me(&token).await?;
        let login = StoredLogin { origin: session.origin.clone(), token };
        credentials::store(&self.0.home, &login).map_err(storage)?;
        self.set_login(Some(login));
        self.clear_cache();
        Ok(WhoamiResult { me, server: session.server.base().to_owned() })
    }

    /// Revokes the token on the server that issued it and forgets it here. The request's own
    /// token (`ANIATE_TOKEN`) is revoked on the request's server and nothing stored changes;
    /// else the stored login is revoked on its own origin, then removed here even when the
    /// server could not revoke it, which is then the error (exit 5) with how to retry.
    async fn logout(&self, context: &RequestContext) -> Result<(), IpcError> {
        if context.token.as_deref().is_some_and(|token| !token.trim().is_empty()) {
            let session = self.session(context)?;
            let revoked = session.server.logout(&session.token()?).await;
            return revoked.map_err(|err| {
                not_revoked(&session.origin, err, "run the same command again when the server is reachable")
            });
        }
        let Some(login) = self.login() else {
            credentials::delete(&self.0.home).map_err(storage)?;
            return Ok(());
        };
        let revoked = match self.check_transport(&login.origin) {
            Ok(()) => self.server().with_base(&login.origin).logout(&login.token).await,
            Err(err) => Err(err),
        };
        credentials::delete(&self.0.home).map_err(storage)?;
        self.set_login(None);
        self.clear_cache();
        revoked.map_err(|err| {
            not_revoked(
                &login.origin,
                err,
                "the token stays valid until it expires; when the server is reachable, `ant login` then \
                 `ant logout --all` revokes it",
            )
        })
    }

    pub fn status(&self) -> StatusResult {
        StatusResult {
            version: aniate_proto::VERSION.to_owned(),
            protocol: PROTOCOL,
            pid: std::process::id(),
            uptime_secs: self.0.started.elapsed().as_secs(),
            server: self.server().base().to_owned(),
            server_version: self.0.server_version.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            server_reachable: self.0.server_reachable.load(Ordering::Relaxed),
            logged_in: self.session(&RequestContext::default()).is_ok_and(|session| session.token.is_ok()),
            installed_tools: self.0.store.len(),
            requests_served: self.0.requests_served.load(Ordering::Relaxed),
            cache_hits: self.0.cache_hits.load(Ordering::Relaxed),
            updates_available: self
                .0
                .store
                .list()
                .into_iter()
                .filter(|tool| tool.update_available.is_some())
                .map(|tool| tool.meta.slug)
                .collect(),
        }
    }

    async fn server_tools(&self, session: &Session) -> Result<Vec<aniate_proto::tool::ToolMeta>, IpcError> {
        let result = session.server.tools(None).await;
        if !session.is_default {
            return match result? {
                ToolsFetch::Modified { tools, .. } => Ok(tools),
                ToolsFetch::NotModified => Err(internal("the server answered 304 to a request without If-None-Match")),
            };
        }
        self.0.server_reachable.store(result.is_ok(), Ordering::Relaxed);
        match result? {
            ToolsFetch::Modified { tools, etag } => {
                self.0.store.mark_updates(&tools);
                *self.0.tools_etag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = etag;
                Ok(tools)
            }
            ToolsFetch::NotModified => Err(internal("the server answered 304 to a request without If-None-Match")),
        }
    }

    async fn marketplace(&self, session: &Session) -> Result<MarketplaceResult, IpcError> {
        let tools = self.server_tools(session).await?;
        Ok(MarketplaceResult {
            tools: tools
                .into_iter()
                .map(|meta| {
                    let installed_version = self.0.store.get(&meta.slug).map(|tool| tool.meta.version);
                    MarketplaceEntry { meta, installed_version }
                })
                .collect(),
        })
    }

    async fn install(&self, session: &Session, slugs: Vec<String>) -> Result<InstallResult, IpcError> {
        if slugs.is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, "name at least one tool to install"));
        }
        let tools = self.server_tools(session).await?;
        let mut found = Vec::new();
        let mut unknown = Vec::new();
        for slug in &slugs {
            match tools.iter().find(|tool| &tool.slug == slug).filter(|_| is_valid_slug(slug)) {
                Some(tool) => found.push(tool.clone()),
                None => unknown.push(slug.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(IpcError::new(
                IpcErrorCode::UnknownTool,
                format!("no tool named {} on {}", quote_list(&unknown), session.server.base()),
            )
            .with_hint("`ant marketplace` lists the tools you can install"));
        }
        for tool in &found {
            self.0.store.install(tool).map_err(storage)?;
        }
        Ok(InstallResult { installed: found })
    }

    async fn update(&self, session: &Session) -> Result<UpdateResult, IpcError> {
        let tools = self.server_tools(session).await?;
        let mut result = UpdateResult { updated: Vec::new(), removed: Vec::new(), unchanged: 0 };
        for installed in self.0.store.list() {
            match tools.iter().find(|tool| tool.slug == installed.meta.slug) {
                Some(latest) if latest != &installed.meta => {
                    self.0.store.install(latest).map_err(storage)?;
                    result.updated.push(ToolUpdate {
                        slug: latest.slug.clone(),
                        from_version: installed.meta.version,
                        to_version: latest.version,
                    });
                }
                Some(_) => result.unchanged += 1,
                None => {
                    self.0.store.uninstall(&installed.meta.slug).map_err(storage)?;
                    result.removed.push(installed.meta.slug.clone());
                }
            }
        }
        Ok(result)
    }

    /// A chat: one streamed server request, relayed as it comes (never cached).
    async fn chat(
        &self,
        params: aniate_proto::ipc::ChatParams,
        context: &RequestContext,
        tx: &ReplySender,
    ) -> Result<(), IpcError> {
        let session = self.session(context)?;
        let token = session.token()?;
        if params.messages.is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, "say something first"));
        }
        let request = aniate_proto::api::ChatRequest { assistant: params.assistant.clone(), messages: params.messages };
        let mut stream =
            session.server.chat(&token, &request).await.map_err(|err| match (err.code, &params.assistant) {
                (IpcErrorCode::UnknownTool, Some(brew)) => {
                    IpcError::new(IpcErrorCode::BadRequest, format!("no brew `{brew}`"))
                        .with_hint("`ant brew list` shows the brews you can chat with")
                }
                _ => err,
            })?;
        while let Some(event) = stream.next().await {
            let reply = match event? {
                StreamEvent::Meta(meta) => Reply::Meta(meta),
                StreamEvent::Delta(delta) => Reply::Delta(delta),
                StreamEvent::Done(done) => {
                    let _ = tx.send(Reply::Done(RunDone { done, cached: false })).await;
                    return Ok(());
                }
                StreamEvent::Error(detail) => return Err(stream_error(detail)),
            };
            if tx.send(reply).await.is_err() {
                return Ok(());
            }
        }
        Err(IpcError::new(IpcErrorCode::ServerUnavailable, "the server ended the answer before it was complete"))
    }

    /// Runs an installed tool: local checks, the local cache, then one streamed server request.
    async fn run_tool(
        &self,
        params: RunToolParams,
        context: &RequestContext,
        tx: &ReplySender,
    ) -> Result<(), IpcError> {
        let slug = params.tool.clone();
        let tool = self.0.store.get(&slug).ok_or_else(|| {
            IpcError::new(IpcErrorCode::NotInstalled, format!("tool `{slug}` is not installed"))
                .with_hint(format!("run `ant install {slug}` (`ant marketplace` lists the tools)"))
        })?;
        let meta = tool.meta;
        let session = self.session(context)?;
        let token = session.token()?;
        if params.content.len() > MAX_CONTENT_BYTES {
            return Err(IpcError::new(
                IpcErrorCode::BadRequest,
                format!("the input is {} bytes; the limit is {MAX_CONTENT_BYTES} bytes (1 MiB)", params.content.len()),
            ));
        }
        if meta.requires_file && params.content.trim().is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, format!("`{slug}` needs a file"))
                .with_hint(format!("ant {slug} FILE (or - for stdin)")));
        }
        if !meta.requires_file
            && params.content.trim().is_empty()
            && params.instructions.as_deref().is_none_or(|i| i.trim().is_empty())
        {
            return Err(IpcError::new(IpcErrorCode::BadRequest, format!("`{slug}` needs a file or a question"))
                .with_hint(format!("ant {slug} FILE, or ant {slug} -i \"your question\"")));
        }

        let ttl_ms = self.0.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).cache_ttl_secs() * 1000;
        let scope = session.cache_scope().ok_or_else(|| internal("a run without a token"))?;
        let cache = self.0.cache.clone().filter(|_| ttl_ms > 0);
        let key = cache::key(&scope, &params, meta.version);
        if let (Some(cache), false) = (&cache, params.fresh) {
            let lookup = cache.clone();
            let hit = tokio::task::spawn_blocking(move || lookup.get(&key, ttl_ms, now_ms()))
                .await
                .map_err(internal)?
                .unwrap_or_else(|err| {
                    tracing::warn!(cause = %err, "cache lookup failed");
                    None
                });
            if let Some(entry) = hit {
                self.0.cache_hits.fetch_add(1, Ordering::Relaxed);
                let meta = Meta {
                    request_id: "cached".to_owned(),
                    tool: entry.tool,
                    version: entry.version,
                    model: entry.model,
                    provider: None,
                };
                for reply in [
                    Reply::Meta(meta),
                    Reply::Delta(Delta { text: entry.text }),
                    Reply::Done(RunDone { done: entry.done, cached: true }),
                ] {
                    if tx.send(reply).await.is_err() {
                        break;
                    }
                }
                return Ok(());
            }
        }

        let request = RunToolRequest {
            content: params.content.clone(),
            instructions: params.instructions.clone(),
            filename: params.filename.clone(),
            language: params.language.clone(),
            file_id: None,
        };
        let result = session.server.run_tool(&token, &slug, &request).await;
        if session.is_default {
            self.0
                .server_reachable
                .store(!matches!(&result, Err(err) if err.code == IpcErrorCode::ServerUnavailable), Ordering::Relaxed);
        }
        let mut stream = result.map_err(|err| match err.code {
            IpcErrorCode::UnknownTool => IpcError::new(
                IpcErrorCode::UnknownTool,
                format!("the server no longer offers `{slug}` (removed or deactivated)"),
            )
            .with_hint("run `ant update` to refresh your tools"),
            _ => err,
        })?;
        let mut text = String::new();
        let mut run_meta = None;
        while let Some(event) = stream.next().await {
            let reply = match event? {
                StreamEvent::Meta(meta) => {
                    run_meta = Some(meta.clone());
                    Reply::Meta(meta)
                }
                StreamEvent::Delta(delta) => {
                    text.push_str(&delta.text);
                    Reply::Delta(delta)
                }
                StreamEvent::Done(done) => {
                    let mut staged = None;
                    // A rejected answer (cut off, not a file) is not kept: asking again may do better.
                    if let (Some(cache), Some(run_meta), None) = (cache, run_meta, done.result_rejected) {
                        let entry = cache::Entry {
                            stored_at_ms: now_ms(),
                            tool: run_meta.tool,
                            version: run_meta.version,
                            model: run_meta.model,
                            text,
                            done: done.clone(),
                        };
                        // Staged before `done` goes out, so the very next identical request hits.
                        cache.stage(key, entry);
                        staged = Some(cache);
                    }
                    let _ = tx.send(Reply::Done(RunDone { done, cached: false })).await;
                    // Written (and synced when due) after `done` has gone out: no answer waits
                    // for the cache file.
                    if let Some(cache) = staged {
                        tokio::task::spawn_blocking(move || {
                            let synced = match cache.write_staged(&key) {
                                Ok(true) => cache.sync(),
                                Ok(false) => Ok(()),
                                Err(err) => Err(err),
                            };
                            if let Err(err) = synced {
                                tracing::warn!(cause = %err, "could not cache the result");
                            }
                        });
                    }
                    return Ok(());
                }
                StreamEvent::Error(detail) => return Err(stream_error(detail)),
            };
            if tx.send(reply).await.is_err() {
                return Ok(());
            }
        }
        Err(IpcError::new(IpcErrorCode::ServerUnavailable, "the server ended the answer before it was complete"))
    }
}

/// An `error` event of a server stream, as the client's error.
fn stream_error(detail: aniate_proto::error::ErrorDetail) -> IpcError {
    let code = match detail.code {
        ErrorCode::ProviderError | ErrorCode::ProviderTimeout => IpcErrorCode::Provider,
        ErrorCode::RateLimited => IpcErrorCode::RateLimited,
        ErrorCode::Unauthorized => IpcErrorCode::NotLoggedIn,
        ErrorCode::PromptProtected => IpcErrorCode::PromptProtected,
        _ => IpcErrorCode::ServerUnavailable,
    };
    IpcError::new(code, detail.message)
}

/// The server could not revoke a token at logout: said plainly, as a server failure (exit 5).
fn not_revoked(origin: &str, error: IpcError, retry: &str) -> IpcError {
    IpcError::new(
        IpcErrorCode::ServerUnavailable,
        format!("logged out on this machine, but the server at {origin} did not revoke the token: {}", error.message),
    )
    .with_hint(retry)
}

/// A 404 about a brew, in the words of the CLI.
fn not_found_brew(error: IpcError) -> IpcError {
    if error.code == IpcErrorCode::UnknownTool {
        return IpcError::new(IpcErrorCode::BadRequest, error.message).with_hint("`ant brew list` shows your brews");
    }
    error
}

fn quote_list(items: &[&str]) -> String {
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}
