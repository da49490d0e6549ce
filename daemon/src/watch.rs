//! Reloads the engine when `config.toml`, `credentials` or `tools/*.json` change on disk (a
//! user editing the config, another program installing a tool), debounced.
//!
//! Only changes count. inotify also reports a file being opened, read and closed, and a reload
//! reads every one of these files: counting those made each reload set off the next, and an idle
//! daemon re-read its home every 50 ms for as long as it ran.

use std::time::Duration;

use notify::{
    EventKind, RecursiveMode, Watcher,
    event::{MetadataKind, ModifyKind},
};

use crate::engine::Engine;

/// Watches the home; the returned watcher must be kept alive.
pub fn spawn(engine: &Engine) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let home = engine.home().clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !is_change(&event.kind) {
            return;
        }
        let relevant = event.paths.iter().any(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "config.toml" || name == "credentials" || (name.ends_with(".json") && !name.starts_with(".tmp-"))
        });
        if relevant {
            // A full channel means a reload is already queued.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&home.root, RecursiveMode::NonRecursive)?;
    watcher.watch(&home.tools_dir(), RecursiveMode::NonRecursive)?;
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

/// Whether an event may have changed a file's contents: not an open, a read, a close after
/// reading, or a new access time.
fn is_change(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)))
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn opening_and_reading_are_not_changes() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            // A write also comes as `Modify(Data)`, so its close adds nothing.
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!is_change(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            // An atomic write: a temporary file renamed over the old one.
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(is_change(&kind), "{kind:?}");
        }
    }
}
