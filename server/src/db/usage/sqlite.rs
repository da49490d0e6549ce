//! The usage rows' own connection on a SQLite file: the usage writer's, and where a run writes
//! its quota reservation itself, at once, when the connection is free.
//!
//! Through the usage writer on a pooled sqlx connection, a lone reservation took four
//! hand-overs between threads on its way to a run's first token (to the writer's task, to
//! sqlx's worker thread for the connection, and back twice), each the wake-up of a sleeping
//! thread, which on a small virtual machine cost more than the statement. This connection is
//! rusqlite's, with no worker thread, behind a mutex:
//!
//! - A run takes it only if it is free, and only if SQLite's write lock is free too (its busy
//!   timeout is zero): it never waits for anyone. Otherwise the reservation goes to the usage
//!   writer, as every reservation did before.
//! - The usage writer writes its batches on it too, so it stays the process's one writer of
//!   usage rows and keeps its page cache (SQLite drops a connection's cache whenever another
//!   has written). A batch that finds the connection in use yields to other tasks, and one
//!   that finds the write lock held (another process on the same file) waits for it in timer
//!   sleeps, not in SQLite's busy handler, so it blocks no thread either.
//!
//! The price: the statements run on the runtime thread that writes them, a run's reservation
//! (tens of µs) or a writer's batch (up to 256 rows). The WAL checkpoint, which SQLite would
//! run (with an `fsync`) inside the commit that took the WAL past 1,000 pages, is left to a
//! pooled sqlx connection every [`CHECKPOINT_EVERY`] commits instead.
//!
//! What makes a reservation exact, here as through the writer, is that it is one statement,
//! which holds SQLite's write lock from its read to its insert, whichever connection runs it.

use std::{
    path::Path,
    sync::{
        Mutex, TryLockError,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use rusqlite::{OptionalExtension, ToSql};

use super::{
    CREATE_MONTH, MONTH_ROW, MonthTotals, RESERVATION_INSERT, ReservationValues, SETTLE_MONTH, SETTLE_RUN, Settlement,
    TokenReservation, to_i64,
};
use crate::db::{DbError, DbResult};

/// How long a batch waits for another process to let go of SQLite's write lock: the pool's
/// `busy_timeout`.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The usage rows' own SQLite connection (module docs).
pub(in crate::db) struct SqliteUsage {
    /// `None` once the database is closed ([`SqliteUsage::close`]).
    conn: Mutex<Option<rusqlite::Connection>>,
    /// Where the WAL is checkpointed: on one of the pool's connections, on sqlx's worker thread
    /// for it, rather than here on a runtime thread (see [`SqliteUsage::committed`]).
    pool: sqlx::AnyPool,
    /// Commits on this connection since the last checkpoint was started.
    commits: AtomicU32,
}

/// Commits on [`SqliteUsage`] between two WAL checkpoints: a lone reservation appends 5 or 6
/// pages (its row and its indexes), so the WAL stays under SQLite's own threshold of 1,000
/// pages: about 2.2 MB between two checkpoints. A checkpoint that overlaps the commits after
/// it does not let SQLite restart the WAL, so the WAL grows on until one finishes in a quiet
/// moment (`the_wal_is_checkpointed_by_the_pool`: 2.5 MB over 2,000 reservations on an idle
/// machine, 4.3 MB once on a loaded one, 44 MB with no checkpoint).
const CHECKPOINT_EVERY: u32 = 100;

impl std::fmt::Debug for SqliteUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteUsage")
    }
}

