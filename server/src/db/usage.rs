//! The `usage` table: one row per tool run, whatever its outcome.

mod sqlite;

pub(super) use self::sqlite::SqliteUsage;
use super::{Backend, Db, DbError, DbResult, now_ms};

/// What one request cost and how it ended.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub user_id: i64,
    pub tool: String,
    /// The provider and model that answered (the first of the route when none did).
    pub provider: String,
    pub model: String,
    /// What the run cost at the catalogue's prices, in micro-dollars.
    pub cost_micro_usd: u64,
    /// Whether the model has a price in the catalogue.
    pub priced: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// `ok`, `cancelled`, or the error code that ended the request.
    pub status: String,
    pub request_id: String,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The status of a run's usage row while the run is in flight: it holds the run's reservation.
pub const RUNNING_STATUS: &str = "running";

/// A run about to call the model: what it may cost at most.
#[derive(Debug, Clone)]
pub struct TokenReservation {
    pub user_id: i64,
    pub tool: String,
    pub model: String,
    pub request_id: String,
    /// The most tokens the run may use: the estimated prompt plus the answer's `max_tokens`.
    pub tokens: u64,
    /// The plan's monthly quota.
    pub tokens_per_month: u64,
    /// The most the run may cost, in micro-dollars, at the priciest model of its route.
    pub cost_micro_usd: u64,
    /// The plan's monthly cost limit in micro-dollars, if it has one.
    pub cost_limit_micro_usd: Option<u64>,
    /// The first instant of this month (Unix milliseconds).
    pub month_start_ms: i64,
    /// The door the run came in by: `aniate` or `openai`.
    pub via: &'static str,
}

/// A run in flight longer than this no longer holds its reservation: a server killed mid-run
/// never settles its runs, and their reservations must not hold a user's quota for the rest of
/// the month. No run lasts this long (the provider's idle timeout ends it first).
pub const STALE_RESERVATION_MS: i64 = 60 * 60 * 1000;

/// Most usage rows written in one transaction.
const MAX_BATCH: usize = 256;

/// A finished run's real cost, to be written by the usage writer.
#[derive(Debug)]
struct Settlement {
    usage_id: i64,
    /// The month the run's reservation was counted in ([`TokenReservation::month_start_ms`]).
    month_start_ms: i64,
    record: UsageRecord,
}

/// Where the usage writer answers a reservation: the new row's id, `None` when refused.
type ReservationReply = tokio::sync::oneshot::Sender<DbResult<Option<i64>>>;

