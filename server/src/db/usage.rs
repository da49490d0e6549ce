//! The `usage` table: one row per tool run, whatever its outcome.

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

/// Most usage rows settled in one transaction.
const MAX_BATCH: usize = 256;

/// A finished run's real cost, to be written by the usage writer.
#[derive(Debug)]
struct Settlement {
    usage_id: i64,
    /// The month the run's reservation was counted in ([`TokenReservation::month_start_ms`]).
    month_start_ms: i64,
    record: UsageRecord,
}

/// How one reservation attempt ended.
enum Attempt {
    Reserved(i64),
    Refused,
    /// The user's month has no `usage_months` row yet.
    NoMonth,
}

enum WriterMessage {
    Settle(Settlement),
    /// Answered once everything sent before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending side of the usage writer: one task that settles finished runs in batches.
///
/// A run's row is inserted, as `running` and holding its reservation, before the model is
/// called ([`Db::reserve_tokens`]); settling it to its real cost is off the run's path. The
/// writer takes every settlement waiting when it wakes (up to [`MAX_BATCH`]) and writes them in
/// one transaction, so under load one commit serves many runs, and an idle server writes each
/// at once. What a crash can lose is bounded: a SIGTERM drains the writer ([`Db::close`]); a
/// SIGKILL loses at most the batch being written and those waiting for it, whose rows stay
/// `running` at their reservation (counted against the quota for
/// [`STALE_RESERVATION_MS`], then no longer).
#[derive(Debug, Clone)]
pub(super) struct UsageWriter {
    sender: tokio::sync::mpsc::UnboundedSender<WriterMessage>,
}

impl std::fmt::Debug for WriterMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterMessage::Settle(settlement) => f.debug_tuple("Settle").field(&settlement.usage_id).finish(),
            WriterMessage::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl UsageWriter {
    /// Starts the writer task on the current runtime.
    pub(super) fn start(pool: sqlx::AnyPool) -> UsageWriter {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_usage(pool, receiver));
        UsageWriter { sender }
    }
}