impl SqliteUsage {
    /// Opens the database file, whose schema is already migrated, with the pool's settings but
    /// a busy timeout of zero: a held write lock is an answer, not a wait.
    ///
    /// It never checkpoints the WAL itself (`wal_autocheckpoint = 0`): a commit that passed
    /// SQLite's threshold would checkpoint, with an `fsync`, on the runtime thread that made it.
    pub(in crate::db) fn open(path: &Path, pool: sqlx::AnyPool) -> rusqlite::Result<SqliteUsage> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA cache_size = -512; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.busy_timeout(Duration::ZERO)?;
        Ok(SqliteUsage { conn: Mutex::new(Some(conn)), pool, commits: AtomicU32::new(0) })
    }

    /// Counts a commit, and every [`CHECKPOINT_EVERY`] commits starts a passive checkpoint of
    /// the WAL on a pooled connection (it copies what no reader still needs into the database
    /// file, so that the next writer can start the WAL over).
    fn committed(&self) {
        if self.commits.fetch_add(1, Ordering::Relaxed) + 1 < CHECKPOINT_EVERY {
            return;
        }
        self.commits.store(0, Ordering::Relaxed);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::debug!(cause = %err, "WAL checkpoint failed");
            }
        });
    }

    /// Writes a run's reservation now if neither the connection nor SQLite's write lock is
    /// taken: the new row's id, or `None` when the plan refuses it. `None` (nothing written)
    /// when it cannot be written without waiting.
    pub(in crate::db) fn try_reserve(&self, reservation: &TokenReservation) -> Option<DbResult<Option<i64>>> {
        let guard = self.conn.try_lock().ok()?;
        let written = reserve(guard.as_ref()?, reservation);
        drop(guard);
        match written {
            Err(err) if is_busy(&err) => None,
            written => {
                if let Ok(Some(_)) = written {
                    self.committed();
                }
                Some(written.map_err(DbError::from))
            }
        }
    }

    /// The usage writer's batch (`WriterConnection::write`): settlements, then reservations, in
    /// one transaction, a lone reservation in its own statement. While another process holds
    /// the write lock it tries again after a timer sleep, for up to [`LOCK_WAIT`].
    pub(super) async fn write(
        &self,
        settlements: &[Settlement],
        reservations: &[TokenReservation],
    ) -> DbResult<Vec<Option<i64>>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut tries = 0_u32;
        loop {
            // A run holds the connection for one reservation at most: the writer lets other
            // tasks run meanwhile rather than block its thread on the mutex.
            let Some(written) = self.try_write(settlements, reservations) else {
                tries += 1;
                if tries < 16 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            };
            match written {
                Err(DbError::Sqlite(err)) if is_busy(&err) && started.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                written => return written,
            }
        }
    }

    /// The batch, if the connection is free; `None` when a run holds it.
    fn try_write(
        &self,
        settlements: &[Settlement],
        reservations: &[TokenReservation],
    ) -> Option<DbResult<Vec<Option<i64>>>> {
        let mut guard = match self.conn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let Some(conn) = guard.as_mut() else { return Some(Err(DbError::Sqlx(sqlx::Error::PoolClosed))) };
        let written = write_batch(conn, settlements, reservations);
        drop(guard);
        if written.is_ok() {
            self.committed();
        }
        Some(written.map_err(DbError::from))
    }

    /// Closes the connection; later writes fail as the closed pool's do.
    pub(in crate::db) fn close(&self) {
        let conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(conn) = conn
            && let Err((_, err)) = conn.close()
        {
            tracing::warn!(cause = %err, "could not close the usage rows' SQLite connection");
        }
    }
}

