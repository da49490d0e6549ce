//! The server's database: SQLite by default, PostgreSQL for several replicas.
//!
//! Both run through `sqlx::Any`, so every query here is written once, in the SQL both dialects
//! share: `$N` parameters, `RETURNING`, `ON CONFLICT`, integers for times (Unix milliseconds)
//! and flags (0/1). Migrations are per dialect, under `server/migrations/{sqlite,postgres}`.
//! One exception: on a SQLite file, usage rows are written on a rusqlite connection of their
//! own (`usage::sqlite`), with the same SQL text, so that a run can write its quota reservation
//! in its own task, without a hand-over to sqlx's worker thread.
//!
//! **Architecture Invariant:** this module is the only place that knows SQL, and every value
//! reaches SQL as a bound parameter.

mod assistants;
mod cache;
mod files;
mod plans;
mod tokens;
mod tools;
mod usage;
mod users;

use std::{
    path::Path,
    str::FromStr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use self::{
    assistants::{NewAssistant, StoredAssistant},
    cache::{Caches, Generation, POLL_INTERVAL as CACHE_POLL_INTERVAL},
    files::{BlobTx, StoredFile},
    plans::{DEFAULT_MAX_STORED_BYTES, DEFAULT_MAX_STORED_FILES, Plan},
    tokens::{TokenInfo, TokenUser},
    tools::{DEFAULT_MODEL, StoredTool, StoredToolVersion},
    usage::{RUNNING_STATUS, STALE_RESERVATION_MS, TokenReservation, UsageGroup, UsageRecord, UsageSummary},
    users::User,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database error, with the cases callers act on split out.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("already exists")]
    Conflict,
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// From the usage rows' own SQLite connection ([`usage::SqliteUsage`]).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}` (expected sqlite:// or postgres://)")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A write the usage writer made for several callers failed; each of them gets this.
    #[error("{message}")]
    Shared { message: String, unavailable: bool },
}

impl DbError {
    fn from_write(err: sqlx::Error) -> DbError {
        match &err {
            sqlx::Error::Database(db_err) if db_err.is_unique_violation() => DbError::Conflict,
            _ => DbError::Sqlx(err),
        }
    }

    /// Whether the error means "the database is not reachable now", as opposed to a bad query:
    /// no connection to be had, or a connection that broke (reset, closed mid-handshake, which
    /// sqlx reports as a TLS or protocol error).
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Sqlx(err) => DbError::is_unavailable_sqlx(err),
            DbError::Shared { unavailable, .. } => *unavailable,
            _ => false,
        }
    }

    /// The error each caller of a shared write gets when the write fails.
    fn shared(err: &DbError) -> DbError {
        DbError::Shared { message: err.to_string(), unavailable: err.is_unavailable() }
    }

    fn is_unavailable_sqlx(err: &sqlx::Error) -> bool {
        matches!(
            err,
            sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        )
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// A pooled connection to the server's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// Tokens' users and active tools, shared by every clone of this `Db`.
    caches: Arc<Caches>,
    /// Whether `caches` may be used: only while [`Db::watch_caches`] keeps them in step.
    caches_enabled: Arc<AtomicBool>,
    usage_writer: usage::UsageWriter,
    /// On a SQLite file, the usage rows' own connection: the usage writer's, and where a run
    /// writes its reservation at once when it is free.
    sqlite_usage: Option<Arc<usage::SqliteUsage>>,
}

/// The SQLite URL for the default database file inside `data_dir`.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("aniate.db").display())
}

