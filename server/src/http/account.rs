//! Signup, login, logout (of one token or all of an account's) and `/me`.

use aniate_proto::error::ErrorBody;
use aniate_proto::{
    api::{Credentials, Me, Role, TokenResponse},
    error::ErrorCode,
};
use axum::{Json, extract::State, http::StatusCode};
use http::Extensions;

use super::{
    AppState,
    error::{ApiError, ApiResult},
    extract::ApiJson,
};
use crate::{
    auth::{self, AuthUser, TokenKind},
    db::{DbError, now_ms},
    throttle::{Per, Verdict},
};

/// The 429 of a throttled login or sign-up.
fn throttled(verdict: Verdict, what: &str) -> ApiResult<()> {
    let Verdict::Wait { retry_after_secs, per } = verdict else { return Ok(()) };
    let whose = match per {
        Per::Account => "for this account",
        Per::Address => "from your address",
    };
    Err(ApiError {
        code: ErrorCode::RateLimited,
        message: format!("too many {what} {whose}; retry in {retry_after_secs} s"),
        retry_after: Some(retry_after_secs),
    })
}

/// A hash verified when the email is unknown, so that a login takes as long whether or not
/// the account exists.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    auth::hash_password("no account has this password, it is never compared with success").unwrap_or_default()
});

#[utoipa::path(post, path = "/auth/signup", tag = "accounts", operation_id = "signup",
    request_body(content = Credentials, example = json!({"email": "me@example.com", "password": "correct-horse-1"})),
    responses((status = 201, body = TokenResponse), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn signup(
    State(state): State<AppState>,
    extensions: Extensions,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    if !state.limits.allow_signup {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "signups are closed on this server; ask its admin for an account",
        ));
    }
    let email = auth::normalize_email(&credentials.email)
        .ok_or_else(|| ApiError::invalid("email: not a valid email address"))?;
    auth::check_password_rules(&credentials.password, &email).map_err(ApiError::invalid)?;
    throttled(state.throttle.signup(super::client_ip(&extensions), now_ms()), "sign-ups")?;
    let hash = auth::hash_password_async(credentials.password).await?;
    let user_id = match state.db.create_user(&email, &hash, Role::User).await {
        Ok(id) => id,
        Err(DbError::Conflict) => {
            return Err(ApiError::new(ErrorCode::Conflict, "an account with this email exists; log in instead"));
        }
        Err(err) => return Err(err.into()),
    };
    let token = auth::new_token();
    state.db.create_token(user_id, &auth::hash_token(&token), "signup").await?;
    tracing::info!(user_id, "user signed up");
    Ok((StatusCode::CREATED, Json(TokenResponse { token })))
}

#[utoipa::path(post, path = "/auth/login", tag = "accounts", operation_id = "login", request_body = Credentials,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    extensions: Extensions,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<Json<TokenResponse>> {
    let token = sign_in(&state, super::client_ip(&extensions), credentials, TokenKind::Api).await?;
    Ok(Json(TokenResponse { token }))
}

/// Checks an email and password, throttled, and makes a new token of `kind`: the one login of
/// `POST /auth/login` and the console's sign-in form.
pub async fn sign_in(
    state: &AppState,
    address: Option<std::net::IpAddr>,
    credentials: Credentials,
    kind: TokenKind,
) -> ApiResult<String> {
    let wrong = || ApiError::unauthorized("wrong email or password");
    let email = auth::normalize_email(&credentials.email);
    // The throttle's key for an address that cannot be an account is the text as sent (bounded
    // by the body limit), so guessing at malformed emails is throttled too.
    let account = email.clone().unwrap_or_else(|| credentials.email.clone());
    // Before any hashing, so a flood of guesses costs no CPU.
    throttled(state.throttle.begin_login(&account, address, now_ms()), "failed logins")?;
    if credentials.password.len() > auth::MAX_PASSWORD_BYTES {
        return Err(wrong());
    }
    let user = match &email {
        Some(email) => state.db.user_by_email(email).await?,
        None => None,
    };
    let hash = user.as_ref().map_or_else(|| DUMMY_HASH.clone(), |user| user.password_hash.clone());
    let verified = auth::verify_password_async(credentials.password, hash).await?;
    let user = user.filter(|_| verified).ok_or_else(wrong)?;
    state.throttle.login_succeeded(&account, address);
    // Only after the password is checked, so this says nothing to someone who does not know it.
    if user.disabled_at.is_some() {
        return Err(auth::account_disabled());
    }
    let token = auth::new_token();
    let name = match kind {
        TokenKind::Api => "login",
        TokenKind::Session => "console",
    };
    state.db.create_token_of_kind(user.id, &auth::hash_token(&token), name, kind.as_str()).await?;
    tracing::info!(user_id = user.id, kind = kind.as_str(), "user logged in");
    Ok(token)
}

/// Revokes the token the request was made with.
#[utoipa::path(post, path = "/auth/logout", tag = "accounts", operation_id = "logout", security(("token" = [])),
    responses((status = 204, description = "The token is revoked"), (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    state.db.revoke_token(user.token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every token of the account, this one included: the answer to a token that may have
/// leaked, on any machine.
#[utoipa::path(post, path = "/auth/logout-all", tag = "accounts", operation_id = "logout_all", security(("token" = [])),
    responses((status = 204, description = "Every token of the account is revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logout_all(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    let n_revoked = state.db.revoke_user_tokens(user.user_id).await?;
    tracing::info!(user_id = user.user_id, n_revoked, "revoked every token of the account");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/me", tag = "accounts", operation_id = "me", security(("token" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(user: AuthUser) -> Json<Me> {
    Json(Me { email: user.email, role: user.role, plan: user.plan })
}
