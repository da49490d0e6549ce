//! Reloads the engine when `config.toml`, `credentials` or `tools/*.json` change on disk (a
//! user editing the config, another program installing a tool), debounced.
//!
//! Only changes count. inotify also reports a file being opened, read and closed, and a reload
//! reads every one of these files: counting those made each reload set off the next, and an idle
//! daemon re-read its home every 50 ms for as long as it ran.
//!
//! On Linux the watch asks inotify for changes only (a file written and closed, renamed in or
//! out, deleted), so nothing else wakes it: not `ant` reading `tools/SLUG.json` on every run, not
//! the daemon's own log (`aniated.log`) or result cache (`state.redb`), which live in the same
//! directory and are written while open. The `notify` crate watches every open and every write
//! there, and with `ANIATE_LOG=trace` its own log line about each one was another write: the
//! daemon spun on its log. Elsewhere `notify` watches, and what is not a change is dropped after
//! the fact.

use std::time::Duration;

use crate::{engine::Engine, home::Home};

/// Watches the home; the returned watcher must be kept alive.
pub fn spawn(engine: &Engine) -> std::io::Result<Watcher> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = watch_home(engine.home(), move || {
        // A full channel means a reload is already queued.
        let _ = tx.try_send(());
    })?;
    let engine = engine.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let a burst of writes settle, then reload once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            tracing::debug!("files changed; reloading");
            engine.reload();
        }
    });
    Ok(watcher)
}

/// Whether a file of the home by this name is one a reload reads.
fn is_watched_name(name: &str) -> bool {
    name == "config.toml" || name == "credentials" || (name.ends_with(".json") && !name.starts_with(".tmp-"))
}

/// Watches the home's root and its tools directory; `changed` runs (on the watch's thread)
/// whenever a file a reload reads may have changed.
#[cfg(target_os = "linux")]
pub fn watch_home(home: &Home, changed: impl Fn() + Send + 'static) -> std::io::Result<Watcher> {
    use inotify::{EventMask, Inotify, WatchMask};

    let mut inotify = Inotify::init()?;
    // CREATE for a link made in place (`ln -s … config.toml`), which is all that reports one.
    let mask =
        WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM | WatchMask::DELETE | WatchMask::CREATE;
    let mut watches = inotify.watches();
    let descriptors = [watches.add(&home.root, mask)?, watches.add(home.tools_dir(), mask)?];
    std::thread::Builder::new().name("aniated-watch".to_owned()).spawn(move || {
        let mut buffer = [0; 4096];
        let mut ignored = 0;
        // Until both watches are removed (the watcher dropped, or the directories deleted).
        while ignored < 2 {
            let events = match inotify.read_events_blocking(&mut buffer) {
                Ok(events) => events,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(cause = %err, "stopped watching files; restart the daemon after editing them");
                    return;
                }
            };
            let mut relevant = false;
            for event in events {
                ignored += usize::from(event.mask.contains(EventMask::IGNORED));
                // Events were dropped: anything may have changed.
                relevant |= event.mask.contains(EventMask::Q_OVERFLOW);
                relevant |= event.name.and_then(|name| name.to_str()).is_some_and(is_watched_name);
            }
            if relevant {
                changed();
            }
        }
    })?;
    Ok(Watcher { watches, descriptors })
}

