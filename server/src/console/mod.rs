//! `/console`: the web console, server-rendered HTML from this binary (docs/console.md).
//!
//! Every page works without JavaScript, and every action calls the same function as its JSON
//! API route (`http::admin::push_tool`, `http::account::sign_in`, …): the console is a second
//! door, never a second implementation.
//!
//! - Sign-in makes a token of kind `session` (`http::account::sign_in`), sent back as the
//!   `aniate_session` cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS); it is checked
//!   by `auth::authenticate`, like API tokens, so it expires and is revoked like them.
//! - Every form carries a CSRF token derived from the session's secret ([`Session::csrf`]);
//!   [`CsrfForm`] refuses a post without it (403) before the handler runs. The sign-in form,
//!   which has no session yet, uses a double-submit cookie.
//! - Every page is sent with a strict `Content-Security-Policy`: no inline script or style,
//!   nothing from other origins.
//! - A tool's prompt is only ever put on admin pages ([`AdminSession`]).
//!
//! Layout: [`html`] (escaping templates), `pages` (layout and small helpers), `tools` (admin
//! tool pages), `usage` (the admin's usage page and CSV), `people` (users and plans), `account` and
//! `mine` (the signed-in user's own pages).

mod account;
pub mod html;
mod mine;
mod pages;
mod people;
mod tools;
mod usage;

use aniate_proto::{api::Role, error::ErrorCode};
use axum::{
    Router,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::html;
use crate::{
    auth::{self, AuthUser, TokenKind},
    http::{AppState, error::ApiError},
};
use html::Html;

/// The session cookie.
pub const SESSION_COOKIE: &str = "aniate_session";
/// The sign-in form's double-submit cookie.
const LOGIN_CSRF_COOKIE: &str = "aniate_login_csrf";
/// The form field every post carries.
pub const CSRF_FIELD: &str = "csrf";
/// Largest form body: a prompt (64 KiB) with room for its encoding and the other fields.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// What every console response may load: its own stylesheet and script, and nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/console.css");

/// The console's routes; merged into the API router, so they pass the same request-id, log
/// and metrics middleware.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/console.css", get(css))
        .route("/console/tools", get(tools::list).post(tools::save))
        .route("/console/tools/new", get(tools::new_form))
        .route("/console/tools/{slug}", get(tools::edit))
        .route("/console/tools/{slug}/active", post(tools::set_active))
        .route("/console/tools/{slug}/history", get(tools::history))
        .route("/console/tools/{slug}/diff", get(tools::diff))
        .route("/console/tools/{slug}/rollback", get(tools::confirm_rollback).post(tools::rollback))
        .route("/console/usage", get(usage::page))
        .route("/console/usage.csv", get(usage::csv))
        .route("/console/users", get(people::users))
        .route("/console/users/plan", post(people::set_plan))
        .route("/console/users/role", post(people::set_role))
        .route("/console/users/disabled", post(people::set_disabled))
        .route("/console/users/revoke", post(people::revoke_tokens))
        .route("/console/plans", get(people::plans).post(people::save_plan))
        .route("/console/brews", get(mine::brews))
        .route("/console/files", get(mine::files))
        .route("/console/me", get(account::overview))
        .route("/console/tokens", get(account::tokens).post(account::create_token))
        .route("/console/tokens/{id}/revoke", post(account::revoke_token))
        .layer(middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// Why a console request did not get its page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No session, or one that expired or was revoked: go to the sign-in page.
    SignIn,
    /// A post without its CSRF token, or with another session's.
    Csrf,
    /// A page or action for admins, asked by a user.
    NotAdmin,
    /// The error of the shared action, as the API would answer it.
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(err: ApiError) -> ConsoleError {
        ConsoleError::Api(err)
    }
}

impl From<crate::db::DbError> for ConsoleError {
    fn from(err: crate::db::DbError) -> ConsoleError {
        ConsoleError::Api(err.into())
    }
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was not sent by this console session (its CSRF token is missing or wrong); reload the page and try again".to_owned(),
            ),
            ConsoleError::NotAdmin => (StatusCode::FORBIDDEN, "Admins only", "This page is for admins".to_owned()),
            ConsoleError::Api(err) => (err.status(), "Error", err.message),
        };
        let body = html!(
            "<section class=\"error\"><h1>{}</h1><p>{}</p><p><a href=\"/console\">Back to the console</a></p></section>",
            title,
            message
        );
        let mut response = pages::document(title, None, body).into_response();
        *response.status_mut() = status;
        response
    }
}

/// The signed-in user of a console request, from the `aniate_session` cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: AuthUser,
    secret: String,
}