async fn write_usage(pool: sqlx::AnyPool, mut receiver: tokio::sync::mpsc::UnboundedReceiver<WriterMessage>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    while let Some(message) = receiver.recv().await {
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Settle(settlement) => batch.push(settlement),
                WriterMessage::Flush(done) => flushes.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let mut result = settle_batch(&pool, &batch).await;
            if let Err(err) = &result
                && DbError::is_unavailable_sqlx(err)
            {
                // One retry for a database that blinked; beyond that the rows stay `running`.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                result = settle_batch(&pool, &batch).await;
            }
            if let Err(err) = result {
                tracing::error!(cause = %err, runs = batch.len(), "could not record usage; the runs stay `running` at their reservation");
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Settles runs in one transaction: each row to its real cost and status, and each user's
/// month by what their runs really used.
async fn settle_batch(pool: &sqlx::AnyPool, batch: &[Settlement]) -> Result<(), sqlx::Error> {
    let mut months: std::collections::HashMap<(i64, i64), (i64, i64)> = std::collections::HashMap::new();
    let mut tx = pool.begin().await?;
    for Settlement { usage_id, month_start_ms, record } in batch {
        let done = sqlx::query(
            "UPDATE usage SET prompt_tokens = $1, completion_tokens = $2, latency_ms = $3, ttft_ms = $4, status = $5, \
             provider = $7, model = $8, cost_micro_usd = $9, priced = $10 \
             WHERE id = $6 AND status = 'running'",
        )
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
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let month = months.entry((record.user_id, *month_start_ms)).or_default();
            month.0 += to_i64(record.prompt_tokens.saturating_add(record.completion_tokens));
            month.1 += to_i64(record.cost_micro_usd);
        }
    }
    for ((user_id, month_start_ms), (tokens, cost)) in months {
        sqlx::query(
            "UPDATE usage_months SET tokens = tokens + $1, cost_micro_usd = cost_micro_usd + $4 \
             WHERE user_id = $2 AND month_start = $3",
        )
        .bind(tokens)
        .bind(user_id)
        .bind(month_start_ms)
        .bind(cost)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

impl Db {
    /// Reserves a run's tokens against the monthly quota: inserts its usage row as `running`,
    /// holding `reservation.tokens`, only if the month's settled tokens, plus the user's runs in
    /// flight at their reservation, plus this one fit the quota. `None` when they do not.
    ///
    /// Exact across server processes and cheap: it reads one `usage_months` row and the user's
    /// few `running` rows (a partial index), never the month's usage. On SQLite it is one
    /// statement, which holds the write lock from its read to its insert; on PostgreSQL the
    /// month's row is locked first.
    pub async fn reserve_tokens(&self, reservation: &TokenReservation) -> DbResult<Option<i64>> {
        match self.try_reserve(reservation).await? {
            Attempt::Reserved(id) => return Ok(Some(id)),
            Attempt::Refused => return Ok(None),
            Attempt::NoMonth => {}
        }
        // The month's first run (since the month began, or since this release first ran): make
        // its row from the usage rows (once, whoever gets there first), then ask again.
        sqlx::query(
            "INSERT INTO usage_months (user_id, month_start, tokens, cost_micro_usd) \
             SELECT $1, $2, CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT), \
                CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) FROM usage \
             WHERE user_id = $1 AND created_at >= $2 AND status <> 'running' \
             ON CONFLICT (user_id, month_start) DO NOTHING",
        )
        .bind(reservation.user_id)
        .bind(reservation.month_start_ms)
        .execute(&self.pool)
        .await?;
        match self.try_reserve(reservation).await? {
            Attempt::Reserved(id) => Ok(Some(id)),
            Attempt::Refused | Attempt::NoMonth => Ok(None),
        }
    }

    async fn try_reserve(&self, reservation: &TokenReservation) -> DbResult<Attempt> {
        let now = now_ms();
        let in_flight_since = reservation.month_start_ms.max(now - STALE_RESERVATION_MS);
        let insert = || {
            sqlx::query_as::<_, (i64,)>(
                "INSERT INTO usage (user_id, tool, model, prompt_tokens, completion_tokens, latency_ms, ttft_ms, status, request_id, created_at, cost_micro_usd, via) \
                 SELECT $1, $2, $3, $4, 0, 0, NULL, 'running', $5, $6, $10, $12 \
                 WHERE (SELECT tokens FROM usage_months WHERE user_id = $1 AND month_start = $7) \
                     + (SELECT CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) FROM usage \
                        WHERE user_id = $1 AND status = 'running' AND created_at >= $8) \
                     + $4 <= $9 \
                 AND (SELECT cost_micro_usd FROM usage_months WHERE user_id = $1 AND month_start = $7) \
                     + (SELECT CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) FROM usage \
                        WHERE user_id = $1 AND status = 'running' AND created_at >= $8) \
                     + $10 <= $11 \
                 RETURNING id",
            )
            .bind(reservation.user_id)
            .bind(&reservation.tool)
            .bind(&reservation.model)
            .bind(to_i64(reservation.tokens))
            .bind(&reservation.request_id)
            .bind(now)
            .bind(reservation.month_start_ms)
            .bind(in_flight_since)
            .bind(to_i64(reservation.tokens_per_month))
            .bind(to_i64(reservation.cost_micro_usd))
            // No limit is a limit no sum reaches, so the statement keeps one shape.
            .bind(reservation.cost_limit_micro_usd.map_or(i64::MAX, to_i64))
            .bind(reservation.via)
        };
        let month = sqlx::query("SELECT tokens FROM usage_months WHERE user_id = $1 AND month_start = $2 FOR UPDATE")
            .bind(reservation.user_id)
            .bind(reservation.month_start_ms);
        if self.backend == Backend::Postgres {
            let mut tx = self.pool.begin().await?;
            // Serialises this user's reservations and settlements (which update this row). With
            // no row there is nothing to lock, so no insert may follow: the row is made first.
            if month.fetch_optional(&mut *tx).await?.is_none() {
                return Ok(Attempt::NoMonth);
            }
            let id = insert().fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            return Ok(id.map_or(Attempt::Refused, |(id,)| Attempt::Reserved(id)));
        }
        if let Some((id,)) = insert().fetch_optional(&self.pool).await? {
            return Ok(Attempt::Reserved(id));
        }
        // Refused, or no month row. A row made since the insert (by a parallel run's first
        // attempt) gets the insert once more, so a parallel start of the month is no refusal.
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT tokens FROM usage_months WHERE user_id = $1 AND month_start = $2")
                .bind(reservation.user_id)
                .bind(reservation.month_start_ms)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(Attempt::NoMonth);
        }
        Ok(match insert().fetch_optional(&self.pool).await? {
            Some((id,)) => Attempt::Reserved(id),
            None => Attempt::Refused,
        })
    }

    /// Settles a reserved run to what it really cost and how it ended, through the usage
    /// writer: it returns at once, and the row is written with the next batch.
    pub fn settle_usage(&self, usage_id: i64, month_start_ms: i64, record: UsageRecord) {
        let settlement = Settlement { usage_id, month_start_ms, record };
        if let Err(unsent) = self.usage_writer.sender.send(WriterMessage::Settle(settlement)) {
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
