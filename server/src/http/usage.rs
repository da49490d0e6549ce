//! `GET /usage` (the caller's) and `GET /admin/usage` (everyone's, for invoicing).

use aniate_proto::api::{AdminUsageRow, DayUsage, UsageReport};
use aniate_proto::error::ErrorBody;
use axum::{Json, extract::State};

use super::{AppState, error::ApiResult, extract::ApiQuery};
use crate::{
    auth::{AdminUser, AuthUser},
    db::{now_ms, rfc3339},
    limits::month_bounds,
};

#[utoipa::path(get, path = "/usage", tag = "usage", operation_id = "usage", security(("token" = [])), responses((status = 200, body = UsageReport)))]
pub async fn usage(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<UsageReport>> {
    Ok(Json(usage_report(&state, &user).await?))
}

/// The caller's usage this month against their plan: `GET /usage` and the console's own page.
pub async fn usage_report(state: &AppState, user: &AuthUser) -> ApiResult<UsageReport> {
    let (start, next) = month_bounds(now_ms());
    let plan = state.limiter.plan(&state.db, &user.plan).await?;
    let totals = state.db.usage_totals(user.user_id, start).await?;
    let used = totals.prompt_tokens + totals.completion_tokens;
    let by_tool = state.db.usage_by_tool(user.user_id, start).await?;
    let by_day = state
        .db
        .usage_by_day(user.user_id, start)
        .await?
        .into_iter()
        .map(|(day, totals)| DayUsage { day: rfc3339(day * 86_400_000)[..10].to_owned(), totals })
        .collect();
    let by_model = state.db.usage_by_model(user.user_id, start).await?;
    let (stored_bytes, stored_files) = state.db.stored_by(user.user_id).await?;
    let storage = aniate_proto::api::StorageUsage {
        stored_bytes,
        stored_files,
        max_stored_bytes: plan.max_stored_bytes,
        max_stored_files: plan.max_stored_files,
    };
    Ok(UsageReport {
        plan: plan.name,
        requests_per_minute: plan.requests_per_minute,
        tokens_per_month: plan.tokens_per_month,
        period_start: rfc3339(start),
        resets_at: rfc3339(next),
        tokens_used: used,
        tokens_left: plan.tokens_per_month.saturating_sub(used),
        totals,
        by_tool,
        by_day,
        by_model,
        cost_limit_micro_usd: plan.cost_micro_usd_per_month,
        storage,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct Period {
    /// RFC 3339 or a date (`2026-11-01`); default: the start of this month.
    from: Option<String>,
    /// Exclusive; default: now.
    to: Option<String>,
}

/// Parses `2026-11-01` or an RFC 3339 time into Unix milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(time) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some((time.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.with_time(time::Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000)
}

#[utoipa::path(get, path = "/admin/usage", tag = "admin", operation_id = "admin_usage",
    params(("from" = Option<String>, Query, description = "Date or RFC 3339; default: start of this month", example = "2026-11-01"),
        ("to" = Option<String>, Query, description = "Exclusive; default: now", example = "2026-12-01")),
    security(("token" = [])), responses((status = 200, body = [AdminUsageRow]), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn admin_usage(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(period): ApiQuery<Period>,
) -> ApiResult<Json<Vec<AdminUsageRow>>> {
    let from = match period.from.as_deref() {
        Some(text) => {
            parse_time(text).ok_or_else(|| super::error::ApiError::invalid("from: a date or RFC 3339 time"))?
        }
        None => month_bounds(now_ms()).0,
    };
    let to = match period.to.as_deref() {
        Some(text) => parse_time(text).ok_or_else(|| super::error::ApiError::invalid("to: a date or RFC 3339 time"))?,
        None => now_ms() + 1,
    };
    Ok(Json(state.db.admin_usage(from, to).await?))
}
