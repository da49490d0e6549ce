//! `config.toml`: the server URL and the daemon's settings. A corrupt file is warned about and
//! ignored, never fatal.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{fsutil::write_atomic, home::Home};

/// Where clients connect when nothing else is configured: a server on this machine.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Aniate server, e.g. `https://aniate.example.com`.
    pub server: Option<String>,
    /// A PEM CA certificate to trust for the server (self-hosted HTTPS).
    pub ca_cert: Option<PathBuf>,
    /// Seconds between background checks for newer tool versions (default 300; 0 = never).
    pub update_check_secs: Option<u64>,
    /// Seconds a cached result stays valid (default 600; 0 = no cache).
    pub cache_ttl_secs: Option<u64>,
    /// Allow plain `http://` to a server that is not on this machine (default false): the token
    /// and every file sent then cross the network in clear text.
    pub allow_insecure_http: Option<bool>,
}

/// The keys `ant config get|set` knows.
pub const KEYS: [&str; 5] = ["server", "ca_cert", "update_check_secs", "cache_ttl_secs", "allow_insecure_http"];

/// A server URL's origin, `scheme://host[:port]` (the port only when it is not the scheme's
/// default): what a stored token is bound to.
pub fn server_origin(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|err| format!("`{url}` is not a server URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!("the server must be an http:// or https:// URL, not `{url}`"));
    }
    Ok(parsed.origin().ascii_serialization())
}

/// Whether `url` may carry a token, per `allow_insecure_http`: `Ok(None)` for HTTPS or plain
/// HTTP to this machine (loopback), `Ok(Some(warning))` for plain HTTP elsewhere when allowed,
/// `Err(why)` when it is not.
pub fn check_transport(url: &str, allow_insecure_http: bool) -> Result<Option<String>, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|err| format!("`{url}` is not a server URL: {err}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() != "http" || loopback {
        return Ok(None);
    }
    if allow_insecure_http {
        Ok(Some(format!(
            "sending your token to {host} over plain http:// (allow_insecure_http = true): anyone on the network can read it"
        )))
    } else {
        Err(format!("refusing plain http:// to {host}: your token would cross the network in clear text"))
    }
}

impl Config {
    /// Reads `config.toml`; a missing file is the defaults, a broken one the defaults plus a
    /// warning.
    pub fn load(home: &Home) -> (Config, Option<String>) {
        let path = home.config_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => match toml::from_str::<Config>(&text) {
                Ok(config) => (config, None),
                Err(err) => {
                    (Config::default(), Some(format!("ignoring {}: {}", path.display(), err.message().trim_end())))
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => (Config::default(), None),
            Err(err) => (Config::default(), Some(format!("cannot read {}: {err}", path.display()))),
        }
    }

    /// The server URL: `ANIATE_SERVER`, else `server` here, else [`DEFAULT_SERVER`].
    pub fn server_url(&self) -> String {
        std::env::var("ANIATE_SERVER")
            .ok()
            .filter(|url| !url.is_empty())
            .or_else(|| self.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    /// The CA certificate: `ANIATE_CA_CERT`, else `ca_cert` here.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        std::env::var_os("ANIATE_CA_CERT").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| self.ca_cert.clone())
    }

    pub fn update_check_secs(&self) -> u64 {
        self.update_check_secs.unwrap_or(300)
    }

    pub fn cache_ttl_secs(&self) -> u64 {
        self.cache_ttl_secs.unwrap_or(600)
    }

    pub fn allow_insecure_http(&self) -> bool {
        self.allow_insecure_http.unwrap_or(false)
    }

    pub fn get(&self, key: &str) -> Result<Option<String>, String> {
        Ok(match key {
            "server" => self.server.clone(),
            "ca_cert" => self.ca_cert.as_ref().map(|p| p.display().to_string()),
            "update_check_secs" => self.update_check_secs.map(|v| v.to_string()),
            "cache_ttl_secs" => self.cache_ttl_secs.map(|v| v.to_string()),
            "allow_insecure_http" => self.allow_insecure_http.map(|v| v.to_string()),
            _ => return Err(unknown_key(key)),
        })
    }

    /// Sets one key after checking its value; an empty value unsets it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        let seconds = |value: &str| -> Result<Option<u64>, String> {
            if value.is_empty() {
                return Ok(None);
            }
            value.parse().map(Some).map_err(|_| format!("{key} must be a whole number of seconds, not `{value}`"))
        };
        match key {
            "server" => {
                if !(value.is_empty() || value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!("server must be an http:// or https:// URL, not `{value}`"));
                }
                self.server = (!value.is_empty()).then(|| value.trim_end_matches('/').to_owned());
            }
            "ca_cert" => {
                if !value.is_empty() && !std::path::Path::new(value).is_file() {
                    return Err(format!("ca_cert: no such file `{value}`"));
                }
                self.ca_cert = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            "update_check_secs" => self.update_check_secs = seconds(value)?,
            "cache_ttl_secs" => self.cache_ttl_secs = seconds(value)?,
            "allow_insecure_http" => {
                self.allow_insecure_http = match value {
                    "" => None,
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => return Err(format!("allow_insecure_http must be true or false, not `{value}`")),
                }
            }
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Writes `config.toml` atomically.
    pub fn save(&self, home: &Home) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        write_atomic(&home.config_path(), text.as_bytes(), 0o600)
    }
}

fn unknown_key(key: &str) -> String {
    format!("unknown config key `{key}` (known: {})", KEYS.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut config = Config::default();
        config.set("server", "https://aniate.example.com/").unwrap();
        config.set("cache_ttl_secs", "30").unwrap();
        config.save(&home).unwrap();
        let (loaded, warning) = Config::load(&home);
        assert_eq!(warning, None);
        assert_eq!(loaded.get("server").unwrap().as_deref(), Some("https://aniate.example.com"));
        assert_eq!(loaded.cache_ttl_secs(), 30);
        assert!(config.set("server", "ftp://x").unwrap_err().contains("http://"));
        assert!(config.set("cache_ttl_secs", "soon").unwrap_err().contains("whole number"));
        assert!(config.set("colour", "x").unwrap_err().contains("unknown config key"));
        assert!(config.get("nope").is_err());
    }

    #[test]
    fn origins_and_transports() {
        assert_eq!(server_origin("HTTPS://Aniate.Example.com:443/x/").unwrap(), "https://aniate.example.com");
        assert_eq!(server_origin("http://127.0.0.1:8787").unwrap(), "http://127.0.0.1:8787");
        assert_ne!(server_origin("http://127.0.0.1:8787").unwrap(), server_origin("http://127.0.0.1:8788").unwrap());
        assert!(server_origin("ftp://x").is_err());
        assert!(server_origin("not a url").is_err());
        for local in ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "https://a.example"] {
            assert_eq!(check_transport(local, false), Ok(None), "{local}");
        }
        assert!(
            check_transport("http://a.example", false).unwrap_err().contains("refusing plain http:// to a.example")
        );
        assert!(check_transport("http://10.0.0.1", true).unwrap().unwrap().contains("plain http://"));
        let mut config = Config::default();
        assert!(!config.allow_insecure_http());
        config.set("allow_insecure_http", "true").unwrap();
        assert!(config.allow_insecure_http());
        assert!(config.set("allow_insecure_http", "yes").is_err());
    }

    #[test]
    fn a_corrupt_file_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::write(home.config_path(), "server = [").unwrap();
        let (config, warning) = Config::load(&home);
        assert_eq!(config, Config::default());
        assert!(warning.unwrap().contains("ignoring"));
    }
}
