//! The `usage` table: one row per tool run, whatever its outcome.

use super::{Db, DbResult, now_ms};

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

impl Db {
    pub async fn record_usage(&self, record: &UsageRecord) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO usage (user_id, tool, model, prompt_tokens, completion_tokens, latency_ms, ttft_ms, status, request_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(record.user_id)
        .bind(&record.tool)
        .bind(&record.model)
        .bind(to_i64(record.prompt_tokens))
        .bind(to_i64(record.completion_tokens))
        .bind(to_i64(record.latency_ms))
        .bind(record.ttft_ms.map(to_i64))
        .bind(&record.status)
        .bind(&record.request_id)
        .bind(now_ms())
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
