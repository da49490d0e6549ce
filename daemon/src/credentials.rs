//! The stored API token (`credentials`, mode 0600). `ANIATE_TOKEN` overrides it, for CI.
//!
//! **Architecture Invariant:** the token is never logged and never appears in a reply.

use crate::{fsutil::write_atomic, home::Home};

/// The token to use: `ANIATE_TOKEN`, else the stored one.
pub fn load(home: &Home) -> Option<String> {
    if let Some(token) = std::env::var("ANIATE_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Some(token.trim().to_owned());
    }
    let text = std::fs::read_to_string(home.credentials_path()).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

pub fn store(home: &Home, token: &str) -> std::io::Result<()> {
    write_atomic(&home.credentials_path(), format!("{token}\n").as_bytes(), 0o600)
}

pub fn delete(home: &Home) -> std::io::Result<()> {
    match std::fs::remove_file(home.credentials_path()) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}
