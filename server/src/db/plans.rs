//! The `plans` table: per-minute request limits, monthly token quotas and storage quotas.

use super::{Db, DbResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub requests_per_minute: u32,
    pub tokens_per_month: u64,
    /// The most bytes a user may have stored in files.
    pub max_stored_bytes: u64,
    /// The most files a user may have stored.
    pub max_stored_files: u64,
    /// Glob patterns (`groq/*`, `llama-3.1-*`) of the models its users' brews may name; `None`
    /// allows any.
    pub allowed_models: Option<Vec<String>>,
    /// The most a user may spend in a month, in micro-dollars; `None` is no limit.
    pub cost_micro_usd_per_month: Option<u64>,
}

/// A new plan's storage quota when none is given: 100 MiB in 1,000 files.
pub const DEFAULT_MAX_STORED_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_MAX_STORED_FILES: u64 = 1_000;

type PlanRow = (String, i64, i64, i64, i64, Option<String>, Option<i64>);

fn plan_of((name, rpm, tokens, bytes, files, allowed, cost): PlanRow) -> Plan {
    Plan {
        // A list that does not parse allows nothing rather than everything.
        allowed_models: allowed.map(|text| super::parse_model_list(&text).unwrap_or_default()),
        cost_micro_usd_per_month: cost.map(|cost| u64::try_from(cost.max(0)).unwrap_or(0)),
        name,
        requests_per_minute: u32::try_from(rpm.max(0)).unwrap_or(u32::MAX),
        tokens_per_month: u64::try_from(tokens.max(0)).unwrap_or(0),
        max_stored_bytes: u64::try_from(bytes.max(0)).unwrap_or(0),
        max_stored_files: u64::try_from(files.max(0)).unwrap_or(0),
    }
}

const PLAN_COLUMNS: &str = "name, requests_per_minute, tokens_per_month, max_stored_bytes, max_stored_files, \
     allowed_models, cost_micro_usd_per_month";

impl Db {
    pub async fn plan(&self, name: &str) -> DbResult<Option<Plan>> {
        let row: Option<PlanRow> = sqlx::query_as(&format!("SELECT {PLAN_COLUMNS} FROM plans WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(plan_of))
    }

    pub async fn plans(&self) -> DbResult<Vec<Plan>> {
        let rows: Vec<PlanRow> = sqlx::query_as(&format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY tokens_per_month"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(plan_of).collect())
    }

    /// Creates a plan, or changes the limits of the plan of that name.
    pub async fn upsert_plan(&self, plan: &Plan) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO plans (name, requests_per_minute, tokens_per_month, max_stored_bytes, max_stored_files, \
             allowed_models, cost_micro_usd_per_month) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (name) DO UPDATE SET requests_per_minute = excluded.requests_per_minute, \
             tokens_per_month = excluded.tokens_per_month, max_stored_bytes = excluded.max_stored_bytes, \
             max_stored_files = excluded.max_stored_files, allowed_models = excluded.allowed_models, \
             cost_micro_usd_per_month = excluded.cost_micro_usd_per_month",
        )
        .bind(&plan.name)
        .bind(i64::from(plan.requests_per_minute))
        .bind(i64::try_from(plan.tokens_per_month).unwrap_or(i64::MAX))
        .bind(i64::try_from(plan.max_stored_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(plan.max_stored_files).unwrap_or(i64::MAX))
        .bind(plan.allowed_models.as_deref().map(super::model_list_json))
        .bind(plan.cost_micro_usd_per_month.map(|cost| i64::try_from(cost).unwrap_or(i64::MAX)))
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
        self.invalidate(super::Generation::Auth).await?;
        Ok(done.rows_affected() > 0)
    }
}
