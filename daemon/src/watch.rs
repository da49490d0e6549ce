//! Reloads the engine when `config.toml`, `credentials` or `tools/*.json` change on disk (a
//! user editing the config, another program installing a tool), debounced.

use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::engine::Engine;

/// Watches the home; the returned watcher must be kept alive.
pub fn spawn(engine: &Engine) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let home = engine.home().clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
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
