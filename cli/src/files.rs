//! The files of a tool run: reading the input (refused locally when the server would refuse it
//! anyway), and writing a `code` tool's answer back with `--apply`.
//!
//! **Invariant:** `--apply` never loses the user's file: the new content goes to a temporary file
//! in the same directory, is synced, the original is copied to `FILE.orig`, and only then is the
//! temporary file renamed over the original. A failure at any step leaves the original as it was.

use std::{
    ffi::OsString,
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

/// The largest input a tool takes, the same as the server's limit.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// How much of a file is searched for a NUL byte to tell binary from text.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// The input of a tool run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub content: String,
    /// The file name as the user gave it; `None` for stdin.
    pub filename: Option<String>,
    /// Guessed from the file's extension or name.
    pub language: Option<String>,
}

impl Input {
    /// The file name as given, or `stdin`.
    pub fn display_name(&self) -> &str {
        self.filename.as_deref().unwrap_or("stdin")
    }
}

/// Why an input was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("no such file: {path}")]
    NotFound { path: String },
    #[error("{path} is a directory")]
    IsDirectory { path: String },
    #[error("{path} looks binary; Aniate tools work on text files")]
    Binary { path: String },
    #[error("{path} is {size} bytes; the limit is {}", format_size(*.limit))]
    TooLarge { path: String, size: u64, limit: usize },
    /// Stdin or a pipe: its size is unknown, only that it is over the limit.
    #[error("{path} is over the limit of {}", format_size(*.limit))]
    OverLimit { path: String, limit: usize },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Reads the input of a tool run: the file `path`, or `stdin` when `path` is `-`, refusing
/// missing files, directories, binary content and anything over `max_bytes`.
pub fn read_input(path: &str, max_bytes: usize, stdin: &mut dyn Read) -> Result<Input, InputError> {
    if path == "-" {
        let content = read_text("stdin", stdin, max_bytes, None)?;
        return Ok(Input { content, filename: None, language: None });
    }
    let metadata = fs::metadata(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => InputError::NotFound { path: path.to_owned() },
        _ => InputError::Io { path: path.to_owned(), source: err },
    })?;
    if metadata.is_dir() {
        return Err(InputError::IsDirectory { path: path.to_owned() });
    }
    if metadata.is_file() && metadata.len() > max_bytes as u64 {
        return Err(InputError::TooLarge { path: path.to_owned(), size: metadata.len(), limit: max_bytes });
    }
    let mut file = File::open(path).map_err(|err| InputError::Io { path: path.to_owned(), source: err })?;
    let known_size = metadata.is_file().then_some(metadata.len());
    let content = read_text(path, &mut file, max_bytes, known_size)?;
    Ok(Input { content, filename: Some(path.to_owned()), language: guess_language(path) })
}

/// Reads at most `max_bytes` of text from `reader`.
fn read_text(
    path: &str,
    reader: &mut dyn Read,
    max_bytes: usize,
    known_size: Option<u64>,
) -> Result<String, InputError> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(limit).read_to_end(&mut bytes).map_err(|err| InputError::Io { path: path.to_owned(), source: err })?;
    if bytes.len() > max_bytes {
        // The file grew since its size was checked, or it is a pipe.
        return Err(match known_size {
            Some(size) => {
                InputError::TooLarge { path: path.to_owned(), size: size.max(bytes.len() as u64), limit: max_bytes }
            }
            None => InputError::OverLimit { path: path.to_owned(), limit: max_bytes },
        });
    }
    if bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
        return Err(InputError::Binary { path: path.to_owned() });
    }
    String::from_utf8(bytes).map_err(|_| InputError::Binary { path: path.to_owned() })
}

