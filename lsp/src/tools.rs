//! The installed tools, read from `$ANIATE_HOME/tools/*.json` (a local read: no daemon, no
//! network) and read again when that directory changes, so a tool installed, updated or
//! removed with `ant` shows up in the editor without a restart.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use aniate_proto::tool::ToolMeta;
use aniated::{home::Home, store::ToolStore};
use notify::{RecursiveMode, Watcher};

/// A snapshot of the installed tools, by slug. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tools {
    home: Home,
    current: Arc<RwLock<Arc<Vec<ToolMeta>>>>,
}

impl Tools {
    pub fn new(home: Home) -> Tools {
        Tools { home, current: Arc::new(RwLock::new(Arc::new(Vec::new()))) }
    }

    /// The installed tools, sorted by slug.
    pub fn list(&self) -> Arc<Vec<ToolMeta>> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn get(&self, slug: &str) -> Option<ToolMeta> {
        self.list().iter().find(|tool| tool.slug == slug).cloned()
    }

    /// Reads the tools directory again; returns a warning per file that could not be read.
    pub fn reload(&self) -> Vec<String> {
        let (store, warnings) = ToolStore::load(&self.home);
        let tools: Vec<ToolMeta> = store.list().into_iter().map(|tool| tool.meta).collect();
        tracing::debug!(n_tools = tools.len(), "installed tools read");
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tools);
        warnings
    }

    /// Reloads on every change of the tools directory (debounced) for as long as the returned
    /// watcher lives. The directory is created if missing, so it can be watched.
    pub fn watch(&self) -> notify::Result<notify::RecommendedWatcher> {
        let dir = self.home.tools_dir();
        if let Err(err) = self.home.ensure() {
            tracing::warn!(cause = %err, "cannot create the tools directory");
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let relevant = event.paths.iter().any(|path| {
                path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.ends_with(".json"))
            });
            if relevant {
                // A full channel means a reload is already queued.
                let _ = tx.try_send(());
            }
        })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let tools = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a burst of writes (an install of several tools) settle, then read once.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while rx.try_recv().is_ok() {}
                for warning in tools.reload() {
                    tracing::warn!("{warning}");
                }
            }
        });
        Ok(watcher)
    }

    /// Without a watcher (the platform refused one), reads the directory every two seconds.
    pub fn poll(&self) {
        let tools = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tools.reload();
            }
        });
    }
}
