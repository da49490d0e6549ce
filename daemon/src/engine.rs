//! [`Engine`]: the daemon's state and the handling of every request.
//!
//! `aniated` runs one engine for all its clients and keeps it warm; `ant --no-daemon` runs one
//! in-process for a single command, so both paths share this code and produce the same output.
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
    config::Config,
    credentials,
    home::Home,
    replies::{Replies, ReplySender},
    server::{ServerClient, ToolsFetch},
    store::ToolStore,
};

/// The largest file a tool run may send, as the server's default limit.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

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

/// The daemon's state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    home: Home,
    config: RwLock<Config>,
    server: RwLock<ServerClient>,
    token: RwLock<Option<String>>,
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
        let token = credentials::load(&home);
        let (shutdown, _) = watch::channel(false);
        Ok(Engine(Arc::new(Inner {
            home,
            config: RwLock::new(config),
            server: RwLock::new(server),
            token: RwLock::new(token),
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

    fn token(&self) -> Option<String> {
        self.0.token.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_token(&self, token: Option<String>) {
        *self.0.token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    fn require_token(&self) -> Result<String, IpcError> {
        self.token().ok_or_else(|| {
            IpcError::new(IpcErrorCode::NotLoggedIn, "not logged in").with_hint("run `ant login` (or set ANIATE_TOKEN)")
        })
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
        if std::env::var_os("ANIATE_TOKEN").is_none() {
            self.set_token(credentials::load(&self.0.home));
        }
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
        self.0.requests_served.fetch_add(1, Ordering::Relaxed);
        let (tx, replies) = Replies::channel(64);
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let method = request.method();
            let outcome = match request {
                Request::RunTool(params) => engine.run_tool(params, &tx).await,
                Request::Chat(params) => engine.chat(params, &tx).await,
                other => match engine.call(other).await {
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
        });
        let abort = task.abort_handle();
        replies.on_cancel(move || abort.abort())
    }

    async fn call(&self, request: Request) -> Result<serde_json::Value, IpcError> {
        fn json(value: impl serde::Serialize) -> Result<serde_json::Value, IpcError> {
            serde_json::to_value(value).map_err(internal)
        }
        match request {
            Request::ToolsList => json(ToolsListResult { tools: self.0.store.list() }),
            Request::Marketplace => json(self.marketplace().await?),
            Request::Install { slugs } => json(self.install(slugs).await?),
            Request::Uninstall { slug } => {
                if !self.0.store.uninstall(&slug).map_err(storage)? {
                    return Err(IpcError::new(IpcErrorCode::NotInstalled, format!("tool `{slug}` is not installed"))
                        .with_hint("`ant list` shows the installed tools"));
                }
                json(UninstallResult { slug })
            }
            Request::Update => json(self.update().await?),
            Request::Login(params) => {
                let server = self.server();
                let token = match params {
                    LoginParams::Token { token } => token.trim().to_owned(),
                    LoginParams::Password { email, password } => server.login(&email, &password).await?,
                };
                json(self.adopt_token(token).await?)
            }
            Request::Signup { email, password } => {
                let token = self.server().signup(&email, &password).await?;
                json(self.adopt_token(token).await?)
            }
            Request::Logout => {
                if let Some(token) = self.token()
                    && let Err(err) = self.server().logout(&token).await
                {
                    tracing::warn!(cause = %err, "could not revoke the token on the server");
                }
                credentials::delete(&self.0.home).map_err(storage)?;
                self.set_token(None);
                Ok(serde_json::Value::Null)
            }
            Request::LogoutAll => {
                let token = self.require_token()?;
                self.server().logout_all(&token).await?;
                credentials::delete(&self.0.home).map_err(storage)?;
                self.set_token(None);
                Ok(serde_json::Value::Null)
            }
            Request::Whoami => {
                let token = self.require_token()?;
                let server = self.server();
                let me = server.me(&token).await?;
                json(WhoamiResult { me, server: server.base().to_owned() })
            }
            Request::Status => json(self.status()),
            Request::Shutdown => {
                tracing::info!("shutdown requested by a client");
                let _ = self.0.shutdown.send(true);
                Ok(serde_json::Value::Null)
            }
            Request::Cancel { .. } => {
                Err(IpcError::new(IpcErrorCode::BadRequest, "cancel only applies to requests on a daemon connection"))
            }
            Request::BrewList => json(self.server().brews(&self.require_token()?).await?),
            Request::BrewShow { id } => {
                json(self.server().brew(&self.require_token()?, &id).await.map_err(not_found_brew)?)
            }
            Request::BrewCreate(brew) => json(self.server().create_brew(&self.require_token()?, &brew).await?),
            Request::BrewEdit { id, patch } => {
                json(self.server().edit_brew(&self.require_token()?, &id, &patch).await.map_err(not_found_brew)?)
            }
            Request::BrewDelete { id } => {
                self.server().delete_brew(&self.require_token()?, &id).await.map_err(not_found_brew)?;
                Ok(serde_json::Value::Null)
            }
            Request::FilesPush { path, name } => {
                let token = self.require_token()?;
                let path = std::path::PathBuf::from(path);
                let name =
                    name.or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned())).ok_or_else(|| {
                        IpcError::new(IpcErrorCode::BadRequest, format!("{} has no file name", path.display()))
                    })?;
                let content = tokio::fs::read(&path).await.map_err(|err| {
                    IpcError::new(IpcErrorCode::BadRequest, format!("cannot read {}: {err}", path.display()))
                })?;
                json(self.server().upload_file(&token, &name, content).await?)
            }
            Request::FilesList => json(self.server().files(&self.require_token()?).await?),
            Request::FilesRm { id } => {
                self.server().delete_file(&self.require_token()?, id).await?;
                Ok(serde_json::Value::Null)
            }
            Request::Usage => json(self.server().usage(&self.require_token()?).await?),
            Request::RunTool(_) | Request::Chat(_) => Err(internal("runs and chats are streamed, not called")),
        }
    }

    /// Checks a token with the server, then stores it (0600) and uses it.
    async fn adopt_token(&self, token: String) -> Result<WhoamiResult, IpcError> {
        if token.is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, "the token is empty"));
        }
        let server = self.server();
        let me = server.me(&token).await?;
        credentials::store(&self.0.home, &token).map_err(storage)?;
        self.set_token(Some(token));
        Ok(WhoamiResult { me, server: server.base().to_owned() })
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
            logged_in: self.token().is_some(),
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

    async fn server_tools(&self) -> Result<Vec<aniate_proto::tool::ToolMeta>, IpcError> {
        let result = self.server().tools(None).await;
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

    async fn marketplace(&self) -> Result<MarketplaceResult, IpcError> {
        let tools = self.server_tools().await?;
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

    async fn install(&self, slugs: Vec<String>) -> Result<InstallResult, IpcError> {
        if slugs.is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, "name at least one tool to install"));
        }
        let tools = self.server_tools().await?;
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
                format!("no tool named {} on {}", quote_list(&unknown), self.server().base()),
            )
            .with_hint("`ant marketplace` lists the tools you can install"));
        }
        for tool in &found {
            self.0.store.install(tool).map_err(storage)?;
        }
        Ok(InstallResult { installed: found })
    }

    async fn update(&self) -> Result<UpdateResult, IpcError> {
        let tools = self.server_tools().await?;
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
    async fn chat(&self, params: aniate_proto::ipc::ChatParams, tx: &ReplySender) -> Result<(), IpcError> {
        let token = self.require_token()?;
        if params.messages.is_empty() {
            return Err(IpcError::new(IpcErrorCode::BadRequest, "say something first"));
        }
        let request = aniate_proto::api::ChatRequest { assistant: params.assistant.clone(), messages: params.messages };
        let mut stream =
            self.server().chat(&token, &request).await.map_err(|err| match (err.code, &params.assistant) {
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
    async fn run_tool(&self, params: RunToolParams, tx: &ReplySender) -> Result<(), IpcError> {
        let slug = params.tool.clone();
        let tool = self.0.store.get(&slug).ok_or_else(|| {
            IpcError::new(IpcErrorCode::NotInstalled, format!("tool `{slug}` is not installed"))
                .with_hint(format!("run `ant install {slug}` (`ant marketplace` lists the tools)"))
        })?;
        let meta = tool.meta;
        let token = self.require_token()?;
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
        let cache = self.0.cache.clone().filter(|_| ttl_ms > 0);
        let key = cache::key(&params, meta.version);
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
        let server = self.server();
        let result = server.run_tool(&token, &slug, &request).await;
        self.0
            .server_reachable
            .store(!matches!(&result, Err(err) if err.code == IpcErrorCode::ServerUnavailable), Ordering::Relaxed);
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
                    let mut sync_due = None;
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
                        // Stored before `done` goes out, so the very next identical request hits.
                        let stored = cache.clone();
                        match tokio::task::spawn_blocking(move || stored.put(&key, &entry)).await {
                            Ok(Ok(true)) => sync_due = Some(cache),
                            Ok(Err(err)) => tracing::warn!(cause = %err, "could not cache the result"),
                            _ => {}
                        }
                    }
                    let _ = tx.send(Reply::Done(RunDone { done, cached: false })).await;
                    // Synced after `done` has gone out, so no answer waits for the disk.
                    if let Some(cache) = sync_due {
                        tokio::task::spawn_blocking(move || {
                            if let Err(err) = cache.sync() {
                                tracing::warn!(cause = %err, "could not sync the result cache");
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