/// A batch: a lone reservation as its own statement, anything else in one `IMMEDIATE`
/// transaction (which takes the write lock first, so that a busy lock fails before anything is
/// written; the transaction rolls back if any step fails).
fn write_batch(
    conn: &mut rusqlite::Connection,
    settlements: &[Settlement],
    reservations: &[TokenReservation],
) -> rusqlite::Result<Vec<Option<i64>>> {
    if let ([], [reservation]) = (settlements, reservations) {
        return Ok(vec![reserve(conn, reservation)?]);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    settle(&tx, settlements)?;
    let ids = reservations.iter().map(|reservation| reserve(&tx, reservation)).collect::<rusqlite::Result<_>>()?;
    tx.commit()?;
    Ok(ids)
}

/// As the sqlx `settle_batch`, statement for statement.
fn settle(conn: &rusqlite::Connection, settlements: &[Settlement]) -> rusqlite::Result<()> {
    let mut months = MonthTotals::default();
    for settlement in settlements {
        let Settlement { usage_id, record, .. } = settlement;
        let params: [(&str, &dyn ToSql); 10] = [
            ("$1", &to_i64(record.prompt_tokens)),
            ("$2", &to_i64(record.completion_tokens)),
            ("$3", &to_i64(record.latency_ms)),
            ("$4", &record.ttft_ms.map(to_i64)),
            ("$5", &record.status),
            ("$6", usage_id),
            ("$7", &record.provider),
            ("$8", &record.model),
            ("$9", &to_i64(record.cost_micro_usd)),
            ("$10", &i64::from(record.priced)),
        ];
        if conn.prepare_cached(SETTLE_RUN)?.execute(&params[..])? == 1 {
            months.add(settlement);
        }
    }
    for ((user_id, month_start_ms), (tokens, cost)) in months.0 {
        let params: [(&str, &dyn ToSql); 4] =
            [("$1", &tokens), ("$2", &user_id), ("$3", &month_start_ms), ("$4", &cost)];
        conn.prepare_cached(SETTLE_MONTH)?.execute(&params[..])?;
    }
    Ok(())
}

/// As the sqlx `reserve_sqlite`, statement for statement. The first insert either makes the
/// row (and returns) or writes nothing, so a busy lock at any step leaves nothing written but,
/// perhaps, the month's row, which any later reservation would make the same.
fn reserve(conn: &rusqlite::Connection, reservation: &TokenReservation) -> rusqlite::Result<Option<i64>> {
    let insert = || -> rusqlite::Result<Option<i64>> {
        let v = ReservationValues::new(reservation);
        let params: [(&str, &dyn ToSql); 12] = [
            ("$1", &v.user_id),
            ("$2", &v.tool),
            ("$3", &v.model),
            ("$4", &v.tokens),
            ("$5", &v.request_id),
            ("$6", &v.now),
            ("$7", &v.month_start_ms),
            ("$8", &v.in_flight_since),
            ("$9", &v.tokens_per_month),
            ("$10", &v.cost_micro_usd),
            ("$11", &v.cost_limit_micro_usd),
            ("$12", &v.via),
        ];
        let mut statement = conn.prepare_cached(RESERVATION_INSERT)?;
        let mut rows = statement.query(&params[..])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        let id: i64 = row.get(0)?;
        // Stepping on to the end finishes the statement, which (out of a transaction) commits
        // it, and returns the commit's error (a full disk, say); the reset that `query_row`
        // ends with would drop that error and report a row that was rolled back.
        while rows.next()?.is_some() {}
        Ok(Some(id))
    };
    if let Some(id) = insert()? {
        return Ok(Some(id));
    }
    // Refused, or no month row yet: once more with the month's row there (see `reserve_sqlite`).
    let month: [(&str, &dyn ToSql); 2] = [("$1", &reservation.user_id), ("$2", &reservation.month_start_ms)];
    if conn.prepare_cached(MONTH_ROW)?.query_row(&month[..], |_| Ok(())).optional()?.is_none() {
        conn.prepare_cached(CREATE_MONTH)?.execute(&month[..])?;
    }
    insert()
}

/// SQLite's write lock is held by another connection.
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hold_write_lock, reservation, sqlite_with_user};
    use crate::db::TokenReservation;

    /// The connection never checkpoints the WAL in a commit of its own (that would `fsync` on a
    /// runtime thread); a pooled connection does, every `CHECKPOINT_EVERY` commits, so that the
    /// WAL file stays within a few times what that many commits write (2.2 MB) rather than
    /// growing with every one (44 MB over these 2,000). A checkpoint still running when the
    /// commits resume cannot let SQLite restart the WAL (CI once saw 4.3 MB, two checkpoints'
    /// worth, on a loaded machine), hence the bound of 8 MB.
    #[tokio::test]
    async fn the_wal_is_checkpointed_by_the_pool() {
        let (dir, db, user, month) = sqlite_with_user("wal@example.test").await;
        let sqlite = db.sqlite_usage.clone().unwrap();
        let wal = || std::fs::metadata(dir.path().join("aniate.db-wal")).map_or(0, |m| m.len());
        let mut most = 0;
        for n in 0..2_000 {
            let unlimited = TokenReservation { tokens_per_month: 1 << 40, ..reservation(user, n, month) };
            assert!(matches!(sqlite.try_reserve(&unlimited), Some(Ok(Some(_)))), "run {n}");
            if n % 50 == 49 {
                // The checkpoint runs in a task of its own, on the pool's worker thread; a
                // quiet moment lets it finish before the next commits.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                most = most.max(wal());
            }
        }
        assert!(most < 8 << 20, "the WAL grew to {most} bytes");
        db.close().await;
    }

    /// A run writes its reservation itself only when it need not wait: with the connection free
    /// it gets its row at once; with the connection in use (by a batch of the usage writer) or
    /// SQLite's write lock held by another connection it writes nothing and is told so, to go
    /// through the usage writer.
    #[tokio::test]
    async fn a_run_reserves_at_once_only_when_it_need_not_wait() {
        let (dir, db, user, month) = sqlite_with_user("inline@example.test").await;
        let sqlite = db.sqlite_usage.clone().unwrap();
        let first = sqlite.try_reserve(&reservation(user, 0, month));
        assert!(matches!(first, Some(Ok(Some(_)))), "the month's first run, on a free connection: {first:?}");
        {
            let _batch = sqlite.conn.lock().unwrap();
            assert!(sqlite.try_reserve(&reservation(user, 1, month)).is_none());
        }
        let lock = hold_write_lock(dir.path());
        assert!(sqlite.try_reserve(&reservation(user, 2, month)).is_none());
        drop(lock);
        for n in 1..=2 {
            assert!(db.usage_statuses(&format!("req-{n}")).await.unwrap().is_empty(), "run {n} wrote nothing");
        }
        // Refused on the spot when the plan is full: 9 more fit the 1,000-token plan.
        let outcomes: Vec<_> = (3..13).map(|n| sqlite.try_reserve(&reservation(user, n, month))).collect();
        assert!(outcomes[..9].iter().all(|o| matches!(o, Some(Ok(Some(_))))), "{outcomes:?}");
        assert!(matches!(outcomes[9], Some(Ok(None))), "{outcomes:?}");
        db.close().await;
    }
}
