//! The `plans` table: per-minute request limits and monthly token quotas.

use super::{Db, DbResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub requests_per_minute: u32,
    pub tokens_per_month: u64,
}

impl Db {
    pub async fn plan(&self, name: &str) -> DbResult<Option<Plan>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT name, requests_per_minute, tokens_per_month FROM plans WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(name, rpm, tokens)| Plan {
            name,
            requests_per_minute: u32::try_from(rpm.max(0)).unwrap_or(u32::MAX),
            tokens_per_month: u64::try_from(tokens.max(0)).unwrap_or(0),
        }))
    }

    pub async fn plans(&self) -> DbResult<Vec<Plan>> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT name, requests_per_minute, tokens_per_month FROM plans ORDER BY tokens_per_month")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, rpm, tokens)| Plan {
                name,
                requests_per_minute: u32::try_from(rpm.max(0)).unwrap_or(u32::MAX),
                tokens_per_month: u64::try_from(tokens.max(0)).unwrap_or(0),
            })
            .collect())
    }

    /// Creates a plan, or changes the limits of the plan of that name.
    pub async fn upsert_plan(&self, plan: &Plan) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO plans (name, requests_per_minute, tokens_per_month) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET requests_per_minute = excluded.requests_per_minute, \
             tokens_per_month = excluded.tokens_per_month",
        )
        .bind(&plan.name)
        .bind(i64::from(plan.requests_per_minute))
        .bind(i64::try_from(plan.tokens_per_month).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts a user on a plan; false when there is no such user.
    pub async fn set_plan(&self, email: &str, plan: &str) -> DbResult<bool> {
        let done = sqlx::query("UPDATE users SET plan = $1 WHERE email = $2")
            .bind(plan)
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