/// `1048576` → `1 MiB`.
pub fn format_size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The language of a file from its extension (or, for a few, its name), as a hint for the model;
/// `None` when unknown.
pub fn guess_language(path: &str) -> Option<String> {
    let path = Path::new(path);
    let file_name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let by_name = match file_name.as_str() {
        "makefile" | "gnumakefile" => Some("makefile"),
        "dockerfile" | "containerfile" => Some("dockerfile"),
        "cmakelists.txt" => Some("cmake"),
        "gemfile" | "rakefile" => Some("ruby"),
        ".bashrc" | ".bash_profile" | ".profile" | ".zshrc" => Some("shell"),
        _ => None,
    };
    if by_name.is_some() {
        return by_name.map(str::to_owned);
    }
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    let language = match extension.as_str() {
        "rs" => "rust",
        "py" | "pyi" | "pyw" => "python",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "mts" | "cts" | "tsx" => "typescript",
        "go" => "go",
        "java" => "java",
        "kt" | "kts" => "kotlin",
        "scala" | "sc" => "scala",
        "c" | "h" => "c",
        "cpp" | "cc" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "h++" => "cpp",
        "cs" => "csharp",
        "m" => "objective-c",
        "swift" => "swift",
        "rb" => "ruby",
        "php" => "php",
        "pl" | "pm" => "perl",
        "lua" => "lua",
        "r" => "r",
        "dart" => "dart",
        "ex" | "exs" => "elixir",
        "erl" | "hrl" => "erlang",
        "hs" => "haskell",
        "ml" | "mli" => "ocaml",
        "clj" | "cljs" | "cljc" => "clojure",
        "zig" => "zig",
        "nim" => "nim",
        "jl" => "julia",
        "sh" | "bash" | "zsh" | "ksh" => "shell",
        "fish" => "fish",
        "ps1" | "psm1" => "powershell",
        "bat" | "cmd" => "batch",
        "sql" => "sql",
        "html" | "htm" => "html",
        "css" => "css",
        "scss" | "sass" => "scss",
        "vue" => "vue",
        "svelte" => "svelte",
        "json" => "json",
        "yaml" | "yml" => "yaml",
        "toml" => "toml",
        "xml" => "xml",
        "md" | "markdown" => "markdown",
        "tf" => "terraform",
        "proto" => "protobuf",
        "graphql" | "gql" => "graphql",
        "nix" => "nix",
        _ => return None,
    };
    Some(language.to_owned())
}

/// `PATH.orig`, where `--apply` keeps the original.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut backup = OsString::from(path.as_os_str());
    backup.push(".orig");
    PathBuf::from(backup)
}

/// Whether the file at `path` still holds `original`, so that `--apply` does not overwrite edits
/// made while the tool ran.
pub fn is_unchanged(path: &Path, original: &str) -> io::Result<bool> {
    Ok(fs::read(path)? == original.as_bytes())
}

/// Replaces the file at `path` with `contents`, keeping the original as `PATH.orig` (an older
/// backup is replaced), and returns the backup's path.
///
/// The file's permissions (and, where allowed, owner) are kept. A symlink is followed: its
/// target is rewritten and the link stays. The write is atomic: on any error the original is
/// untouched and no temporary file is left behind.
pub fn write_atomic_with_backup(path: &Path, contents: &str) -> io::Result<PathBuf> {
    let target = fs::canonicalize(path)?;
    let metadata = fs::metadata(&target)?;
    if !metadata.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())));
    }
    let dir =
        target.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the file has no directory"))?;
    let mut prefix = OsString::from(".");
    prefix.push(target.file_name().unwrap_or_default());
    prefix.push(".ant-");

    // Dropping `temp` on an early return deletes it.
    let mut temp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempfile_in(dir)?;
    temp.write_all(contents.as_bytes())?;
    temp.as_file().set_permissions(metadata.permissions())?;
    keep_owner(temp.as_file(), &metadata);
    temp.as_file().sync_all()?;

    let backup = backup_path(path);
    match fs::remove_file(&backup) {
        // An old backup may be read-only (a copy of a read-only original): remove, then copy.
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    fs::copy(&target, &backup)?;
    temp.persist(&target).map_err(|err| err.error)?;
    sync_dir(dir);
    Ok(backup)
}