enum WriterMessage {
    Settle(Settlement),
    /// A reservation on SQLite, answered once the batch that writes it commits.
    Reserve(TokenReservation, ReservationReply),
    /// Answered once everything sent before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending side of the usage writer: one task that writes usage rows in batches.
///
/// A run's row is inserted, as `running` and holding its reservation, before the model is
/// called ([`Db::reserve_tokens`]); settling it to its real cost is off the run's path. The
/// writer takes every message waiting when it wakes (up to [`MAX_BATCH`]) and writes them in
/// one transaction, so under load one commit serves many runs, and an idle server writes each
/// at once. On a SQLite file the writer writes on the usage rows' own connection
/// ([`SqliteUsage`]), on which a run writes its reservation itself when that connection is
/// free and no settlement is waiting; otherwise the reservation goes through the writer too
/// (group commit), after the settlements sent before it. What a crash can lose is bounded: a
/// SIGTERM drains the writer ([`Db::close`]); a SIGKILL loses at most the batch being written
/// and those waiting for it. Settlements lost so leave their rows `running` at their
/// reservation (counted against the quota for [`STALE_RESERVATION_MS`], then no longer);
/// reservations lost so were never answered, so their runs never reached the model.
#[derive(Debug, Clone)]
pub(super) struct UsageWriter {
    sender: tokio::sync::mpsc::UnboundedSender<WriterMessage>,
    /// Settlements sent and not yet written (counted up before the send, down after the batch
    /// that writes them). A run writes its reservation itself only when there are none: a
    /// reservation must see every settlement sent before it, or a user's next run would find
    /// the last one still counted at its reservation rather than at what it used.
    unsettled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for WriterMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterMessage::Settle(settlement) => f.debug_tuple("Settle").field(&settlement.usage_id).finish(),
            WriterMessage::Reserve(reservation, _) => f.debug_tuple("Reserve").field(&reservation.request_id).finish(),
            WriterMessage::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl UsageWriter {
    /// Starts the writer task on the current runtime, writing on `sqlite` when the database is
    /// a SQLite file, else on a pooled connection for each batch (see [`WriterConnection`]).
    pub(super) fn start(pool: sqlx::AnyPool, sqlite: Option<std::sync::Arc<SqliteUsage>>) -> UsageWriter {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let connection = match sqlite {
            Some(sqlite) => WriterConnection::Sqlite(sqlite),
            None => WriterConnection::Pool(pool),
        };
        let unsettled = std::sync::Arc::default();
        tokio::spawn(write_usage(connection, receiver, std::sync::Arc::clone(&unsettled)));
        UsageWriter { sender, unsettled }
    }

    /// Whether every settlement sent so far is written.
    fn settled(&self) -> bool {
        self.unsettled.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}

/// The connection the usage writer writes on.
enum WriterConnection {
    /// On a SQLite file, the usage rows' own connection ([`SqliteUsage`]), which runs also
    /// write their reservations on when it is free. As the process's one writer of usage rows
    /// it keeps its page cache: SQLite drops a connection's cache whenever another connection
    /// has written, and sqlx hands its pooled connections out in turn, so a writer that took
    /// the next pooled one for each batch re-read every page it touched.
    Sqlite(std::sync::Arc<SqliteUsage>),
    /// A pooled connection for each batch: PostgreSQL (whose connections can break) and an
    /// in-memory SQLite database (one pooled connection, which is the database).
    Pool(sqlx::AnyPool),
}

impl WriterConnection {
    /// Writes a batch: settlements, then reservations, in one transaction (a lone reservation
    /// without one); returns each reservation's row id, `None` for those refused.
    async fn write(
        &mut self,
        settlements: &[Settlement],
        reservations: &[TokenReservation],
    ) -> DbResult<Vec<Option<i64>>> {
        match self {
            WriterConnection::Sqlite(sqlite) => sqlite.write(settlements, reservations).await,
            WriterConnection::Pool(pool) => {
                Ok(write_batch(&mut *pool.acquire().await?, settlements, reservations).await?)
            }
        }
    }
}

async fn write_usage(
    mut connection: WriterConnection,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<WriterMessage>,
    unsettled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut batch = Batch::default();
    while let Some(message) = receiver.recv().await {
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Settle(settlement) => batch.settlements.push(settlement),
                WriterMessage::Reserve(reservation, reply) => {
                    batch.reservations.push(reservation);
                    batch.replies.push(reply);
                }
                WriterMessage::Flush(done) => batch.flushes.push(done),
            }
            if batch.settlements.len() + batch.reservations.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        batch.write(&mut connection, &unsettled).await;
    }
}

/// What the usage writer took from its queue in one wake-up.
#[derive(Default)]
struct Batch {
    settlements: Vec<Settlement>,
    reservations: Vec<TokenReservation>,
    /// Where each of `reservations` is answered, in the same order.
    replies: Vec<ReservationReply>,
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Batch {
    /// Writes the batch, answers its reservations and flushes, and empties it. `unsettled`
    /// ([`UsageWriter::unsettled`]) counts the batch's settlements down once they are written
    /// (or given up), before any answer: whoever hears back may write its own reservation.
    async fn write(&mut self, connection: &mut WriterConnection, unsettled: &std::sync::atomic::AtomicUsize) {
        let settled = || unsettled.fetch_sub(self.settlements.len(), std::sync::atomic::Ordering::SeqCst);
        if !self.settlements.is_empty() || !self.reservations.is_empty() {
            let lone_reservation = self.settlements.is_empty() && self.reservations.len() == 1;
            match connection.write(&self.settlements, &self.reservations).await {
                Ok(ids) => {
                    settled();
                    for (reply, id) in self.replies.drain(..).zip(ids) {
                        // The run's own task waits for this answer to its end (`run::stream_answer`).
                        let _ = reply.send(Ok(id));
                    }
                }
                Err(err) => {
                    // One row that cannot be written (its user deleted meanwhile, say) must not
                    // fail the rest: the settlements are written again together, once the
                    // database is back if it blinked, and then each reservation on its own
                    // (unless it was alone already), after the settlements sent before it.
                    let unavailable = err.is_unavailable();
                    if !self.settlements.is_empty() {
                        if unavailable {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        if let Err(err) = connection.write(&self.settlements, &[]).await {
                            tracing::error!(cause = %err, runs = self.settlements.len(), "could not record usage; the runs stay `running` at their reservation");
                        }
                    }
                    settled();
                    if lone_reservation {
                        let _ = self.replies.remove(0).send(Err(DbError::shared(&err)));
                    } else {
                        tracing::warn!(cause = %err, "a usage batch failed; writing its rows one by one");
                        for (reservation, reply) in self.reservations.iter().zip(self.replies.drain(..)) {
                            let alone = connection.write(&[], std::slice::from_ref(reservation)).await;
                            let _ = reply.send(alone.map(|ids| ids[0]).map_err(|err| DbError::shared(&err)));
                        }
                    }
                }
            }
            self.settlements.clear();
            self.reservations.clear();
        }
        for done in self.flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes settlements and then reservations in one transaction; returns each reservation's
/// row id, `None` for those refused. A lone reservation (an idle server's case) is written
/// without a transaction around it.
async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    settlements: &[Settlement],
    reservations: &[TokenReservation],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    if let ([], [reservation]) = (settlements, reservations) {
        return Ok(vec![reserve_sqlite(conn, reservation).await?]);
    }
    let mut tx = sqlx::Connection::begin(conn).await?;
    settle_batch(&mut tx, settlements).await?;
    let mut ids = Vec::with_capacity(reservations.len());
    for reservation in reservations {
        ids.push(reserve_sqlite(&mut tx, reservation).await?);
    }
    tx.commit().await?;
    Ok(ids)
}

/// Settles a run's row to its real cost and status, if it is still `running` (`$6` its id).
const SETTLE_RUN: &str = "UPDATE usage SET prompt_tokens = $1, completion_tokens = $2, latency_ms = $3, ttft_ms = $4, status = $5, \
     provider = $7, model = $8, cost_micro_usd = $9, priced = $10 \
     WHERE id = $6 AND status = 'running'";

/// Adds what a user's settled runs used to their month: `$1` tokens, `$4` cost.
const SETTLE_MONTH: &str = "UPDATE usage_months SET tokens = tokens + $1, cost_micro_usd = cost_micro_usd + $4 \
     WHERE user_id = $2 AND month_start = $3";

/// What the runs settled in a batch used, by user and month: `(user, month start)` to
/// `(tokens, cost)`, for [`SETTLE_MONTH`].
#[derive(Default)]
struct MonthTotals(std::collections::HashMap<(i64, i64), (i64, i64)>);

impl MonthTotals {
    fn add(&mut self, Settlement { month_start_ms, record, .. }: &Settlement) {
        let month = self.0.entry((record.user_id, *month_start_ms)).or_default();
        month.0 += to_i64(record.prompt_tokens.saturating_add(record.completion_tokens));
        month.1 += to_i64(record.cost_micro_usd);
    }
}

/// Settles runs: each row to its real cost and status, and each user's month by what their
/// runs really used.
async fn settle_batch(conn: &mut sqlx::AnyConnection, batch: &[Settlement]) -> Result<(), sqlx::Error> {
    let mut months = MonthTotals::default();
    for settlement in batch {
        let Settlement { usage_id, record, .. } = settlement;
        let done = sqlx::query(SETTLE_RUN)
            .bind(to_i64(record.prompt_tokens))
            .bind(to_i64(record.completion_tokens))
            .bind(to_i64(record.latency_ms))
            .bind(record.ttft_ms.map(to_i64))
            .bind(&record.status)
            .bind(usage_id)
            .bind(&record.provider)
            .bind(&record.model)
            .bind(to_i64(record.cost_micro_usd))
            .bind(i64::from(record.priced))
            .execute(&mut *conn)
            .await?;
        if done.rows_affected() == 1 {
            months.add(settlement);
        }
    }
    for ((user_id, month_start_ms), (tokens, cost)) in months.0 {
        sqlx::query(SETTLE_MONTH)
            .bind(tokens)
            .bind(user_id)
            .bind(month_start_ms)
            .bind(cost)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The reservation's insert: a `running` row holding its tokens and cost, made only if the
/// month's settled tokens and cost, plus the user's runs in flight at their reservation, plus
/// this one fit the plan. Inserts nothing when the user's month has no row yet. Its parameters
/// are [`ReservationValues`], in order.
const RESERVATION_INSERT: &str = "INSERT INTO usage (user_id, tool, model, prompt_tokens, completion_tokens, latency_ms, ttft_ms, status, request_id, created_at, cost_micro_usd, via) \
     SELECT $1, $2, $3, $4, 0, 0, NULL, 'running', $5, $6, $10, $12 \
     WHERE (SELECT tokens FROM usage_months WHERE user_id = $1 AND month_start = $7) \
         + (SELECT CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) FROM usage \
            WHERE user_id = $1 AND status = 'running' AND created_at >= $8) \
         + $4 <= $9 \
     AND (SELECT cost_micro_usd FROM usage_months WHERE user_id = $1 AND month_start = $7) \
         + (SELECT CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) FROM usage \
            WHERE user_id = $1 AND status = 'running' AND created_at >= $8) \
         + $10 <= $11 \
     RETURNING id";

/// Whether the user's month has its row yet: `$1` the user, `$2` the month's start.
const MONTH_ROW: &str = "SELECT tokens FROM usage_months WHERE user_id = $1 AND month_start = $2";

/// The month's first run (since the month began, or since this release first ran) makes its
/// `usage_months` row from the usage rows, once, whoever gets there first: `$1` the user, `$2`
/// the month's start.
const CREATE_MONTH: &str = "INSERT INTO usage_months (user_id, month_start, tokens, cost_micro_usd) \
     SELECT $1, $2, CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT), \
        CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) FROM usage \
     WHERE user_id = $1 AND created_at >= $2 AND status <> 'running' \
     ON CONFLICT (user_id, month_start) DO NOTHING";

/// The parameters of [`RESERVATION_INSERT`], `$1` to `$12`, worked out once for either driver.
struct ReservationValues<'a> {
    user_id: i64,
    tool: &'a str,
    model: &'a str,
    tokens: i64,
    request_id: &'a str,
    now: i64,
    month_start_ms: i64,
    in_flight_since: i64,
    tokens_per_month: i64,
    cost_micro_usd: i64,
    cost_limit_micro_usd: i64,
    via: &'a str,
}

impl<'a> ReservationValues<'a> {
    fn new(reservation: &'a TokenReservation) -> ReservationValues<'a> {
        let now = now_ms();
        ReservationValues {
            user_id: reservation.user_id,
            tool: &reservation.tool,
            model: &reservation.model,
            tokens: to_i64(reservation.tokens),
            request_id: &reservation.request_id,
            now,
            month_start_ms: reservation.month_start_ms,
            in_flight_since: reservation.month_start_ms.max(now - STALE_RESERVATION_MS),
            tokens_per_month: to_i64(reservation.tokens_per_month),
            cost_micro_usd: to_i64(reservation.cost_micro_usd),
            // No limit is a limit no sum reaches, so the statement keeps one shape.
            cost_limit_micro_usd: reservation.cost_limit_micro_usd.map_or(i64::MAX, to_i64),
            via: reservation.via,
        }
    }
}

/// [`RESERVATION_INSERT`] for sqlx.
fn reservation_insert(
    reservation: &TokenReservation,
) -> sqlx::query::QueryAs<'_, sqlx::Any, (i64,), sqlx::any::AnyArguments<'_>> {
    let v = ReservationValues::new(reservation);
    sqlx::query_as::<_, (i64,)>(RESERVATION_INSERT)
        .bind(v.user_id)
        .bind(v.tool)
        .bind(v.model)
        .bind(v.tokens)
        .bind(v.request_id)
        .bind(v.now)
        .bind(v.month_start_ms)
        .bind(v.in_flight_since)
        .bind(v.tokens_per_month)
        .bind(v.cost_micro_usd)
        .bind(v.cost_limit_micro_usd)
        .bind(v.via)
}

async fn create_month(conn: &mut sqlx::AnyConnection, reservation: &TokenReservation) -> Result<(), sqlx::Error> {
    sqlx::query(CREATE_MONTH).bind(reservation.user_id).bind(reservation.month_start_ms).execute(conn).await?;
    Ok(())
}

/// A reservation on an in-memory SQLite database, by the usage writer (on a SQLite file,
/// `sqlite::reserve` is the same, statement for statement): each insert is one statement, which
/// holds the write lock from its read to its insert.
async fn reserve_sqlite(
    conn: &mut sqlx::AnyConnection,
    reservation: &TokenReservation,
) -> Result<Option<i64>, sqlx::Error> {
    if let Some((id,)) = reservation_insert(reservation).fetch_optional(&mut *conn).await? {
        return Ok(Some(id));
    }
    // Refused, or no month row yet. The insert is tried once more with the month's row there,
    // made now or, since the first insert, by another process: a month that two processes start
    // at once is no refusal.
    let month: Option<(i64,)> = sqlx::query_as(MONTH_ROW)
        .bind(reservation.user_id)
        .bind(reservation.month_start_ms)
        .fetch_optional(&mut *conn)
        .await?;
    if month.is_none() {
        create_month(conn, reservation).await?;
    }
    Ok(reservation_insert(reservation).fetch_optional(&mut *conn).await?.map(|(id,)| id))
}

impl Db {
    /// Reserves a run's tokens against the monthly quota: inserts its usage row as `running`,
    /// holding `reservation.tokens`, only if the month's settled tokens, plus the user's runs in
    /// flight at their reservation, plus this one fit the quota. `None` when they do not.
    ///
    /// Exact across server processes and cheap: it reads one `usage_months` row and the user's
    /// few `running` rows (a partial index), never the month's usage. On a SQLite file the run
    /// writes it at once on the usage rows' own connection when that connection and SQLite's
    /// write lock are free and no settlement is waiting to be written (one statement, tens of
    /// µs, no hand-over between threads; see [`SqliteUsage`]); otherwise, and on an in-memory
    /// database, it goes through the usage writer, which commits the reservations and
    /// settlements waiting in one transaction. On PostgreSQL the month's row is locked first, in
    /// a transaction of its own.
    pub async fn reserve_tokens(&self, reservation: TokenReservation) -> DbResult<Option<i64>> {
        if let Some(sqlite) = &self.sqlite_usage
            && self.usage_writer.settled()
            && let Some(answer) = sqlite.try_reserve(&reservation)
        {
            return answer;
        }
        if self.backend == Backend::Sqlite {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let stopped = || DbError::Sqlx(sqlx::Error::PoolClosed);
            self.usage_writer.sender.send(WriterMessage::Reserve(reservation, reply)).map_err(|_| stopped())?;
            return answer.await.unwrap_or_else(|_| Err(stopped()));
        }
        for _ in 0..2 {
            let mut tx = self.pool.begin().await?;
            // Serialises this user's reservations and settlements (which update this row). With
            // no row there is nothing to lock, so no insert may follow: the row is made first.
            let month =
                sqlx::query("SELECT tokens FROM usage_months WHERE user_id = $1 AND month_start = $2 FOR UPDATE")
                    .bind(reservation.user_id)
                    .bind(reservation.month_start_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
            if month.is_none() {
                drop(tx);
                create_month(&mut *self.pool.acquire().await?, &reservation).await?;
                continue;
            }
            let id = reservation_insert(&reservation).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            return Ok(id.map(|(id,)| id));
        }
        Ok(None)
    }

    /// Settles a reserved run to what it really cost and how it ended, through the usage
    /// writer: it returns at once, and the row is written with the next batch.
    pub fn settle_usage(&self, usage_id: i64, month_start_ms: i64, record: UsageRecord) {
        let settlement = Settlement { usage_id, month_start_ms, record };
        let unsettled = &self.usage_writer.unsettled;
        unsettled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(unsent) = self.usage_writer.sender.send(WriterMessage::Settle(settlement)) {
            unsettled.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            // Only after `close`: the server is gone, the row stays `running`.
            if let WriterMessage::Settle(settlement) = unsent.0 {
                tracing::error!(request_id = %settlement.record.request_id, "usage writer stopped; the run stays `running`");
            }
        }
    }

    /// Waits until every settlement sent so far is written.
    pub async fn flush_usage(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.usage_writer.sender.send(WriterMessage::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Usage rows of one request id (tests and support look requests up by their id).
    pub async fn usage_statuses(&self, request_id: &str) -> DbResult<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT status FROM usage WHERE request_id = $1")
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(status,)| status).collect())
    }
}

/// Sums as `BIGINT` in both dialects (PostgreSQL's `SUM(BIGINT)` is `NUMERIC`): requests,
/// prompt and completion tokens, cost, and runs that used tokens of an unpriced model.
const TOTALS: &str = "COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN priced = 0 AND prompt_tokens + completion_tokens > 0 THEN 1 ELSE 0 END), 0) AS BIGINT)";

/// Runs stopped by the prompt guard, as `BIGINT`.
const BLOCKED: &str = "CAST(COALESCE(SUM(CASE WHEN status = 'blocked' THEN 1 ELSE 0 END), 0) AS BIGINT)";

/// The columns of [`TOTALS`].
type Totals = (i64, i64, i64, i64, i64);

fn totals((requests, prompt, completion, cost, unpriced): Totals) -> aniate_proto::api::UsageTotals {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    aniate_proto::api::UsageTotals {
        requests: count(requests),
        prompt_tokens: count(prompt),
        completion_tokens: count(completion),
        cost_micro_usd: count(cost),
        unpriced: count(unpriced),
    }
}

impl Db {
    /// Tokens a user spent since `since_ms` (for the monthly quota).
    pub async fn tokens_since(&self, user_id: i64, since_ms: i64) -> DbResult<u64> {
        let (tokens,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM usage WHERE user_id = $1 AND created_at >= $2",
        )
        .bind(user_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(tokens.max(0) as u64)
    }

    /// What a user's runs since `since_ms` cost, in micro-dollars (runs in flight at their
    /// reservation), for the message of a refused run.
    pub async fn cost_since(&self, user_id: i64, since_ms: i64) -> DbResult<u64> {
        let (cost,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) FROM usage WHERE user_id = $1 AND created_at >= $2",
        )
        .bind(user_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(cost).unwrap_or(0))
    }

    pub async fn usage_totals(&self, user_id: i64, since_ms: i64) -> DbResult<aniate_proto::api::UsageTotals> {
        let sql = format!("SELECT {TOTALS} FROM usage WHERE user_id = $1 AND created_at >= $2");
        let row: Totals = sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_one(&self.pool).await?;
        Ok(totals(row))
    }

    pub async fn usage_by_tool(&self, user_id: i64, since_ms: i64) -> DbResult<Vec<aniate_proto::api::ToolUsage>> {
        let sql = format!(
            "SELECT tool, {TOTALS}, {BLOCKED} FROM usage WHERE user_id = $1 AND created_at >= $2 GROUP BY tool ORDER BY tool"
        );
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> =
            sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(tool, r, p, c, cost, unpriced, blocked)| aniate_proto::api::ToolUsage {
                tool,
                totals: totals((r, p, c, cost, unpriced)),
                blocked: blocked.max(0) as u64,
            })
            .collect())
    }

    /// Usage by provider and model.
    pub async fn usage_by_model(&self, user_id: i64, since_ms: i64) -> DbResult<Vec<aniate_proto::api::ModelUsage>> {
        let sql = format!(
            "SELECT provider, model, {TOTALS} FROM usage WHERE user_id = $1 AND created_at >= $2 \
             GROUP BY provider, model ORDER BY provider, model"
        );
        let rows: Vec<(String, String, i64, i64, i64, i64, i64)> =
            sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(provider, model, r, p, c, cost, unpriced)| aniate_proto::api::ModelUsage {
                provider,
                model,
                totals: totals((r, p, c, cost, unpriced)),
            })
            .collect())
    }

    /// Usage by UTC day number (days since the epoch).
    pub async fn usage_by_day(
        &self,
        user_id: i64,
        since_ms: i64,
    ) -> DbResult<Vec<(i64, aniate_proto::api::UsageTotals)>> {
        let sql = format!(
            "SELECT created_at / 86400000 AS day, {TOTALS} FROM usage WHERE user_id = $1 AND created_at >= $2 GROUP BY created_at / 86400000 ORDER BY day"
        );
        let rows: Vec<(i64, i64, i64, i64, i64, i64)> =
            sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(day, r, p, c, cost, unpriced)| (day, totals((r, p, c, cost, unpriced)))).collect())
    }

