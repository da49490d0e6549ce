//! The HTTP API: routes, shared state, and the middleware every request goes through
//! (request id, access log, metrics).
//!
//! Handlers live one area per module: [`tools`] (public registry), [`run`] (streamed tool
//! runs), [`openai`] (the OpenAI-compatible door, `/v1/*`), [`account`] (signup, login, `/me`),
//! [`admin`], [`ops`] (`/healthz`, `/metrics`).

pub mod account;
pub mod admin;
pub mod assistants;
pub mod chat;
pub mod error;
pub mod extract;
pub mod files;
pub mod openai;
pub mod openapi;
pub mod ops;
pub mod run;
pub mod tools;
pub mod usage;

use std::{ops::Deref, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, delete, get, post},
};
use http::{HeaderValue, StatusCode};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use self::error::ApiError;
use crate::{db::Db, metrics::Metrics, providers::ProviderRouter};

/// Limits on what clients may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `content` of a tool run, in bytes.
    pub max_content_bytes: usize,
    /// Whether anyone may sign up, or only admins create users.
    pub allow_signup: bool,
    /// Largest stored file, in bytes.
    pub max_file_bytes: usize,
    /// How long an API token lives unused, in milliseconds (`ANIATE_TOKEN_TTL_DAYS`).
    pub token_ttl_ms: i64,
}

#[derive(Debug)]
pub struct AppInner {
    pub db: Db,
    /// The providers of the catalogue and their health: who answers a run.
    pub providers: ProviderRouter,
    pub metrics: Metrics,
    pub limits: Limits,
    pub limiter: crate::limits::Limiter,
    pub files: files::FileStore,
    /// Prompt-guard indexes, built once per prompt version.
    pub guards: crate::guard::GuardCache,
    /// How many consecutive prompt words in an answer are a leak.
    pub guard_words: usize,
    /// Failed logins and sign-ups, per account and client address.
    pub throttle: crate::throttle::AuthThrottle,
    /// The bearer token that lets a non-loopback client read `/metrics` (`ANIATE_METRICS_TOKEN`).
    pub metrics_token: Option<String>,
    /// Whether this server serves HTTPS itself (the console's cookies are then `Secure`).
    pub https: bool,
}

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The client's address, when the server was served with its peers' addresses (it always is;
/// a router driven without a socket has none).
pub fn client_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip().to_canonical())
}

/// The request's id: the client's `x-request-id` if it is sane, else a new one. It is in
/// every log line of the request, the `meta` event and the usage table.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The route template that matched, handed from the inner to the outer middleware.
#[derive(Debug, Clone)]
struct MatchedRoute(String);

pub fn router(state: AppState) -> Router {
    // Room for JSON escaping around the content, which has its own limit.
    let body_limit = state.limits.max_content_bytes.saturating_mul(2).saturating_add(64 * 1024);
    Router::new()
        .route("/tools", get(tools::list))
        .route("/tools/{slug}", get(tools::show))
        .route("/tool/{slug}", post(run::run_tool))
        .route("/auth/signup", post(account::signup))
        .route("/auth/login", post(account::login))
        .route("/auth/logout", post(account::logout))
        .route("/auth/logout-all", post(account::logout_all))
        .route("/me", get(account::me))
        .route("/admin/tools", post(admin::upsert_tool).get(admin::list_tools))
        .route("/admin/tools/{slug}", delete(admin::deactivate_tool))
        .route("/admin/tools/{slug}/versions", get(admin::list_versions))
        .route("/admin/tools/{slug}/versions/{version}", get(admin::show_version))
        .route("/admin/tools/{slug}/rollback", post(admin::rollback_tool))
        .route("/admin/usage", get(usage::admin_usage))
        .route("/assistants", get(assistants::list).post(assistants::create))
        .route("/assistants/{id}", get(assistants::show).patch(assistants::update).delete(assistants::delete))
        .route("/chat", post(chat::chat))
        .route("/v1/models", get(openai::models).layer(middleware::from_fn(openai::openai_errors)))
        .route("/v1/models/{model}", get(openai::model).layer(middleware::from_fn(openai::openai_errors)))
        .route("/v1/chat/completions", post(openai::chat_completions).layer(middleware::from_fn(openai::openai_errors)))
        .route("/v1/{*rest}", any(openai::unknown_endpoint).layer(middleware::from_fn(openai::openai_errors)))
        .route(
            "/files",
            get(files::list)
                .post(files::upload)
                .layer(DefaultBodyLimit::max(state.limits.max_file_bytes.saturating_add(1))),
        )
        .route("/files/{id}", get(files::show).delete(files::delete))
        .route("/files/{id}/content", get(files::content))
        .route("/usage", get(usage::usage))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(crate::console::routes())
        .route_layer(middleware::from_fn(remember_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            ApiError::internal().into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/api.md")
}

async fn method_not_allowed() -> Response {
    let mut response = ApiError::new(aniate_proto::error::ErrorCode::BadRequest, "method not allowed on this endpoint")
        .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

async fn remember_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(MatchedRoute(route));
    }
    response
}

fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| text.to_owned())
}

pub fn new_request_id() -> String {
    use rand::Rng;
    format!("req_{:024x}", rand::thread_rng().r#gen::<u128>() >> 32)
}

/// Gives the request its id and span, logs it, counts it.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = request.headers().get("x-request-id").and_then(sane_request_id).unwrap_or_else(new_request_id);
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let route =
        response.extensions().get::<MatchedRoute>().map_or_else(|| "unmatched".to_owned(), |route| route.0.clone());
    let status = response.status().as_u16();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state
        .metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels { method: method.to_string(), route: route.clone(), status })
        .inc();
    span.in_scope(|| {
        tracing::info!(route, status, elapsed_us = started.elapsed().as_micros() as u64, "response");
    });
    response
}
