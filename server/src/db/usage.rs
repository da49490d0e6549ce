//! The `usage` table: one row per tool run, whatever its outcome.

use super::{Backend, Db, DbResult, now_ms};

/// What one request cost and how it ended.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub user_id: i64,
    pub tool: String,
    pub model: String,
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
    /// The first instant of this month (Unix milliseconds).
    pub month_start_ms: i64,
    /// The door the run came in by: `aniate` or `openai`.
    pub via: &'static str,
}

impl Db {
    /// Reserves a run's tokens against the monthly quota: inserts its usage row as `running`,
    /// holding `reservation.tokens`, only if this month's usage (finished runs at their real
    /// cost, runs in flight at their reservation) plus the reservation fits the quota. `None`
    /// when it does not fit. Atomic across server processes: SQLite takes its write lock before
    /// the insert reads the sum; on PostgreSQL the user's row is locked first.
    pub async fn reserve_tokens(&self, reservation: &TokenReservation) -> DbResult<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(reservation.user_id)
                .execute(&mut *tx)
                .await?;
        }
        let id: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO usage (user_id, tool, model, prompt_tokens, completion_tokens, latency_ms, ttft_ms, status, request_id, created_at, via) \
             SELECT $1, $2, $3, $4, 0, 0, NULL, $5, $6, $7, $10 \
             WHERE (SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM usage \
                    WHERE user_id = $1 AND created_at >= $8) + $4 <= $9 \
             RETURNING id",
        )
        .bind(reservation.user_id)
        .bind(&reservation.tool)
        .bind(&reservation.model)
        .bind(to_i64(reservation.tokens))
        .bind(RUNNING_STATUS)
        .bind(&reservation.request_id)
        .bind(now_ms())
        .bind(reservation.month_start_ms)
        .bind(to_i64(reservation.tokens_per_month))
        .bind(reservation.via)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id.map(|(id,)| id))
    }

    /// Settles a reserved run to what it really cost and how it ended.
    pub async fn settle_usage(&self, usage_id: i64, record: &UsageRecord) -> DbResult<()> {
        sqlx::query(
            "UPDATE usage SET prompt_tokens = $1, completion_tokens = $2, latency_ms = $3, ttft_ms = $4, status = $5 \
             WHERE id = $6",
        )
        .bind(to_i64(record.prompt_tokens))
        .bind(to_i64(record.completion_tokens))
        .bind(to_i64(record.latency_ms))
        .bind(record.ttft_ms.map(to_i64))
        .bind(&record.status)
        .bind(usage_id)
        .execute(&self.pool)
        .await?;
        Ok(())
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

/// One row of [`Db::admin_usage`]: email, plan, tool, requests, prompt and completion tokens,
/// blocked runs, door.
type AdminUsageTuple = (String, String, String, i64, i64, i64, i64, String);

/// Sums as `BIGINT` in both dialects (PostgreSQL's `SUM(BIGINT)` is `NUMERIC`).
const TOTALS: &str =
    "COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT)";

/// Runs stopped by the prompt guard, as `BIGINT`.
const BLOCKED: &str = "CAST(COALESCE(SUM(CASE WHEN status = 'blocked' THEN 1 ELSE 0 END), 0) AS BIGINT)";

fn totals(requests: i64, prompt: i64, completion: i64) -> aniate_proto::api::UsageTotals {
    aniate_proto::api::UsageTotals {
        requests: requests.max(0) as u64,
        prompt_tokens: prompt.max(0) as u64,
        completion_tokens: completion.max(0) as u64,
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

    pub async fn usage_totals(&self, user_id: i64, since_ms: i64) -> DbResult<aniate_proto::api::UsageTotals> {
        let sql = format!("SELECT {TOTALS} FROM usage WHERE user_id = $1 AND created_at >= $2");
        let (requests, prompt, completion): (i64, i64, i64) =
            sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_one(&self.pool).await?;
        Ok(totals(requests, prompt, completion))
    }

    pub async fn usage_by_tool(&self, user_id: i64, since_ms: i64) -> DbResult<Vec<aniate_proto::api::ToolUsage>> {
        let sql = format!(
            "SELECT tool, {TOTALS}, {BLOCKED} FROM usage WHERE user_id = $1 AND created_at >= $2 GROUP BY tool ORDER BY tool"
        );
        let rows: Vec<(String, i64, i64, i64, i64)> =
            sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(tool, r, p, c, blocked)| aniate_proto::api::ToolUsage {
                tool,
                totals: totals(r, p, c),
                blocked: blocked.max(0) as u64,
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
        let rows: Vec<(i64, i64, i64, i64)> =
            sqlx::query_as(&sql).bind(user_id).bind(since_ms).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(day, r, p, c)| (day, totals(r, p, c))).collect())
    }

    /// Everyone's usage between two times, by user and tool, for invoicing.
    pub async fn admin_usage(&self, from_ms: i64, to_ms: i64) -> DbResult<Vec<aniate_proto::api::AdminUsageRow>> {
        let sql = "SELECT u.email, u.plan, usage.tool, COUNT(*), CAST(COALESCE(SUM(usage.prompt_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(usage.completion_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN usage.status = 'blocked' THEN 1 ELSE 0 END), 0) AS BIGINT), usage.via \
             FROM usage JOIN users u ON u.id = usage.user_id \
             WHERE usage.created_at >= $1 AND usage.created_at < $2 \
             GROUP BY u.email, u.plan, usage.tool, usage.via ORDER BY u.email, usage.tool, usage.via";
        let rows: Vec<AdminUsageTuple> = sqlx::query_as(sql).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(email, plan, tool, r, p, c, blocked, via)| aniate_proto::api::AdminUsageRow {
                email,
                plan,
                tool,
                totals: totals(r, p, c),
                blocked: blocked.max(0) as u64,
                via,
            })
            .collect())
    }
}