    /// Everyone's usage between two times, by user, tool, provider and model, for invoicing.
    pub async fn admin_usage(&self, from_ms: i64, to_ms: i64) -> DbResult<Vec<aniate_proto::api::AdminUsageRow>> {
        let sql = format!(
            "SELECT u.email, u.plan, usage.tool, usage.provider, usage.model, {TOTALS}, {BLOCKED}, usage.via \
             FROM usage JOIN users u ON u.id = usage.user_id \
             WHERE usage.created_at >= $1 AND usage.created_at < $2 \
             GROUP BY u.email, u.plan, usage.tool, usage.provider, usage.model, usage.via \
             ORDER BY u.email, usage.tool, usage.provider, usage.model, usage.via"
        );
        type Row = (String, String, String, String, String, i64, i64, i64, i64, i64, i64, String);
        let rows: Vec<Row> = sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(email, plan, tool, provider, model, r, p, c, cost, unpriced, blocked, via)| {
                aniate_proto::api::AdminUsageRow {
                    email,
                    plan,
                    tool,
                    provider,
                    model,
                    totals: totals((r, p, c, cost, unpriced)),
                    blocked: blocked.max(0) as u64,
                    via,
                }
            })
            .collect())
    }

    /// Everyone's usage between two times, by UTC day number (days since the epoch), for the
    /// console's charts. Runs still in flight are not counted.
    pub async fn admin_usage_by_day(&self, from_ms: i64, to_ms: i64) -> DbResult<Vec<(i64, UsageSummary)>> {
        let sql = format!(
            "SELECT created_at / 86400000 AS day, {TOTALS}, {ERRORS}, {BLOCKED} FROM usage \
             WHERE created_at >= $1 AND created_at < $2 AND status <> 'running' \
             GROUP BY created_at / 86400000 ORDER BY day"
        );
        let rows: Vec<SummaryRow<i64>> = sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(day, r, p, c, cost, unpriced, e, b)| (day, summary((r, p, c, cost, unpriced), e, b)))
            .collect())
    }

    /// Everyone's usage between two times, by tool, by user (email) or by model, the largest
    /// token use first (so by user, the top users).
    pub async fn admin_usage_by(
        &self,
        by: UsageGroup,
        from_ms: i64,
        to_ms: i64,
    ) -> DbResult<Vec<(String, UsageSummary)>> {
        let key = match by {
            UsageGroup::Tool => "usage.tool",
            UsageGroup::User => "COALESCE(u.email, '(deleted account)')",
            UsageGroup::Model => "usage.model",
        };
        let sql = format!(
            "SELECT {key} AS k, {TOTALS}, {ERRORS}, {BLOCKED} FROM usage LEFT JOIN users u ON u.id = usage.user_id \
             WHERE usage.created_at >= $1 AND usage.created_at < $2 AND usage.status <> 'running' \
             GROUP BY {key} ORDER BY CAST(COALESCE(SUM(usage.prompt_tokens + usage.completion_tokens), 0) AS BIGINT) DESC, k"
        );
        let rows: Vec<SummaryRow<String>> =
            sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(key, r, p, c, cost, unpriced, e, b)| (key, summary((r, p, c, cost, unpriced), e, b)))
            .collect())
    }
}

