//! Passwords, API tokens and the [`AuthUser`] extractor.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults, OWASP's minimum). API
//! tokens are 256 random bits, so a fast SHA-256 is enough to store them: nobody can brute-force
//! the preimage, and lookups stay a single indexed query.

use aniate_proto::api::Role;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
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
/// A token expires `ANIATE_TOKEN_TTL_DAYS` after its last use, so this write is also what
/// slides its expiry: no request writes more than this one, once a minute per token.
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
    let argon2 = Argon2::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let output_len = argon2.params().output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| argon2_into(&argon2, password.as_bytes(), salt_bytes, out))?;
    let hash = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(argon2.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    let verify = || -> Result<bool, argon2::password_hash::Error> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return Ok(false) };
        let argon2 = Argon2::new(
            Algorithm::try_from(parsed.algorithm)?,
            parsed.version.map(Version::try_from).transpose()?.unwrap_or_default(),
            Params::try_from(&parsed)?,
        );
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let computed =
            Output::init_with(expected.len(), |out| argon2_into(&argon2, password.as_bytes(), salt_bytes, out))?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    };
    verify().unwrap_or(false)
}

/// Argon2 into `out`, in this thread's reused block memory. A fresh 19 MiB buffer per hash (what
/// the crate's `hash_password` does) is never given back: glibc cannot reuse a freed block of
/// that size and alignment for the next one, so each sign-up or login grew the server by 19 MiB
/// (measured: 36 sign-ups, 16 MB to 400 MB).
fn argon2_into(argon2: &Argon2, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::password_hash::Result<()> {
    thread_local! {
        static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BLOCKS.with_borrow_mut(|blocks| {
        let needed = argon2.params().block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        let result = argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..needed]);
        // Leave nothing derived from the password behind.
        blocks[..needed].fill(Block::default());
        Ok(result?)
    })
}

/// Argon2 runs on [`HASHER_THREADS`] thread of its own, fed by a queue of at most
/// [`HASHER_QUEUE`] jobs. Each hash takes tens of milliseconds of CPU and 19 MiB of memory by
/// design; that thread keeps one block buffer for all of them (see [`argon2_into`]), so the
/// server holds 19 MiB for hashing once someone has signed in, and never more. A flood of
/// logins waits in the bounded queue instead of taking every thread (one thread hashes some 50
/// passwords a second in a release build); past it, the answer is 503 `unavailable`.
const HASHER_THREADS: usize = 1;
const HASHER_QUEUE: usize = 256;

type HashJob = Box<dyn FnOnce() + Send>;

fn hasher() -> &'static std::sync::mpsc::SyncSender<HashJob> {
    static HASHER: std::sync::OnceLock<std::sync::mpsc::SyncSender<HashJob>> = std::sync::OnceLock::new();
    HASHER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<HashJob>(HASHER_QUEUE);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for n in 0..HASHER_THREADS {
            let queue = std::sync::Arc::clone(&queue);
            let spawned = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!(cause = %err, "could not start a password hashing thread");
            }
        }
        jobs
    })
}

/// Runs `work` on the hashing threads.
async fn on_hasher<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = done.send(work());
    });
    if hasher().try_send(job).is_err() {
        tracing::warn!("password hashing queue full");
        return Err(ApiError::new(
            aniate_proto::error::ErrorCode::Unavailable,
            "too many sign-ins at once; try again in a moment",
        ));
    }
    result.await.map_err(|_| ApiError::internal())
}

pub async fn hash_password_async(password: String) -> ApiResult<String> {
    on_hasher(move || hash_password(&password)).await?.map_err(|err| {
        tracing::error!(cause = %err, "password hashing failed");
        ApiError::internal()
    })
}

pub async fn verify_password_async(password: String, hash: String) -> ApiResult<bool> {
    on_hasher(move || verify_password(&password, &hash)).await
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

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The lowest zxcvbn score a new password may have. zxcvbn scores 0 ("too guessable") and 1
/// ("very guessable") fall to a throttled online attack; 2 and up take more than 10^8 guesses,
/// which the login throttle makes an online attack too slow for, and the Argon2id hashes, 0600
/// on the server, are what an offline attack would need.
pub const MIN_PASSWORD_SCORE: u8 = 2;

/// The rules a new password must meet: 10 to 1024 bytes' worth of characters, not only
/// whitespace, and not guessable by the zxcvbn estimator (which is also told the email, so the
/// address itself is no password).
pub fn check_password_rules(password: &str, email: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("password must have at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("password must have at most {MAX_PASSWORD_BYTES} bytes"));
    }
    if password.trim().is_empty() {
        return Err("password must not be only whitespace".to_owned());
    }
    let local_part = email.split('@').next().unwrap_or_default();
    let local_letters: String = local_part.chars().filter(|c| c.is_alphanumeric()).collect();
    let estimate = zxcvbn::zxcvbn(password, &[email, local_part, &local_letters]);
    if (estimate.score() as u8) < MIN_PASSWORD_SCORE {
        return Err("password is too easy to guess: use a longer one, e.g. a few unrelated words".to_owned());
    }
    Ok(())
}

/// The answer to any request of a disabled account, and to its correct logins.
pub fn account_disabled() -> ApiError {
    ApiError::new(
        aniate_proto::error::ErrorCode::AccountDisabled,
        "this account is disabled; ask the server's admin to enable it",
    )
}

/// The caller, authenticated by `Authorization: Bearer <token>` that is unrevoked, unexpired,
/// and of an account that is not disabled.
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
        if found.disabled_at.is_some() {
            return Err(account_disabled());
        }
        let now = now_ms();
        let last_use = found.last_used_at.unwrap_or(found.created_at).max(found.created_at);
        if now - last_use > state.limits.token_ttl_ms {
            let days = state.limits.token_ttl_ms / (24 * 60 * 60 * 1000);
            return Err(ApiError::unauthorized(format!(
                "this API token expired after {days} days unused; log in again with `ant login`"
            )));
        }
        if found.last_used_at.is_none_or(|last| now - last > TOUCH_INTERVAL_MS) {
            let db = state.db.clone();
            let token_hash = hash_token(token);
            tokio::spawn(async move {
                if let Err(err) = db.touch_token(found.token_id, &token_hash).await {
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
    fn hashes_are_the_argon2_crates_own_both_ways() {
        use argon2::{PasswordHasher, PasswordVerifier};
        // Stored before the block memory was reused, with the crate's own hasher.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(verify_password("correct horse", &theirs));
        assert!(!verify_password("correct horsE", &theirs));
        let ours = hash_password("battery staple").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"battery staple", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"battery stapler", &parsed).is_err());
        // Other parameters, as a future default might have, still verify.
        let params = Params::new(8 * 1024, 3, 1, None).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"x", &salt).unwrap();
        assert!(verify_password("x", &other.to_string()));
    }

    #[test]
    fn passwords_must_be_long_not_blank_and_not_guessable() {
        let email = "ada.lovelace@example.com";
        for good in ["password-123", "correct horse battery staple", "admin-password-1", "blue-ocean-lamp-93"] {
            assert_eq!(check_password_rules(good, email), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("short-1", "at least 10"),
            ("          ", "whitespace"),
            ("\t\t\t\t\t\t\t\t\t\t", "whitespace"),
            ("aaaaaaaaaaaa", "too easy"),
            ("1234567890", "too easy"),
            ("qwertyuiop", "too easy"),
            ("password12", "too easy"),
            ("adalovelace1", "too easy"),
        ] {
            let error = check_password_rules(bad, email).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(check_password_rules(&"x".repeat(MAX_PASSWORD_BYTES + 1), email).unwrap_err().contains("at most"));
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