/// Gives the new file the original's owner, best effort: only root may change it, and a file the
/// user owns already has the right owner.
#[cfg(unix)]
fn keep_owner(file: &File, original: &fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    let _ = std::os::unix::fs::fchown(file, Some(original.uid()), Some(original.gid()));
}

#[cfg(not(unix))]
fn keep_owner(_file: &File, _original: &fs::Metadata) {}

/// Makes the rename durable, best effort: not every platform or file system syncs directories.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Result<Input, InputError> {
        read_input(path.to_str().unwrap(), MAX_INPUT_BYTES, &mut io::empty())
    }

    fn error_message(result: Result<Input, InputError>) -> String {
        match result {
            Ok(input) => panic!("read {input:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn reads_a_text_file_with_its_language() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        fs::write(&path, "print('hi')\n").unwrap();
        let input = read(&path).unwrap();
        assert_eq!(input.content, "print('hi')\n");
        assert_eq!(input.filename.as_deref(), path.to_str());
        assert_eq!(input.language.as_deref(), Some("python"));
        assert_eq!(input.display_name(), path.to_str().unwrap());
    }

    #[test]
    fn reads_stdin() {
        let mut stdin: &[u8] = b"fn main() {}\n";
        let input = read_input("-", MAX_INPUT_BYTES, &mut stdin).unwrap();
        assert_eq!(input, Input { content: "fn main() {}\n".into(), filename: None, language: None });
        assert_eq!(input.display_name(), "stdin");
        let input = read_input("-", MAX_INPUT_BYTES, &mut io::empty()).unwrap();
        assert_eq!(input.content, "");
    }

    #[test]
    fn refuses_missing_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.rs");
        assert_eq!(error_message(read(&missing)), format!("no such file: {}", missing.display()));
        assert_eq!(error_message(read(dir.path())), format!("{} is a directory", dir.path().display()));
    }

    #[test]
    fn refuses_binary_content() {
        let dir = tempfile::tempdir().unwrap();
        let nul = dir.path().join("a.out");
        fs::write(&nul, b"ELF\0\x01\x02").unwrap();
        assert_eq!(
            error_message(read(&nul)),
            format!("{} looks binary; Aniate tools work on text files", nul.display())
        );
        let latin1 = dir.path().join("latin1.txt");
        fs::write(&latin1, b"caf\xe9\n").unwrap();
        assert!(error_message(read(&latin1)).ends_with("looks binary; Aniate tools work on text files"));
        let mut stdin: &[u8] = b"\0\0";
        assert_eq!(
            error_message(read_input("-", MAX_INPUT_BYTES, &mut stdin)),
            "stdin looks binary; Aniate tools work on text files"
        );
    }

    #[test]
    fn a_nul_past_the_first_8_kib_is_allowed() {
        // NUL is valid UTF-8, so past the sniffed prefix it is allowed: a text file with a stray
        // NUL deep inside is still text.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.txt");
        let mut content = "a".repeat(BINARY_SNIFF_BYTES);
        content.push('\0');
        fs::write(&path, &content).unwrap();
        assert_eq!(read(&path).unwrap().content, content);
    }

    #[test]
    fn refuses_inputs_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        fs::write(&path, "x".repeat(MAX_INPUT_BYTES + 1)).unwrap();
        assert_eq!(error_message(read(&path)), format!("{} is 1048577 bytes; the limit is 1 MiB", path.display()));
        fs::write(&path, "x".repeat(MAX_INPUT_BYTES)).unwrap();
        assert_eq!(read(&path).unwrap().content.len(), MAX_INPUT_BYTES);

        let big = vec![b'x'; 11];
        assert_eq!(error_message(read_input("-", 10, &mut big.as_slice())), "stdin is over the limit of 10 bytes");
        assert_eq!(read_input("-", 11, &mut big.as_slice()).unwrap().content.len(), 11);
    }

    #[test]
    fn sizes() {
        assert_eq!(format_size(MAX_INPUT_BYTES), "1 MiB");
        assert_eq!(format_size(2048), "2 KiB");
        assert_eq!(format_size(1500), "1500 bytes");
        assert_eq!(format_size(0), "0 bytes");
    }

    #[test]
    fn languages() {
        for (path, language) in [
            ("src/main.rs", Some("rust")),
            ("app.py", Some("python")),
            ("web/index.JS", Some("javascript")),
            ("a.tsx", Some("typescript")),
            ("x.go", Some("go")),
            ("A.java", Some("java")),
            ("lib.c", Some("c")),
            ("lib.cc", Some("cpp")),
            ("lib.hpp", Some("cpp")),
            ("app.rb", Some("ruby")),
            ("run.sh", Some("shell")),
            ("run.bash", Some("shell")),
            ("Makefile", Some("makefile")),
            ("Dockerfile", Some("dockerfile")),
            ("notes.txt", None),
            ("README", None),
            ("archive.tar.gz", None),
            ("", None),
            (".", None),
        ] {
            assert_eq!(guess_language(path).as_deref(), language, "{path}");
        }
    }

    #[test]
    fn apply_writes_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        fs::write(&path, "old\n").unwrap();
        let backup = write_atomic_with_backup(&path, "new\n").unwrap();
        assert_eq!(backup, dir.path().join("app.py.orig"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(fs::read_to_string(&backup).unwrap(), "old\n");

        // A second apply replaces the old backup with the file as it was just before.
        write_atomic_with_backup(&path, "newer\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "newer\n");
        assert_eq!(fs::read_to_string(&backup).unwrap(), "new\n");
        assert_eq!(entries(dir.path()), ["app.py", "app.py.orig"]);
        assert!(is_unchanged(&path, "newer\n").unwrap());
        assert!(!is_unchanged(&path, "new\n").unwrap());
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    #[test]
    fn apply_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o755, 0o444] {
            let path = dir.path().join(format!("script-{mode:o}.sh"));
            fs::write(&path, "echo old\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            // Twice: the second time, the read-only backup of a read-only file is replaced.
            write_atomic_with_backup(&path, "echo new\n").unwrap();
            let backup = write_atomic_with_backup(&path, "echo newer\n").unwrap();
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, mode);
            assert_eq!(fs::read_to_string(&path).unwrap(), "echo newer\n");
            assert_eq!(fs::read_to_string(&backup).unwrap(), "echo new\n");
        }
    }

    #[cfg(unix)]
    #[test]
    fn apply_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.py");
        let link = dir.path().join("link.py");
        fs::write(&real, "old\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let backup = write_atomic_with_backup(&link, "new\n").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new\n");
        assert_eq!(backup, dir.path().join("link.py.orig"));
        assert_eq!(fs::read_to_string(&backup).unwrap(), "old\n");
    }

    #[test]
    fn a_failed_backup_leaves_the_original_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        fs::write(&path, "old\n").unwrap();
        // A directory where the backup goes: removing and copying over it both fail.
        fs::create_dir(dir.path().join("app.py.orig")).unwrap();
        assert!(write_atomic_with_backup(&path, "new\n").is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(entries(dir.path()), ["app.py", "app.py.orig"]);
    }

    #[test]
    fn apply_refuses_missing_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write_atomic_with_backup(&dir.path().join("nope"), "x").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(write_atomic_with_backup(dir.path(), "x").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_directory_leaves_the_original_intact() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("ro");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("app.py");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores directory permissions; then there is nothing to test.
        let writable_anyway = File::create(sub.join("probe")).is_ok();
        if !writable_anyway {
            assert_eq!(write_atomic_with_backup(&path, "new\n").unwrap_err().kind(), io::ErrorKind::PermissionDenied);
            assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
            assert_eq!(entries(&sub), ["app.py"]);
        }
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