/// How [`Db::admin_usage_by`] groups usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Tool,
    User,
    Model,
}

/// A group's usage: requests, tokens, failed runs and runs the prompt guard stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageSummary {
    pub totals: aniate_proto::api::UsageTotals,
    pub errors: u64,
    pub blocked: u64,
}

impl UsageSummary {
    pub fn tokens(&self) -> u64 {
        self.totals.prompt_tokens + self.totals.completion_tokens
    }
}

/// A console summary's row: its key, then `{TOTALS}, {ERRORS}, {BLOCKED}`.
type SummaryRow<K> = (K, i64, i64, i64, i64, i64, i64, i64);

/// `sums` as [`TOTALS`] reads them: requests, prompt and completion tokens, cost, unpriced runs.
fn summary(sums: (i64, i64, i64, i64, i64), errors: i64, blocked: i64) -> UsageSummary {
    UsageSummary { totals: totals(sums), errors: errors.max(0) as u64, blocked: blocked.max(0) as u64 }
}

/// Runs that failed (neither answered, cancelled by their client nor stopped by the guard), as `BIGINT`.
const ERRORS: &str =
    "CAST(COALESCE(SUM(CASE WHEN status IN ('ok', 'cancelled', 'blocked', 'running') THEN 0 ELSE 1 END), 0) AS BIGINT)";

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite file database in a directory of its own, with one user; the user's id, and the
    /// start of the current month.
    pub(super) async fn sqlite_with_user(email: &str) -> (tempfile::TempDir, Db, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&super::super::default_sqlite_url(dir.path())).await.unwrap();
        let user = db.create_user(email, "x", aniate_proto::api::Role::User).await.unwrap();
        (dir, db, user, crate::limits::month_bounds(now_ms()).0)
    }

    /// How run `req-0` of `user` ended: `status`, with `tokens` prompt and as many completion tokens.
    fn settled_run(user_id: i64, status: &str, tokens: u64) -> UsageRecord {
        UsageRecord {
            user_id,
            tool: "what".to_owned(),
            provider: "p".to_owned(),
            model: "m".to_owned(),
            cost_micro_usd: 0,
            priced: false,
            prompt_tokens: tokens,
            completion_tokens: tokens,
            latency_ms: 1,
            ttft_ms: Some(1),
            status: status.to_owned(),
            request_id: "req-0".to_owned(),
        }
    }

    pub(super) fn reservation(user_id: i64, n: usize, month_start_ms: i64) -> TokenReservation {
        TokenReservation {
            user_id,
            tool: "what".to_owned(),
            model: "m".to_owned(),
            request_id: format!("req-{n}"),
            tokens: 100,
            tokens_per_month: 1_000,
            cost_micro_usd: 0,
            cost_limit_micro_usd: None,
            month_start_ms,
            via: "aniate",
        }
    }

    /// Holds SQLite's write lock on the database in `dir` from a connection of its own, as
    /// another server process on the same file would, until it is dropped.
    pub(super) fn hold_write_lock(dir: &std::path::Path) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(dir.join("aniate.db")).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn
    }

    /// Sends `reservations` at once. With `locked`, another connection holds the write lock
    /// meanwhile, so that no run can write its own: they all wait in the usage writer (checked)
    /// and go into its next batch together once the lock is let go, 100 ms later.
    async fn reserve_all(
        db: &Db,
        dir: &std::path::Path,
        reservations: Vec<TokenReservation>,
        locked: bool,
    ) -> Vec<DbResult<Option<i64>>> {
        if !locked {
            // In this task, with no yield before every reservation has been tried: the usage
            // writer gets no turn between a settlement sent before and these reservations.
            return futures_util::future::join_all(reservations.into_iter().map(|r| db.reserve_tokens(r))).await;
        }
        let lock = hold_write_lock(dir);
        let db = db.clone();
        let runs = tokio::spawn(async move {
            futures_util::future::join_all(reservations.into_iter().map(|r| db.reserve_tokens(r))).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!runs.is_finished(), "reservations were written while another connection held the lock");
        drop(lock);
        runs.await.unwrap()
    }

    /// Reservations sent at once are exact, each insert seeing the ones before it, whether the
    /// runs write them themselves or the usage writer writes them in one batch: 40 runs of 100
    /// tokens on a 1,000-token plan get exactly 10 rows, in the month's first write (which makes
    /// the month's row) and after it. A settlement sent just before reservations is written
    /// before them and frees what its run did not use: a run never writes its own reservation
    /// past a settlement still waiting.
    async fn reservations_on_sqlite_are_exact(locked: bool) {
        let (dir, db, user, month) = sqlite_with_user("batch@example.test").await;
        let runs: Vec<_> = (0..40).map(|n| reservation(user, n, month)).collect();
        let outcomes = if locked {
            reserve_all(&db, dir.path(), runs, true).await
        } else {
            // Each written by its run, at once: the future is done in its first poll.
            let at_once = runs.into_iter().map(|r| futures_util::FutureExt::now_or_never(db.reserve_tokens(r)));
            at_once.map(|outcome| outcome.expect("a run that need not wait writes its own reservation")).collect()
        };
        let ids: Vec<i64> = outcomes.into_iter().filter_map(Result::unwrap).collect();
        assert_eq!(ids.len(), 10, "{ids:?}");
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 10);

        // One run is cancelled before the provider took it (no tokens used), settled just before
        // five more reservations: the 100 tokens it frees make room for exactly one of them.
        let record = settled_run(user, "cancelled", 0);
        db.settle_usage(ids[0], month, record);
        let more = (40..45).map(|n| reservation(user, n, month)).collect();
        let more: Vec<Option<i64>> =
            reserve_all(&db, dir.path(), more, false).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(more.iter().flatten().count(), 1, "{more:?}");
        db.flush_usage().await;
        assert!(db.usage_writer.settled(), "every settlement written is counted down");
        assert_eq!(db.tokens_since(user, month).await.unwrap(), 1_000);
        db.close().await;
    }

    #[tokio::test]
    async fn reservations_written_by_their_runs_are_exact() {
        reservations_on_sqlite_are_exact(false).await;
    }

    #[tokio::test]
    async fn batched_reservations_on_sqlite_are_exact() {
        reservations_on_sqlite_are_exact(true).await;
    }

    /// On a SQLite file usage rows are written on a connection of their own ([`SqliteUsage`],
    /// so that its page cache survives the pool's other connections): with every pooled
    /// connection taken, a reservation still goes through. `Db::close` closes it with the pool, so a clean stop
    /// leaves no file of the database open in the process. (Whether SQLite then deletes the
    /// WAL is not the sign: connections closed at the same time on their worker threads can
    /// each find another still open, and leave it for the next open to fold back.)
    #[tokio::test]
    async fn the_sqlite_usage_writer_has_a_connection_of_its_own() {
        let (dir, db, user, month) = sqlite_with_user("own@example.test").await;
        let first = db.reserve_tokens(reservation(user, 0, month)).await.unwrap().unwrap();

        // Every pooled connection, each acquired to the end: an acquire given up while it was
        // still opening a connection would leave that connection to close on its own thread,
        // after `close` below.
        let mut taken = Vec::new();
        for _ in 0..db.pool.options().get_max_connections() {
            taken.push(db.pool.acquire().await.unwrap());
        }
        assert!(db.pool.try_acquire().is_none());
        let reserved =
            tokio::time::timeout(std::time::Duration::from_secs(2), db.reserve_tokens(reservation(user, 1, month)))
                .await;
        assert!(matches!(reserved, Ok(Ok(Some(_)))), "with the pool exhausted: {reserved:?}");
        // The usage writer too: a settlement waiting sends the next reservation through it.
        let record = settled_run(user, "ok", 1);
        db.settle_usage(first, month, record);
        let through_writer = db.reserve_tokens(reservation(user, 2, month));
        let reserved = tokio::time::timeout(std::time::Duration::from_secs(2), through_writer).await;
        assert!(matches!(reserved, Ok(Ok(Some(_)))), "through the writer, with the pool exhausted: {reserved:?}");
        drop(taken);
        assert_eq!(db.usage_statuses("req-0").await.unwrap(), ["ok"], "the settlement was written");

        db.close().await;
        #[cfg(target_os = "linux")]
        {
            let open = super::super::tests::open_files_under(dir.path());
            assert!(open.is_empty(), "still open after close, so a connection was left open: {open:?}");
        }
    }

    /// A row that cannot be written fails its own run only: a reservation for a user that is
    /// gone (a foreign key the insert breaks), sent at once with others, gets an error and the
    /// others their rows, whether each run writes its own or they share the writer's batch.
    async fn a_failing_reservation_fails_only_its_run(locked: bool) {
        let (dir, db, user, month) = sqlite_with_user("batch@example.test").await;
        let runs = (0..6).map(|n| reservation(if n == 2 { user + 1_000 } else { user }, n, month)).collect();
        let outcomes = reserve_all(&db, dir.path(), runs, locked).await;
        assert!(outcomes[2].is_err(), "{outcomes:?}");
        let reserved = outcomes.iter().filter(|outcome| matches!(outcome, Ok(Some(_)))).count();
        assert_eq!(reserved, 5, "{outcomes:?}");
        db.close().await;
    }

    #[tokio::test]
    async fn a_failing_reservation_does_not_fail_its_batch() {
        a_failing_reservation_fails_only_its_run(true).await;
    }

    #[tokio::test]
    async fn a_failing_reservation_written_by_its_run_fails_alone() {
        a_failing_reservation_fails_only_its_run(false).await;
    }
}
