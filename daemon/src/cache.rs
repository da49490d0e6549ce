//! The result cache in `state.redb`: an identical request (same tool and version, same
//! content, instructions, file name and language) within the TTL is answered locally.
//!
//! redb is an embedded, crash-safe key-value store (chosen over sled, whose stable line is
//! unmaintained). Keys are SHA-256 digests of the request; values are JSON [`Entry`]s. The cache
//! holds at most [`MAX_ENTRIES`]; inserting past that evicts the oldest.

use std::{path::Path, sync::Arc};

use aniate_proto::{event::Done, ipc::RunToolParams};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results");

/// At most this many cached results.
pub const MAX_ENTRIES: u64 = 512;

/// A cached answer: its full text and its `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub stored_at_ms: u64,
    pub tool: String,
    pub version: i64,
    pub model: String,
    pub text: String,
    pub done: Done,
}

#[derive(Debug, Clone)]
pub struct ResultCache {
    db: Arc<Database>,
}

#[derive(Debug, thiserror::Error)]
#[error("result cache: {0}")]
pub struct CacheError(String);

fn err(e: impl std::fmt::Display) -> CacheError {
    CacheError(e.to_string())
}

/// The cache key of a run of `version` of a tool.
pub fn key(params: &RunToolParams, version: i64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // Length-prefixed fields, so that moving bytes between fields changes the key.
    for field in [
        params.tool.as_bytes(),
        &version.to_le_bytes(),
        params.content.as_bytes(),
        params.instructions.as_deref().unwrap_or("").as_bytes(),
        params.filename.as_deref().unwrap_or("").as_bytes(),
        params.language.as_deref().unwrap_or("").as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

impl ResultCache {
    pub fn open(path: &Path) -> Result<ResultCache, CacheError> {
        let db = Database::create(path).map_err(err)?;
        crate::fsutil::make_private(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(RESULTS).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(ResultCache { db: Arc::new(db) })
    }

    /// The entry under `key` if it is younger than `ttl_ms`.
    pub fn get(&self, key: &[u8; 32], ttl_ms: u64, now_ms: u64) -> Result<Option<Entry>, CacheError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(RESULTS).map_err(err)?;
        let Some(value) = table.get(key.as_slice()).map_err(err)? else { return Ok(None) };
        let entry: Entry = match serde_json::from_slice(value.value()) {
            Ok(entry) => entry,
            Err(_) => return Ok(None),
        };
        Ok((now_ms.saturating_sub(entry.stored_at_ms) < ttl_ms).then_some(entry))
    }

    /// Stores an entry. The commit is not synced to disk (a cache may lose its last entries in
    /// a crash, and a sync per answer would cost milliseconds); [`ResultCache::flush`] syncs.
    pub fn put(&self, key: &[u8; 32], entry: &Entry) -> Result<(), CacheError> {
        let value = serde_json::to_vec(entry).map_err(err)?;
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::None).map_err(err)?;
        {
            let mut table = txn.open_table(RESULTS).map_err(err)?;
            table.insert(key.as_slice(), value.as_slice()).map_err(err)?;
            let len = table.len().map_err(err)?;
            if len > MAX_ENTRIES {
                let mut ages: Vec<(u64, Vec<u8>)> = Vec::with_capacity(len as usize);
                for item in table.iter().map_err(err)? {
                    let (k, v) = item.map_err(err)?;
                    let stored = serde_json::from_slice::<Entry>(v.value()).map(|e| e.stored_at_ms).unwrap_or(0);
                    ages.push((stored, k.value().to_vec()));
                }
                ages.sort();
                for (_, old_key) in ages.iter().take((len - MAX_ENTRIES) as usize) {
                    table.remove(old_key.as_slice()).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)?;
        Ok(())
    }

    /// Makes every stored entry durable; the daemon calls it when it stops.
    pub fn flush(&self) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.commit().map_err(err)
    }

    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }

    pub fn len(&self) -> Result<u64, CacheError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(RESULTS).map_err(err)?.len().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use aniate_proto::event::Usage;

    use super::*;

    fn entry(stored_at_ms: u64) -> Entry {
        Entry {
            stored_at_ms,
            tool: "what".into(),
            version: 1,
            model: "m".into(),
            text: "answer".into(),
            done: Done { usage: Usage::default(), finish_reason: "stop".into(), result: None },
        }
    }

    #[test]
    fn keys_separate_fields_and_versions() {
        let a = RunToolParams { tool: "what".into(), content: "ab".into(), ..Default::default() };
        let b = RunToolParams {
            tool: "what".into(),
            content: "a".into(),
            instructions: Some("b".into()),
            ..Default::default()
        };
        assert_ne!(key(&a, 1), key(&b, 1));
        assert_ne!(key(&a, 1), key(&a, 2));
        let fresh = RunToolParams { fresh: true, ..a.clone() };
        assert_eq!(key(&a, 1), key(&fresh, 1), "--fresh is not part of the request");
    }

    #[test]
    fn ttl_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        let params = RunToolParams { tool: "what".into(), ..Default::default() };
        let k = key(&params, 1);
        cache.put(&k, &entry(1_000)).unwrap();
        assert_eq!(cache.get(&k, 500, 1_400).unwrap(), Some(entry(1_000)));
        assert_eq!(cache.get(&k, 500, 1_600).unwrap(), None);
        for n in 0..MAX_ENTRIES + 5 {
            let params = RunToolParams { tool: "what".into(), content: n.to_string(), ..Default::default() };
            cache.put(&key(&params, 1), &entry(2_000 + n)).unwrap();
        }
        assert_eq!(cache.len().unwrap(), MAX_ENTRIES);
        assert_eq!(cache.get(&k, u64::MAX, 3_000).unwrap(), None, "the oldest entry was evicted");
        cache.flush().unwrap();
        drop(cache);
        let reopened = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        assert_eq!(reopened.len().unwrap(), MAX_ENTRIES, "entries survive a restart");
    }
}
