//! Finding the daemons a test (or the bench) started, so that none outlives it.

use std::path::Path;

/// The `aniated` processes started for `home`, found by their environment.
pub fn daemons_of(home: &Path) -> Vec<u32> {
    let needle = format!("ANIATE_HOME={}\0", home.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let is_daemon = std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim() == "aniated");
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if is_daemon && environ.windows(needle.len()).any(|window| window == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}