impl Session {
    /// The CSRF token of this session's forms: a hash of the session's secret, which a page of
    /// another origin can neither read (the cookie is `HttpOnly`) nor guess.
    pub fn csrf(&self) -> String {
        csrf_token(&self.secret)
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    pub fn require_admin(&self) -> ConsoleResult<()> {
        if self.is_admin() { Ok(()) } else { Err(ConsoleError::NotAdmin) }
    }

    /// The hidden field every form of this session carries.
    pub fn csrf_field(&self) -> Html {
        html!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", self.csrf())
    }
}

fn csrf_token(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"aniate-console-csrf\0");
    hasher.update(secret.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Compares in time independent of where the texts differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`, if the request has it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// Whether the client reached this server over HTTPS: served by it directly, or by a proxy
/// that says so.
fn over_https(state: &AppState, headers: &HeaderMap) -> bool {
    state.https || headers.get("x-forwarded-proto").is_some_and(|proto| proto.as_bytes() == b"https")
}

/// A `Set-Cookie` value for the console: path `/console`, `HttpOnly`, `SameSite=Strict`, and
/// `Secure` over HTTPS; an empty value with `Max-Age=0` removes the cookie.
fn set_cookie(name: &str, value: &str, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if value.is_empty() {
        cookie.push_str("; Max-Age=0");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    // The value is hex or a token of [A-Za-z0-9_], so the header is always valid.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ConsoleResult<Session> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(session.clone());
        }
        let secret = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignIn)?;
        let user = match auth::authenticate(state, &secret, TokenKind::Session).await {
            Ok(user) => user,
            Err(err) if err.code == ErrorCode::Unauthorized => return Err(ConsoleError::SignIn),
            Err(err) => return Err(err.into()),
        };
        let session = Session { user, secret };
        parts.extensions.insert(session.clone());
        Ok(session)
    }
}

/// The session of an admin page: a user's session gets 403.
#[derive(Debug, Clone)]
pub struct AdminSession(pub Session);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ConsoleResult<AdminSession> {
        let session = Session::from_request_parts(parts, state).await?;
        session.require_admin()?;
        Ok(AdminSession(session))
    }
}

/// A form with nothing but its CSRF token (sign-out, revoke).
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

/// A form post of a signed-in session, its CSRF token checked before anything else is read:
/// the session and the form's fields (`T` ignores the `csrf` field).
#[derive(Debug)]
pub struct CsrfForm<T>(pub Session, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> ConsoleResult<CsrfForm<T>> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = read_form(body).await?;
        if !form_csrf(&bytes).is_some_and(|sent| same_secret(&sent, &session.csrf())) {
            tracing::warn!(user_id = session.user.user_id, "console form refused: no or wrong CSRF token");
            return Err(ConsoleError::Csrf);
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|err| {
            ApiError::new(ErrorCode::BadRequest, format!("this form is not what the page sends: {err}"))
        })?;
        Ok(CsrfForm(session, form))
    }
}

async fn read_form(body: axum::body::Body) -> ConsoleResult<bytes::Bytes> {
    axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "this form is larger than the console accepts").into())
}

fn form_csrf(bytes: &[u8]) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).ok()?;
    fields.into_iter().find(|(key, _)| key == CSRF_FIELD).map(|(_, value)| value)
}

/// `/console`: the admin's tools, or the user's own overview.
async fn home(session: Result<Session, ConsoleError>) -> Response {
    match session {
        Ok(session) if session.is_admin() => Redirect::to("/console/tools").into_response(),
        Ok(_) => Redirect::to("/console/me").into_response(),
        Err(err) => err.into_response(),
    }
}

/// The sign-in page, with a fresh double-submit CSRF cookie.
async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    login_response(&state, &headers, None, StatusCode::OK)
}

fn login_response(state: &AppState, headers: &HeaderMap, error: Option<&str>, status: StatusCode) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let error = match error {
        Some(message) => html!("<p class=\"flash error\" role=\"alert\">{}</p>", message),
        None => Html::default(),
    };
    let body = html!(
        "<section class=\"signin\"><h1>Sign in</h1>{}\
         <form method=\"post\" action=\"/console/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Email <input type=\"email\" name=\"email\" autocomplete=\"username\" required autofocus></label>\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form></section>",
        error,
        token
    );
    let mut response = pages::document("Sign in", None, body).into_response();
    *response.status_mut() = status;
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, &token, over_https(state, headers)));
    response
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Signs in through `http::account::sign_in`, the function of `POST /auth/login` (and so
/// its throttle), and sets the session cookie.
async fn login(
    State(state): State<AppState>,
    extensions: http::Extensions,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ConsoleResult<Response> {
    let bytes = read_form(body).await?;
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE);
    let sent = form_csrf(&bytes);
    if !matches!((&expected, &sent), (Some(expected), Some(sent)) if same_secret(expected, sent)) {
        return Err(ConsoleError::Csrf);
    }
    let form: LoginForm = serde_urlencoded::from_bytes(&bytes)
        .map_err(|err| ApiError::new(ErrorCode::BadRequest, format!("this form is not what the page sends: {err}")))?;
    let credentials = aniate_proto::api::Credentials { email: form.email, password: form.password };
    let address = crate::http::client_ip(&extensions);
    match crate::http::account::sign_in(&state, address, credentials, TokenKind::Session).await {
        Ok(secret) => {
            let secure = over_https(&state, &headers);
            let mut response = Redirect::to("/console").into_response();
            response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &secret, secure));
            response.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, "", secure));
            Ok(response)
        }
        Err(err)
            if matches!(err.code, ErrorCode::Unauthorized | ErrorCode::RateLimited | ErrorCode::AccountDisabled) =>
        {
            Ok(login_response(&state, &headers, Some(&err.message), err.status()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Signs out: revokes the session's token, as `POST /auth/logout` revokes an API token.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    CsrfForm(session, NoFields {}): CsrfForm<NoFields>,
) -> ConsoleResult<Response> {
    state.db.revoke_token(session.user.token_id).await?;
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", over_https(&state, &headers)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; aniate_session=ant_x; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("ant_x"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_https() {
        let plain = set_cookie(SESSION_COOKIE, "t", false);
        assert_eq!(plain.to_str().unwrap(), "aniate_session=t; Path=/console; HttpOnly; SameSite=Strict");
        let secure = set_cookie(SESSION_COOKIE, "", true);
        assert_eq!(
            secure.to_str().unwrap(),
            "aniate_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
    }

    #[test]
    fn csrf_tokens_depend_on_the_session() {
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 32);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
