//! The server's files on disk are its user's alone: the SQLite database and its `-wal` and `-shm`
//! files hold password hashes and tools' private prompts, and the files dir holds users'
//! uploads.
//!
//! [`set_private_umask`] makes everything the process creates from then on 0600 (directories
//! 0700); [`make_private`] tightens what an older version, or an operator's copy, left readable
//! by others. Both are no-ops off Unix.

use std::path::{Path, PathBuf};

/// Sets the process umask to 077, before any file is created.
pub fn set_private_umask() {
    // SAFETY: umask only swaps the process's file mode mask; it has no failure mode and touches
    // no memory of ours. The one FFI call of the server, so it is allowed here alone.
    #[cfg(unix)]
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and missing parents) as 0700 if it is missing.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The file of a SQLite database URL (`sqlite://PATH?…` or `sqlite:PATH`), with its `-wal`
/// and `-shm` companions; empty for an in-memory database or any other URL.
pub fn sqlite_files(url: &str) -> Vec<PathBuf> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return Vec::new();
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Vec::new();
    }
    ["", "-wal", "-shm"].iter().map(|suffix| PathBuf::from(format!("{path}{suffix}"))).collect()
}

/// Takes group and other permissions off `path` if it exists, and with `recursive`, off
/// everything under it (symbolic links are left alone). Returns how many it changed.
///
/// Only the files dir is walked: the data dir may be one an operator shares with other things,
/// so of it only the dir itself and the database files are changed.
pub fn make_private(path: &Path, recursive: bool) -> std::io::Result<usize> {
    make_private_tree(path, recursive)
}

#[cfg(unix)]
fn make_private_tree(path: &Path, recursive: bool) -> std::io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    if metadata.file_type().is_symlink() {
        return Ok(0);
    }
    let mut n_changed = 0;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        n_changed += 1;
    }
    if recursive && metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            n_changed += make_private_tree(&entry?.path(), true)?;
        }
    }
    Ok(n_changed)
}

#[cfg(not(unix))]
fn make_private_tree(_path: &Path, _recursive: bool) -> std::io::Result<usize> {
    Ok(0)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn sqlite_urls_name_their_three_files() {
        assert_eq!(
            sqlite_files("sqlite:///var/lib/aniate/aniate.db?mode=rwc"),
            ["/var/lib/aniate/aniate.db", "/var/lib/aniate/aniate.db-wal", "/var/lib/aniate/aniate.db-shm"]
                .map(PathBuf::from)
        );
        assert_eq!(sqlite_files("sqlite:x.db").len(), 3);
        assert!(sqlite_files("sqlite::memory:").is_empty());
        assert!(sqlite_files("sqlite://x?mode=memory").is_empty());
        assert!(sqlite_files("postgres://u@h/db").is_empty());
    }

    #[test]
    fn open_files_and_dirs_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("files/ab")).unwrap();
        let blob = data.join("files/ab/abcd");
        std::fs::write(&blob, "x").unwrap();
        std::fs::write(data.join("private"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("link")).unwrap();
        for dir in [&data, &data.join("files"), &data.join("files/ab")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(data.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let etc_passwd = mode(Path::new("/etc/passwd"));

        std::fs::write(data.join("other"), "x").unwrap();
        std::fs::set_permissions(data.join("other"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(make_private(&data, false).unwrap(), 1);
        assert_eq!((mode(&data), mode(&data.join("files")), mode(&data.join("other"))), (0o700, 0o755, 0o644));
        assert_eq!(make_private(&data.join("files"), true).unwrap(), 3);
        assert_eq!((mode(&data.join("files")), mode(&data.join("files/ab")), mode(&blob)), (0o700, 0o700, 0o600));
        assert_eq!(mode(&data.join("private")), 0o600);
        assert_eq!(make_private(&data.join("link"), true).unwrap(), 0);
        assert_eq!(mode(Path::new("/etc/passwd")), etc_passwd, "a link's target is not touched");
        assert_eq!(make_private(&root.path().join("missing"), true).unwrap(), 0);
        assert_eq!(make_private(&data.join("files"), true).unwrap(), 0, "nothing left to change");
    }
}
