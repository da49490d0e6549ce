//! Passwords, API tokens and the [`AuthUser`] extractor.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults, OWASP's minimum). API
//! tokens are 256 random bits, so a fast SHA-256 is enough to store them: nobody can brute-force
//! the preimage, and lookups stay a single indexed query.

use aniate_proto::api::Role;
use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use axum::extract::FromRequestParts;
use http::{header, request::Parts};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{
    db::now_ms,
    http::{
        AppState,
        error::{ApiError, ApiResult},
    },
};

/// Every token starts with this, so secret scanners and people can recognise one.
pub const TOKEN_PREFIX: &str = "ant_";

/// How stale `last_used_at` may get before a request refreshes it; saves a write per request.
const TOUCH_INTERVAL_MS: i64 = 60_000;

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// Hashes on the blocking pool: Argon2 takes tens of milliseconds of CPU by design.
pub async fn hash_password_async(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|_| ApiError::internal())?.map_err(
        |err| {
            tracing::error!(cause = %err, "password hashing failed");
            ApiError::internal()
        },
    )
}

pub async fn verify_password_async(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false)
}

/// Normalises an email for storage and lookup; `None` if it cannot be an address.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(email)
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub fn check_password_rules(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("password must have at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("password must have at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// The caller, authenticated by `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: i64,
    pub token_id: i64,
    pub email: String,
    pub role: Role,
    pub plan: String,
}

/// The caller, who must be an admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<AuthUser> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing API token: send `Authorization: Bearer <token>` (get one with `ant login`)")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header: expected `Bearer <token>`"))?;
        let found = state
            .db
            .token_user(&hash_token(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid or revoked API token; log in again with `ant login`"))?;
        if found.last_used_at.is_none_or(|last| now_ms() - last > TOUCH_INTERVAL_MS) {
            let db = state.db.clone();
            tokio::spawn(async move {
                if let Err(err) = db.touch_token(found.token_id).await {
                    tracing::warn!(cause = %err, "could not record token use");
                }
            });
        }
        Ok(AuthUser {
            user_id: found.user_id,
            token_id: found.token_id,
            email: found.email,
            role: found.role,
            plan: found.plan,
        })
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<AdminUser> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::new(aniate_proto::error::ErrorCode::Forbidden, "this needs an admin account"));
        }
        Ok(AdminUser(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsE", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_unique_and_hash_to_fixed_hex() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(normalize_email("  Ada@Example.COM "), Some("ada@example.com".to_owned()));
        for bad in ["", "ada", "@x", "ada@", "a@b@c", "a b@c", "a\n@b"] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
    }
}
