//! The result cache in `state.redb`: an identical request (same tool and version, same
//! content, instructions, file name and language) within the TTL is answered locally.
//!
//! An answer is only ever served to the login that got it: keys include a digest of the server
//! origin and the token ([`scope`]), and the cache is emptied at every login and logout.
//!
//! redb is an embedded, crash-safe key-value store (chosen over sled, whose stable line is
//! unmaintained). Keys are SHA-256 digests of the request; values are JSON [`Entry`]s. The cache
//! holds at most [`MAX_ENTRIES`]; inserting past that evicts the oldest.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aniate_proto::{event::Done, ipc::RunToolParams};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results");
/// The same keys by age, `(stored_at_ms, key)`, so the oldest is found without reading all.
const AGES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("ages");

/// At most this many cached results.
pub const MAX_ENTRIES: u64 = 512;
/// Memory redb may keep for pages of the cache file.
const CACHE_BYTES: usize = 1024 * 1024;

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
    /// Entries stored since the last sync.
    unsynced: Arc<AtomicU64>,
    /// Entries staged ([`ResultCache::stage`]) and not yet written: lookups see them, so an
    /// answer is in the cache as soon as its `done` has gone out, with no disk on that way.
    staged: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
}

/// Entries between two syncs. redb keeps what non-durable commits wrote in memory until a
/// durable one: with syncs only every 25 s the daemon's memory crept up under load (1.12× over
/// 20,000 soak runs); a sync every 32 entries kept it flat (1.03×). A crash loses at most these.
const SYNC_EVERY: u64 = 32;

#[derive(Debug, thiserror::Error)]
#[error("result cache: {0}")]
pub struct CacheError(String);

fn err(e: impl std::fmt::Display) -> CacheError {
    CacheError(e.to_string())
}

/// When a stored value was stored; 0 (the oldest) if it does not parse.
fn stored_at(value: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct StoredAt {
        stored_at_ms: u64,
    }
    serde_json::from_slice::<StoredAt>(value).map_or(0, |stored| stored.stored_at_ms)
}