/// Watches the home's root and its tools directory; `changed` runs (on the watch's thread)
/// whenever a file a reload reads may have changed.
#[cfg(not(target_os = "linux"))]
pub fn watch_home(home: &Home, changed: impl Fn() + Send + 'static) -> std::io::Result<Watcher> {
    use notify::Watcher as _;

    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant =
            event.paths.iter().any(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(is_watched_name));
        if is_change(&event.kind) && relevant {
            changed();
        }
    })
    .map_err(std::io::Error::other)?;
    watcher.watch(&home.root, notify::RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
    watcher.watch(&home.tools_dir(), notify::RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
    Ok(Watcher(watcher))
}

/// A watch of the home; dropping it ends the watch.
#[cfg(target_os = "linux")]
pub struct Watcher {
    watches: inotify::Watches,
    descriptors: [inotify::WatchDescriptor; 2],
}

#[cfg(target_os = "linux")]
impl Drop for Watcher {
    fn drop(&mut self) {
        for descriptor in self.descriptors.clone() {
            // Its thread reads that each is gone (`IN_IGNORED`), and ends.
            let _ = self.watches.remove(descriptor);
        }
    }
}

/// A watch of the home; dropping it ends the watch.
#[cfg(not(target_os = "linux"))]
pub struct Watcher(#[allow(dead_code)] notify::RecommendedWatcher);

/// Whether an event may have changed a file's contents: not an open, a read, a close after
/// reading, or a new access time.
#[cfg(not(target_os = "linux"))]
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{MetadataKind, ModifyKind};

    !matches!(
        kind,
        notify::EventKind::Access(_) | notify::EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// What wakes the watch: a change to a file a reload reads, and nothing else; on Linux not
    /// even the watch's thread wakes for a read of a tool or a write to the daemon's log or cache.
    #[test]
    fn only_changes_to_the_files_a_reload_reads_count() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.ensure().unwrap();
        std::fs::write(home.tool_path("what"), "{}").unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&changes);
        let watcher = watch_home(&home, move || {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        let settle = || std::thread::sleep(Duration::from_millis(100));
        // The thread names itself once it runs: wait for it (and for it to wait on inotify).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cfg!(target_os = "linux") && watch_thread_wakes().is_none() {
            assert!(std::time::Instant::now() < deadline, "no watch thread");
            std::thread::sleep(Duration::from_millis(5));
        }
        settle();
        let wakes = watch_thread_wakes();

        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(home.log_path()).unwrap();
        for n in 0..50 {
            std::fs::read(home.tool_path("what")).unwrap();
            std::io::Write::write_all(&mut log, format!("line {n}\n").as_bytes()).unwrap();
            // Apart, so that a watch that woke for them would wake for each.
            std::thread::sleep(Duration::from_millis(2));
        }
        settle();
        assert_eq!(changes.load(Ordering::Relaxed), 0, "reads and log lines are not changes");
        if cfg!(target_os = "linux") {
            let (before, after) =
                (wakes.expect("the watch's thread"), watch_thread_wakes().expect("the watch's thread"));
            assert!(after - before <= 1, "the watch's thread woke {} times for reads and log lines", after - before);
        }

        std::fs::write(home.root.join("config.toml"), "cache_ttl_secs = 30\n").unwrap();
        settle();
        assert!(changes.load(Ordering::Relaxed) >= 1, "an edit of config.toml is a change");
        let edited = changes.load(Ordering::Relaxed);
        // An atomic write, as `ant install` makes one: a temporary file renamed over the tool.
        let temporary = home.tools_dir().join(".tmp-what.json");
        std::fs::write(&temporary, "{\"v\": 2}").unwrap();
        std::fs::rename(&temporary, home.tool_path("what")).unwrap();
        settle();
        assert!(changes.load(Ordering::Relaxed) > edited, "a tool renamed into place is a change");
        let renamed = changes.load(Ordering::Relaxed);
        std::fs::remove_file(home.tool_path("what")).unwrap();
        settle();
        assert!(changes.load(Ordering::Relaxed) > renamed, "a removed tool is a change");
        #[cfg(unix)]
        {
            let removed = changes.load(Ordering::Relaxed);
            std::os::unix::fs::symlink(dir.path().join("elsewhere.toml"), home.root.join("credentials")).unwrap();
            settle();
            assert!(changes.load(Ordering::Relaxed) > removed, "a link made in place is a change");
        }
        drop(watcher);
    }

    /// Voluntary context switches of this process's watch thread (Linux), `None` elsewhere.
    fn watch_thread_wakes() -> Option<u64> {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        tasks.flatten().find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if comm.trim() != "aniated-watch" {
                return None;
            }
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            status.lines().find_map(|line| line.strip_prefix("voluntary_ctxt_switches:")?.trim().parse().ok())
        })
    }
}
