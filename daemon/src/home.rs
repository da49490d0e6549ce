//! Where the client side of Aniate keeps its files: `ANIATE_HOME` (default `~/.aniate`).

use std::path::{Path, PathBuf};

/// The client's home directory and the daemon's socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub root: PathBuf,
    /// `$ANIATE_HOME/aniated.sock`, or `ANIATE_SOCKET`.
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find the home directory: set HOME or ANIATE_HOME")]
    NoHome,
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
}

impl Home {
    /// From `ANIATE_HOME` and `ANIATE_SOCKET`, else `~/.aniate`.
    pub fn from_env() -> Result<Home, HomeError> {
        let root = match std::env::var_os("ANIATE_HOME").filter(|v| !v.is_empty()) {
            Some(root) => PathBuf::from(root),
            None => {
                let home = std::env::var_os("HOME")
                    .or_else(|| std::env::var_os("USERPROFILE"))
                    .filter(|v| !v.is_empty())
                    .ok_or(HomeError::NoHome)?;
                PathBuf::from(home).join(".aniate")
            }
        };
        let mut home = Home::at(root);
        if let Some(socket) = std::env::var_os("ANIATE_SOCKET").filter(|v| !v.is_empty()) {
            home.socket = PathBuf::from(socket);
        }
        Ok(home)
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        let root = root.into();
        let socket = root.join("aniated.sock");
        Home { root, socket }
    }

    /// Creates the home (0700) and its tools dir if missing.
    pub fn ensure(&self) -> Result<(), HomeError> {
        for dir in [self.root.clone(), self.tools_dir()] {
            create_private_dir(&dir).map_err(|source| HomeError::Create { path: dir.clone(), source })?;
        }
        Ok(())
    }

    pub fn tools_dir(&self) -> PathBuf {
        self.root.join("tools")
    }

    pub fn tool_path(&self, slug: &str) -> PathBuf {
        self.tools_dir().join(format!("{slug}.json"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.root.join("credentials")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("aniated.log")
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.redb")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("aniated.lock")
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Only when needed: an existing private home on a read-only disk is still usable.
        if std::fs::metadata(dir)?.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}