/// Whose cache entries these are: a digest of the server origin and the token (a token belongs
/// to one account on one server).
pub fn scope(origin: &str, token: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [origin.as_bytes(), token.as_bytes()] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// The cache key of a run of `version` of a tool, for the login `scope`.
pub fn key(scope: &[u8; 32], params: &RunToolParams, version: i64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // Length-prefixed fields, so that moving bytes between fields changes the key.
    for field in [
        scope.as_slice(),
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
        // redb caches up to 1 GiB of pages by default, which a daemon that should stay small
        // would slowly fill (the soak saw its memory climb with every new entry).
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(err)?;
        crate::fsutil::make_private(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        {
            let results = txn.open_table(RESULTS).map_err(err)?;
            let mut ages = txn.open_table(AGES).map_err(err)?;
            // A cache written before the age index existed: build it once.
            if ages.is_empty().map_err(err)? {
                for item in results.iter().map_err(err)? {
                    let (key, value) = item.map_err(err)?;
                    ages.insert((stored_at(value.value()), key.value()), ()).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)?;
        Ok(ResultCache { db: Arc::new(db), unsynced: Arc::default(), staged: Arc::default() })
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.staged.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry under `key` if it is younger than `ttl_ms`: a staged one, else a stored one.
    pub fn get(&self, key: &[u8; 32], ttl_ms: u64, now_ms: u64) -> Result<Option<Entry>, CacheError> {
        if let Some(entry) = self.staged().get(key) {
            return Ok((now_ms.saturating_sub(entry.stored_at_ms) < ttl_ms).then(|| entry.clone()));
        }
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(RESULTS).map_err(err)?;
        let Some(value) = table.get(key.as_slice()).map_err(err)? else { return Ok(None) };
        let entry: Entry = match serde_json::from_slice(value.value()) {
            Ok(entry) => entry,
            Err(_) => return Ok(None),
        };
        Ok((now_ms.saturating_sub(entry.stored_at_ms) < ttl_ms).then_some(entry))
    }

    /// Stores an entry. The commit is not synced to disk: a sync costs milliseconds, and a put
    /// is on the way to an answer's `done`. Returns whether a sync is due ([`SYNC_EVERY`]
    /// entries since the last): the caller runs [`ResultCache::sync`] off that path, as the daemon
    /// also does every 25 s and when it stops.
    pub fn put(&self, key: &[u8; 32], entry: &Entry) -> Result<bool, CacheError> {
        let value = serde_json::to_vec(entry).map_err(err)?;
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::None).map_err(err)?;
        {
            let mut results = txn.open_table(RESULTS).map_err(err)?;
            let mut ages = txn.open_table(AGES).map_err(err)?;
            if let Some(old) = results.insert(key.as_slice(), value.as_slice()).map_err(err)? {
                ages.remove((stored_at(old.value()), key.as_slice())).map_err(err)?;
            }
            ages.insert((entry.stored_at_ms, key.as_slice()), ()).map_err(err)?;
            while results.len().map_err(err)? > MAX_ENTRIES {
                let Some((oldest, _)) = ages.pop_first().map_err(err)? else { break };
                let old_key = oldest.value().1.to_vec();
                drop(oldest);
                results.remove(old_key.as_slice()).map_err(err)?;
            }
        }
        txn.commit().map_err(err)?;
        Ok((self.unsynced.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(SYNC_EVERY))
    }

    /// Holds `entry` in memory under `key`, where [`ResultCache::get`] finds it at once, until
    /// [`ResultCache::write_staged`] stores it: the daemon stages an answer before its `done`
    /// goes out and writes it after, so no answer waits for the cache.
    pub fn stage(&self, key: [u8; 32], entry: Entry) {
        self.staged().insert(key, entry);
    }

    /// Stores the entry staged under `key`, as [`ResultCache::put`] does, and then lets it go
    /// from memory unless a newer one was staged meanwhile. Nothing if there is none (the cache
    /// was cleared since): `Ok(false)`.
    pub fn write_staged(&self, key: &[u8; 32]) -> Result<bool, CacheError> {
        let Some(entry) = self.staged().get(key).cloned() else { return Ok(false) };
        let written = self.put(key, &entry);
        let mut staged = self.staged();
        if staged.get(key) == Some(&entry) {
            staged.remove(key);
        }
        written
    }

    /// Makes every stored entry durable; the daemon calls it when it stops.
    pub fn flush(&self) -> Result<(), CacheError> {
        self.unsynced.store(0, Ordering::Relaxed);
        let txn = self.db.begin_write().map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Makes the entries stored since the last sync durable, if there are any.
    pub fn sync(&self) -> Result<(), CacheError> {
        if self.unsynced.load(Ordering::Relaxed) == 0 { Ok(()) } else { self.flush() }
    }

    /// Drops every entry, staged or stored, durably.
    pub fn clear(&self) -> Result<(), CacheError> {
        self.staged().clear();
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut results = txn.open_table(RESULTS).map_err(err)?;
            results.retain(|_, _| false).map_err(err)?;
            let mut ages = txn.open_table(AGES).map_err(err)?;
            ages.retain(|_, _| false).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.unsynced.store(0, Ordering::Relaxed);
        Ok(())
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

    const S: [u8; 32] = [7; 32];

    fn entry(stored_at_ms: u64) -> Entry {
        Entry {
            stored_at_ms,
            tool: "what".into(),
            version: 1,
            model: "m".into(),
            text: "answer".into(),
            done: Done {
                usage: Usage::default(),
                finish_reason: "stop".into(),
                result: None,
                result_rejected: None,
                findings_adjusted: None,
            },
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
        assert_ne!(key(&S, &a, 1), key(&S, &b, 1));
        assert_ne!(key(&S, &a, 1), key(&S, &a, 2));
        let fresh = RunToolParams { fresh: true, ..a.clone() };
        assert_eq!(key(&S, &a, 1), key(&S, &fresh, 1), "--fresh is not part of the request");
    }

    #[test]
    fn keys_separate_logins_and_clear_empties() {
        let params = RunToolParams { tool: "what".into(), content: "x".into(), ..Default::default() };
        let a = scope("http://127.0.0.1:1", "token-a");
        assert_ne!(key(&a, &params, 1), key(&scope("http://127.0.0.1:1", "token-b"), &params, 1));
        assert_ne!(key(&a, &params, 1), key(&scope("http://127.0.0.1:2", "token-a"), &params, 1));
        assert_ne!(scope("ab", "c"), scope("a", "bc"));
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        cache.put(&key(&a, &params, 1), &entry(1)).unwrap();
        assert!(!cache.is_empty().unwrap());
        cache.clear().unwrap();
        assert!(cache.is_empty().unwrap());
        assert_eq!(cache.get(&key(&a, &params, 1), u64::MAX, 2).unwrap(), None);
        cache.put(&key(&a, &params, 1), &entry(3)).unwrap();
        assert_eq!(cache.len().unwrap(), 1, "usable after a clear");
    }

    #[test]
    fn ttl_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        let params = RunToolParams { tool: "what".into(), ..Default::default() };
        let k = key(&S, &params, 1);
        cache.put(&k, &entry(1_000)).unwrap();
        assert_eq!(cache.get(&k, 500, 1_400).unwrap(), Some(entry(1_000)));
        assert_eq!(cache.get(&k, 500, 1_600).unwrap(), None);
        for n in 0..MAX_ENTRIES + 5 {
            let params = RunToolParams { tool: "what".into(), content: n.to_string(), ..Default::default() };
            cache.put(&key(&S, &params, 1), &entry(2_000 + n)).unwrap();
        }
        assert_eq!(cache.len().unwrap(), MAX_ENTRIES);
        assert_eq!(cache.get(&k, u64::MAX, 3_000).unwrap(), None, "the oldest entry was evicted");
        cache.sync().unwrap();
        drop(cache);
        let reopened = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        assert_eq!(reopened.len().unwrap(), MAX_ENTRIES, "entries survive a restart");
    }

    #[test]
    fn a_cache_from_before_the_age_index_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            // As an older daemon left it: results only.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut results = txn.open_table(RESULTS).unwrap();
                for n in 0..MAX_ENTRIES {
                    let params = RunToolParams { tool: "what".into(), content: n.to_string(), ..Default::default() };
                    let value = serde_json::to_vec(&entry(10_000 - n)).unwrap();
                    results.insert(key(&S, &params, 1).as_slice(), value.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let cache = ResultCache::open(&path).unwrap();
        let newest = RunToolParams { tool: "what".into(), content: "0".into(), ..Default::default() };
        let oldest =
            RunToolParams { tool: "what".into(), content: (MAX_ENTRIES - 1).to_string(), ..Default::default() };
        cache.put(&key(&S, &RunToolParams { tool: "new".into(), ..Default::default() }, 1), &entry(20_000)).unwrap();
        assert_eq!(cache.len().unwrap(), MAX_ENTRIES);
        assert_eq!(cache.get(&key(&S, &oldest, 1), u64::MAX, 0).unwrap(), None, "the oldest went");
        assert!(cache.get(&key(&S, &newest, 1), u64::MAX, 0).unwrap().is_some());
    }

    #[test]
    fn staged_entries_are_found_at_once_and_cleared_with_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        let params = RunToolParams { tool: "fix".into(), content: "x".into(), ..Default::default() };
        let k = key(&S, &params, 1);
        // Staged: found at once, though not yet in the file.
        cache.stage(k, entry(1_000));
        assert_eq!(cache.get(&k, 10_000, 1_500).unwrap(), Some(entry(1_000)));
        assert_eq!(cache.len().unwrap(), 0);
        // Written: in the file, and no longer held in memory.
        assert!(!cache.write_staged(&k).unwrap());
        assert_eq!(cache.len().unwrap(), 1);
        assert!(cache.staged().is_empty());
        assert_eq!(cache.get(&k, 10_000, 1_500).unwrap(), Some(entry(1_000)));
        // Staged again (a `--fresh` run): the newer answer replaces the stored one.
        cache.stage(k, entry(2_000));
        assert!(!cache.write_staged(&k).unwrap());
        assert_eq!(cache.get(&k, 10_000, 2_500).unwrap(), Some(entry(2_000)));
        // Cleared (a login): the staged entry goes too, and writing it stores nothing.
        cache.stage(k, entry(3_000));
        cache.clear().unwrap();
        assert_eq!(cache.get(&k, 10_000, 3_500).unwrap(), None);
        assert!(!cache.write_staged(&k).unwrap());
        assert!(cache.is_empty().unwrap());
    }

    #[test]
    fn a_sync_is_due_every_32_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::open(&dir.path().join("state.redb")).unwrap();
        let put = |n: u64| {
            let params = RunToolParams { tool: "what".into(), content: n.to_string(), ..Default::default() };
            cache.put(&key(&S, &params, 1), &entry(n)).unwrap()
        };
        let due: Vec<u64> = (1..=70).filter(|&n| put(n)).collect();
        assert_eq!(due, [32, 64]);
        cache.sync().unwrap();
        let due: Vec<u64> = (71..=110).filter(|&n| put(n)).collect();
        assert_eq!(due, [102], "counting starts again after a sync");
    }
}
