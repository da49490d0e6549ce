//! In-memory caches of what every request reads and rarely changes: a token's user and an
//! active tool. They keep the database off the run path.
//!
//! Staleness is bounded by generations: every change a cache depends on goes through a `Db`
//! method that drops this process's cache at once and bumps a counter in `cache_generations`.
//! Every server polls those counters ([`Db::watch_caches`], every [`POLL_INTERVAL`]) and drops
//! its cache when one moved, so a change made by another replica, or by `ant-server admin` in
//! another process, is seen within [`POLL_INTERVAL`] plus one query. An entry is also never
//! older than [`MAX_AGE`], in case polling fails.
//!
//! A fill races a change: a request reads a row, a change lands, then the request caches what
//! it read. Each cache counts its invalidations, and a fill only lands if the count did not
//! move since before the read ([`Cache::epoch`], [`Cache::insert`]).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{Db, DbResult, StoredTool, TokenUser};

/// How often a server polls `cache_generations`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The oldest an entry may be, whatever polling says.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// The caches are used only while the last successful poll started less than this long ago:
/// a poll that hangs (a database gone slow or away) must not stretch how stale they may be.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Entries per cache; a full cache is emptied rather than grown. Only rows that exist are
/// cached (no negative entries), so unknown tokens cannot fill it.
const MAX_ENTRIES: usize = 16 * 1024;

/// Which cache a change invalidates; the names are the rows of `cache_generations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Tokens, and the users they belong to (role, plan, disabled).
    Auth,
    /// The tool registry.
    Tools,
}

impl Generation {
    pub const ALL: [Generation; 2] = [Generation::Auth, Generation::Tools];

    pub fn name(self) -> &'static str {
        match self {
            Generation::Auth => "auth",
            Generation::Tools => "tools",
        }
    }
}

/// One map of cached rows.
#[derive(Debug)]
pub struct Cache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    /// How many times the cache was dropped.
    epoch: AtomicU64,
    /// The generation in `cache_generations` this cache was last brought up to.
    seen_generation: AtomicI64,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn new() -> Cache<K, V> {
        Cache {
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            seen_generation: AtomicI64::new(i64::MIN),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic while holding the lock leaves a map that is still consistent (each operation
        // is one insert, remove or clear), so a poisoned lock is used as is.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entries = self.lock();
        let (value, at) = entries.get(key)?;
        (at.elapsed() < MAX_AGE).then(|| value.clone())
    }

    /// The count to pass to [`Cache::insert`]: read it before reading the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches `value` unless the cache was dropped since `epoch` was read.
    pub fn insert(&self, epoch: u64, key: K, value: V) {
        let mut entries = self.lock();
        // Checked under the lock: `clear` bumps the epoch under it too.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Changes a cached value in place (a token's last use), if it is cached.
    pub fn update<Q>(&self, key: &Q, change: impl FnOnce(&mut V))
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Some((value, _)) = self.lock().get_mut(key) {
            change(value);
        }
    }

    pub fn clear(&self) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Drops the cache if `generation` is not the one it was brought up to.
    fn observe(&self, generation: i64) {
        if self.seen_generation.swap(generation, Ordering::AcqRel) != generation {
            self.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The caches of one server process.
#[derive(Debug)]
pub struct Caches {
    /// Token hash → its unrevoked token and user.
    pub tokens: Cache<String, TokenUser>,
    /// Slug → the active tool.
    pub tools: Cache<String, StoredTool>,
    /// When the last successful poll of `cache_generations` started.
    synced_at: Mutex<Option<Instant>>,
}

impl Caches {
    pub fn new() -> Caches {
        Caches { tokens: Cache::new(), tools: Cache::new(), synced_at: Mutex::new(None) }
    }

    fn clear(&self, generation: Generation) {
        match generation {
            Generation::Auth => self.tokens.clear(),
            Generation::Tools => self.tools.clear(),
        }
    }
}

impl Default for Caches {
    fn default() -> Caches {
        Caches::new()
    }
}

impl Db {
    /// Drops this process's cache of `generation` and tells the other servers to drop theirs.
    /// Called by every `Db` method that changes what the cache holds, after the change.
    pub(super) async fn invalidate(&self, generation: Generation) -> DbResult<()> {
        self.caches.clear(generation);
        sqlx::query("UPDATE cache_generations SET generation = generation + 1 WHERE name = $1")
            .bind(generation.name())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Polls `cache_generations` once and drops every cache whose generation moved.
    pub async fn sync_caches(&self) -> DbResult<()> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, generation FROM cache_generations").fetch_all(&self.pool).await?;
        for (name, generation) in rows {
            match Generation::ALL.into_iter().find(|g| g.name() == name) {
                Some(Generation::Auth) => self.caches.tokens.observe(generation),
                Some(Generation::Tools) => self.caches.tools.observe(generation),
                None => {}
            }
        }
        Ok(())
    }

    /// Keeps this process's caches in step with changes made elsewhere until `stop` resolves.
    /// Until it has polled once, whenever a poll fails, and when no poll has succeeded for
    /// [`FRESH_FOR`], caching is off: a server that cannot see changes must not serve from
    /// memory.
    pub async fn watch_caches(&self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            match self.sync_caches().await {
                Ok(()) => {
                    *self.caches.synced_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(started);
                    self.caches_enabled.store(true, Ordering::Release);
                }
                Err(err) => {
                    if self.caches_enabled.swap(false, Ordering::AcqRel) {
                        tracing::warn!(cause = %err, "cannot poll cache generations; caching is off until it can");
                    }
                    for generation in Generation::ALL {
                        self.caches.clear(generation);
                    }
                }
            }
        }
        self.caches_enabled.store(false, Ordering::Release);
    }

    /// Whether the caches may be read and filled: only while [`Db::watch_caches`] runs.
    pub(super) fn caching(&self) -> bool {
        self.caches_enabled.load(Ordering::Acquire)
            && self
                .caches
                .synced_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() < FRESH_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_raced_a_clear_is_dropped() {
        let cache: Cache<String, i32> = Cache::new();
        let epoch = cache.epoch();
        cache.clear();
        cache.insert(epoch, "a".to_owned(), 1);
        assert_eq!(cache.get(&"a".to_owned()), None);
        let epoch = cache.epoch();
        cache.insert(epoch, "a".to_owned(), 2);
        assert_eq!(cache.get(&"a".to_owned()), Some(2));
    }

    #[test]
    fn a_moved_generation_drops_the_cache_and_a_repeated_one_does_not() {
        let cache: Cache<String, i32> = Cache::new();
        cache.observe(5);
        cache.insert(cache.epoch(), "a".to_owned(), 1);
        cache.observe(5);
        assert_eq!(cache.get(&"a".to_owned()), Some(1));
        cache.observe(6);
        assert_eq!(cache.get(&"a".to_owned()), None);
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache: Cache<usize, usize> = Cache::new();
        for n in 0..MAX_ENTRIES + 10 {
            cache.insert(cache.epoch(), n, n);
        }
        assert_eq!(cache.len(), 10);
    }
}