impl Db {
    /// Connects, runs the migrations, and inserts the seed tools if this database never had
    /// them. Safe to run from several replicas at once.
    pub async fn open(url: &str) -> DbResult<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyConnectOptions::from_str(url)?;
        // Every connection to an in-memory SQLite database is a database of its own, so such
        // a pool must be one connection that is never closed.
        let in_memory = backend == Backend::Sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let pool_options = if in_memory {
            AnyPoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            AnyPoolOptions::new().max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
        }
        // sqlx pings a pooled connection before handing it out. A SQLite connection is a file
        // opened in this process and cannot have broken; its ping is a round trip to the
        // connection's worker thread on every query. A PostgreSQL connection can break (the
        // server restarts, a proxy drops it), and the ping finds that before a query does.
        .test_before_acquire(backend == Backend::Postgres);
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Writers wait for each other instead of failing with SQLITE_BUSY. Each
                        // connection caches 512 KiB of pages: SQLite's default, 2 MiB each, let
                        // the server grow by 28 MB over a 60,000-run soak as the usage table grew.
                        // `synchronous` is per connection too: NORMAL (no fsync at each commit
                        // in WAL mode, durable at checkpoints) on every connection, not only the
                        // first; a connection left at FULL made each reservation wait for an fsync.
                        conn.execute(
                            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512; PRAGMA synchronous = NORMAL;",
                        )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers run while a request records its usage. The mode is stored in the
            // file, so setting it once per start is enough.
            pool.execute("PRAGMA journal_mode = WAL;").await?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        let sqlite_usage = if backend == Backend::Sqlite && !in_memory {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
            Some(Arc::new(usage::SqliteUsage::open(options.get_filename(), pool.clone())?))
        } else {
            None
        };
        let usage_writer = usage::UsageWriter::start(pool.clone(), sqlite_usage.clone());
        let db =
            Db { pool, backend, caches: Arc::default(), caches_enabled: Arc::default(), usage_writer, sqlite_usage };
        db.seed_tools_once().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Answers a trivial query; used by `/healthz`.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Writes the usage still waiting in the writer, then closes the pool and every
    /// connection in it.
    pub async fn close(&self) {
        if tokio::time::timeout(Duration::from_secs(10), self.flush_usage()).await.is_err() {
            tracing::error!("the usage writer did not finish in 10 s; unsettled runs stay `running`");
        }
        if let Some(sqlite) = &self.sqlite_usage {
            sqlite.close();
        }
        close_pool(&self.pool).await;
    }
}

/// Closes `pool` and waits until its last connection is closed. sqlx 0.8's `Pool::close` can
/// return with a connection still open (launchbadge/sqlx#3217, fixed in 0.9): a connection
/// on its way back to the pool (the return pings it first) lands in the idle queue after
/// `close` emptied that for the last time, and nothing closes it, so SQLite never folds its
/// WAL back and PostgreSQL sees the session dropped rather than ended. A further `close`
/// closes the idle connections it finds; stragglers get 5 s.
async fn close_pool(pool: &AnyPool) {
    pool.close().await;
    let rest = async {
        while pool.size() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            pool.close().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), rest).await.is_err() {
        tracing::warn!(open = pool.size(), "database connections still open 5 s after the pool closed");
    }
}

/// Drops the password from a database URL, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// A list of model references or patterns as stored: a JSON array of strings.
pub(crate) fn model_list_json(models: &[String]) -> String {
    serde_json::to_string(models).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads a stored list of model references or patterns.
pub(crate) fn parse_model_list(text: &str) -> DbResult<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|err| DbError::Corrupt(format!("a stored model list is not a JSON array: {err}")))
}

/// Formats a time column as RFC 3339 UTC, as the API shows it.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[tokio::test]
    async fn in_memory_sqlite_is_one_database() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        assert_eq!(db.active_tools().await.unwrap().len(), 4, "migrations and seeds share the one connection");
        let again = Db::open("sqlite::memory:").await.unwrap();
        assert!(again.user_by_email("nobody@x.y").await.unwrap().is_none());
    }

    /// `Db::close` closes every connection, those on their way back to the pool as it closes
    /// included (see [`close_pool`]): each round takes every pooled connection, lets them all
    /// go (each return pings its connection on its worker thread) and closes at once.
    #[tokio::test]
    async fn close_leaves_no_connection_open() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open(&default_sqlite_url(dir.path())).await.unwrap();
            let mut taken = Vec::new();
            for _ in 0..db.pool.options().get_max_connections() {
                taken.push(db.pool.acquire().await.unwrap());
            }
            drop(taken);
            db.close().await;
            #[cfg(target_os = "linux")]
            {
                let open = open_files_under(dir.path());
                assert!(open.is_empty(), "round {round}: still open after close: {open:?}");
            }
        }
    }

    /// The files under `dir` this process holds open, from `/proc/self/fd`.
    #[cfg(target_os = "linux")]
    pub(super) fn open_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
        let dir = dir.canonicalize().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(&dir))
            .collect()
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
    }
}
