//! `/admin/*`: tool management for admins.

use aniate_proto::{
    api::{AdminTool, ToolUpsert, ToolUpsertResponse, UpsertOutcome},
    error::ErrorBody,
};
use axum::{Json, extract::State, http::StatusCode};

use super::{
    AppState,
    error::{ApiError, ApiResult},
    extract::{ApiJson, SlugPath},
};
use crate::auth::AdminUser;

/// Creates or updates a tool; 201 when created. The answer is the tool's public metadata.
#[utoipa::path(post, path = "/admin/tools", tag = "admin", operation_id = "upsert_tool", security(("token" = [])),
    request_body(content = ToolUpsert, example = json!({"slug": "explain-sql", "name": "Explain SQL", "description": "Explain a SQL query",
        "system_prompt": "You explain SQL queries", "output": "text", "requires_file": false})),
    responses((status = 201, body = ToolUpsertResponse), (status = 200, body = ToolUpsertResponse), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upsert_tool(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(tool): ApiJson<ToolUpsert>,
) -> ApiResult<(StatusCode, Json<ToolUpsertResponse>)> {
    crate::tooldef::validate(&tool).map_err(ApiError::invalid)?;
    let (stored, outcome) = state.db.upsert_tool(&tool).await?;
    tracing::info!(admin = admin.user_id, tool = %stored.slug, version = stored.version, ?outcome, "tool pushed");
    let status = if outcome == UpsertOutcome::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ToolUpsertResponse { outcome, tool: stored.meta() })))
}

/// Every tool, active or not (the public list shows active ones only).
#[utoipa::path(get, path = "/admin/tools", tag = "admin", operation_id = "admin_list_tools", security(("token" = [])),
    responses((status = 200, description = "Every tool with an `active` flag", body = [AdminTool]), (status = 403, body = ErrorBody)))]
pub async fn list_tools(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Vec<AdminTool>>> {
    let tools = state.db.all_tools().await?;
    Ok(Json(tools.iter().map(crate::db::StoredTool::admin_view).collect()))
}

#[utoipa::path(delete, path = "/admin/tools/{slug}", tag = "admin", operation_id = "deactivate_tool", params(("slug" = String, Path)), security(("token" = [])),
    responses((status = 204, description = "Deactivated"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deactivate_tool(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    SlugPath(slug): SlugPath,
) -> ApiResult<StatusCode> {
    if !state.db.deactivate_tool(&slug).await? {
        return Err(ApiError::not_found(format!("no tool `{slug}`")));
    }
    tracing::info!(admin = admin.user_id, tool = %slug, "tool deactivated");
    Ok(StatusCode::NO_CONTENT)
}
