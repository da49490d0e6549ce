//! The installed tools: `tools/<slug>.json` on disk, mirrored in memory.
//!
//! The files are the truth (the user may delete one by hand; another daemon version may write
//! one); the daemon reloads them when they change. A corrupt file is skipped with a warning.

use std::{collections::BTreeMap, sync::RwLock};

use aniate_proto::{ipc::InstalledTool, tool::ToolMeta, tool::is_valid_slug};

use crate::{fsutil::write_atomic, home::Home};

#[derive(Debug)]
pub struct ToolStore {
    home: Home,
    tools: RwLock<BTreeMap<String, InstalledTool>>,
}

impl ToolStore {
    /// Loads the tools dir; returns the store and a warning per file that could not be read.
    pub fn load(home: &Home) -> (ToolStore, Vec<String>) {
        let store = ToolStore { home: home.clone(), tools: RwLock::new(BTreeMap::new()) };
        let warnings = store.reload();
        (store, warnings)
    }

    /// Re-reads every `tools/*.json`, keeping in-memory update marks of tools whose version
    /// did not change.
    pub fn reload(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut tools = BTreeMap::new();
        let entries = match std::fs::read_dir(self.home.tools_dir()) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                *self.write() = tools;
                return warnings;
            }
            Err(err) => return vec![format!("cannot read {}: {err}", self.home.tools_dir().display())],
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(slug) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_valid_slug(slug) {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|err| err.to_string())
                .and_then(|bytes| serde_json::from_slice::<ToolMeta>(&bytes).map_err(|err| err.to_string()));
            match parsed {
                Ok(meta) if meta.slug == slug => {
                    tools.insert(slug.to_owned(), InstalledTool { meta, update_available: None });
                }
                Ok(meta) => warnings.push(format!("ignoring {}: it describes tool `{}`", path.display(), meta.slug)),
                Err(err) => warnings.push(format!("ignoring corrupt {}: {err}", path.display())),
            }
        }
        let mut current = self.write();
        for (slug, tool) in &mut tools {
            if let Some(old) = current.get(slug)
                && old.meta.version == tool.meta.version
            {
                tool.update_available = old.update_available;
            }
        }
        *current = tools;
        warnings
    }

    pub fn get(&self, slug: &str) -> Option<InstalledTool> {
        self.read().get(slug).cloned()
    }

    pub fn list(&self) -> Vec<InstalledTool> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Writes `tools/<slug>.json` atomically, then updates memory.
    pub fn install(&self, meta: &ToolMeta) -> std::io::Result<()> {
        if !is_valid_slug(&meta.slug) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid slug `{}`", meta.slug)));
        }
        let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        self.home.ensure().map_err(std::io::Error::other)?;
        write_atomic(&self.home.tool_path(&meta.slug), &json, 0o600)?;
        self.write().insert(meta.slug.clone(), InstalledTool { meta: meta.clone(), update_available: None });
        Ok(())
    }

    /// Removes a tool; false if it was not installed.
    pub fn uninstall(&self, slug: &str) -> std::io::Result<bool> {
        if !is_valid_slug(slug) {
            return Ok(false);
        }
        let removed = match std::fs::remove_file(self.home.tool_path(slug)) {
            Ok(()) => true,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
            Err(err) => return Err(err),
        };
        Ok(self.write().remove(slug).is_some() || removed)
    }

    /// Records which installed tools the server has a newer version of.
    pub fn mark_updates(&self, server_tools: &[ToolMeta]) {
        let mut tools = self.write();
        for tool in tools.values_mut() {
            tool.update_available = server_tools
                .iter()
                .find(|server| server.slug == tool.meta.slug)
                .map(|server| server.version)
                .filter(|version| *version > tool.meta.version);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, InstalledTool>> {
        self.tools.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, InstalledTool>> {
        self.tools.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use aniate_proto::tool::OutputKind;

    use super::*;

    pub fn meta(slug: &str, version: i64) -> ToolMeta {
        ToolMeta {
            slug: slug.into(),
            name: slug.into(),
            description: "d".into(),
            model: "m".into(),
            requires_file: false,
            output: OutputKind::Text,
            version,
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn install_reload_uninstall_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let (store, warnings) = ToolStore::load(&home);
        assert!(warnings.is_empty() && store.is_empty());
        store.install(&meta("fix", 1)).unwrap();
        store.install(&meta("what", 2)).unwrap();
        std::fs::write(home.tool_path("broken"), "{not json").unwrap();
        std::fs::write(home.tools_dir().join("notes.txt"), "x").unwrap();
        let (again, warnings) = ToolStore::load(&home);
        assert_eq!(again.list().iter().map(|t| t.meta.slug.as_str()).collect::<Vec<_>>(), ["fix", "what"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("broken.json"), "{warnings:?}");
        again.mark_updates(&[meta("fix", 3), meta("what", 2)]);
        assert_eq!(again.get("fix").unwrap().update_available, Some(3));
        assert_eq!(again.get("what").unwrap().update_available, None);
        assert!(again.uninstall("fix").unwrap());
        assert!(!again.uninstall("fix").unwrap());
        assert!(!again.uninstall("../etc").unwrap());
        assert!(!home.tool_path("fix").exists());
        assert!(store.install(&meta("../x", 1)).is_err());
    }
}
