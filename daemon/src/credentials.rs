//! The stored login (`credentials`, mode 0600): an API token and the origin
//! (`scheme://host[:port]`) of the server that issued it. The token is only ever sent to that
//! origin; a command aimed at another server is "not logged in" there.
//!
//! A file written before origins were stored holds the bare token. It is bound to the server
//! configured (`ANIATE_SERVER`, else `config.toml`, else the default) when it is first read,
//! and rewritten with that origin.
//!
//! **Architecture Invariant:** the token is never logged and never appears in a reply.

use serde::{Deserialize, Serialize};

use crate::{config::server_origin, fsutil::write_atomic, home::Home};

/// A token and the origin it belongs to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLogin {
    pub origin: String,
    pub token: String,
}

impl std::fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin").field("origin", &self.origin).field("token", &"<redacted>").finish()
    }
}

/// `ANIATE_TOKEN` of this process, if set and not blank.
pub fn env_token() -> Option<String> {
    std::env::var("ANIATE_TOKEN").ok().map(|token| token.trim().to_owned()).filter(|token| !token.is_empty())
}

/// The stored login. A bare token (a file from before origins) is bound to `configured_server`
/// and the file rewritten; `None` when there is no file, it is empty, or it cannot be read.
pub fn load(home: &Home, configured_server: &str) -> Option<StoredLogin> {
    let text = std::fs::read_to_string(home.credentials_path()).ok()?;
    if let Ok(login) = toml::from_str::<StoredLogin>(&text) {
        return Some(login);
    }
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        tracing::warn!(path = %home.credentials_path().display(), "ignoring an unreadable credentials file");
        return None;
    }
    let origin = match server_origin(configured_server) {
        Ok(origin) => origin,
        Err(err) => {
            tracing::warn!("cannot bind the stored token to a server: {err}");
            return None;
        }
    };
    let login = StoredLogin { origin, token: token.to_owned() };
    match store(home, &login) {
        Ok(()) => tracing::info!(origin = %login.origin, "bound the stored token to the configured server"),
        Err(err) => tracing::warn!(cause = %err, origin = %login.origin, "could not rewrite the credentials file"),
    }
    Some(login)
}

pub fn store(home: &Home, login: &StoredLogin) -> std::io::Result<()> {
    let text = toml::to_string(login).map_err(std::io::Error::other)?;
    write_atomic(&home.credentials_path(), text.as_bytes(), 0o600)
}

pub fn delete(home: &Home) -> std::io::Result<()> {
    match std::fs::remove_file(home.credentials_path()) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_round_trips_and_a_bare_token_is_bound_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert_eq!(load(&home, "http://127.0.0.1:1"), None);
        let login = StoredLogin { origin: "https://a.example".into(), token: "tok_1".into() };
        store(&home, &login).unwrap();
        assert_eq!(load(&home, "https://b.example"), Some(login.clone()));
        assert!(!format!("{login:?}").contains("tok_1"));

        std::fs::write(home.credentials_path(), "tok_2\n").unwrap();
        let bound = load(&home, "http://127.0.0.1:8787/").unwrap();
        assert_eq!(bound, StoredLogin { origin: "http://127.0.0.1:8787".into(), token: "tok_2".into() });
        // Rewritten: a later read under another configured server keeps the first origin.
        assert_eq!(load(&home, "https://b.example"), Some(bound));

        std::fs::write(home.credentials_path(), "two words\n").unwrap();
        assert_eq!(load(&home, "https://b.example"), None);
    }
}
