//! `/admin/*`: tool management for admins.
//!
//! Each action is one function here ([`push_tool`], [`deactivate`], [`rollback`]) that both the
//! JSON API and the console's forms call, so the two doors cannot drift apart.

use aniate_proto::{
    api::{AdminTool, RollbackRequest, ToolUpsert, ToolUpsertResponse, ToolVersion, ToolVersionInfo, UpsertOutcome},
    error::ErrorBody,
};
use axum::{Json, extract::State, http::StatusCode};

use super::{
    AppState,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, SlugPath},
};
use crate::{auth::AdminUser, db::StoredTool};

/// Validates and stores a tool pushed by `author` (an admin's email).
pub async fn push_tool(state: &AppState, author: &str, tool: &ToolUpsert) -> ApiResult<(StoredTool, UpsertOutcome)> {
    crate::tooldef::validate(tool).map_err(ApiError::invalid)?;
    let (stored, outcome) = state.db.upsert_tool(tool, author).await?;
    tracing::info!(author, tool = %stored.slug, version = stored.version, ?outcome, "tool pushed");
    Ok((stored, outcome))
}

/// Deactivates a tool; 404 when there is none.
pub async fn deactivate(state: &AppState, author: &str, slug: &str) -> ApiResult<()> {
    if !state.db.deactivate_tool(slug, author, None).await? {
        return Err(ApiError::not_found(format!("no tool `{slug}`")));
    }
    tracing::info!(author, tool = %slug, "tool deactivated");
    Ok(())
}

/// Makes a new version of `slug` equal to its version `version`; 404 when either is unknown.
pub async fn rollback(
    state: &AppState,
    author: &str,
    slug: &str,
    version: i64,
    message: Option<&str>,
) -> ApiResult<(StoredTool, UpsertOutcome)> {
    crate::tooldef::check_message(message).map_err(ApiError::invalid)?;
    let Some((stored, outcome)) = state.db.rollback_tool(slug, version, author, message).await? else {
        return Err(ApiError::not_found(format!("no version {version} of tool `{slug}`")));
    };
    tracing::info!(author, tool = %slug, to = version, version = stored.version, ?outcome, "tool rolled back");
    Ok((stored, outcome))
}

/// A tool's versions, newest first; 404 when there is no such tool.
pub async fn versions(state: &AppState, slug: &str) -> ApiResult<Vec<crate::db::StoredToolVersion>> {
    let versions = state.db.tool_versions(slug).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no tool `{slug}`")));
    }
    Ok(versions)
}

/// Creates or updates a tool; 201 when created. The answer is the tool's public metadata.
#[utoipa::path(post, path = "/admin/tools", tag = "admin", operation_id = "upsert_tool", security(("token" = [])),
    request_body(content = ToolUpsert, example = json!({"slug": "explain-sql", "name": "Explain SQL", "description": "Explain a SQL query",
        "system_prompt": "You explain SQL queries", "output": "text", "requires_file": false, "message": "first version"})),
    responses((status = 201, body = ToolUpsertResponse), (status = 200, body = ToolUpsertResponse), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upsert_tool(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(tool): ApiJson<ToolUpsert>,
) -> ApiResult<(StatusCode, Json<ToolUpsertResponse>)> {
    let (stored, outcome) = push_tool(&state, &admin.email, &tool).await?;
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
    deactivate(&state, &admin.email, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tool's versions, newest first, without their prompts.
#[utoipa::path(get, path = "/admin/tools/{slug}/versions", tag = "admin", operation_id = "tool_versions", params(("slug" = String, Path)), security(("token" = [])),
    responses((status = 200, body = [ToolVersionInfo]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(state): State<AppState>,
    _admin: AdminUser,
    SlugPath(slug): SlugPath,
) -> ApiResult<Json<Vec<ToolVersionInfo>>> {
    let versions = versions(&state, &slug).await?;
    Ok(Json(versions.iter().map(crate::db::StoredToolVersion::info).collect()))
}

/// One version of a tool with its prompt (admins only: the one response that carries a prompt).
#[utoipa::path(get, path = "/admin/tools/{slug}/versions/{version}", tag = "admin", operation_id = "tool_version",
    params(("slug" = String, Path), ("version" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = ToolVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show_version(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath((slug, version)): ApiPath<(String, i64)>,
) -> ApiResult<Json<ToolVersion>> {
    let found =
        if aniate_proto::tool::is_valid_slug(&slug) { state.db.tool_version(&slug, version).await? } else { None };
    let found = found.ok_or_else(|| ApiError::not_found(format!("no version {version} of tool `{slug}`")))?;
    Ok(Json(found.with_prompt()))
}

/// Makes a new version equal to an older one; clients see a newer version, never an older one.
#[utoipa::path(post, path = "/admin/tools/{slug}/rollback", tag = "admin", operation_id = "rollback_tool", params(("slug" = String, Path)), security(("token" = [])),
    request_body(content = RollbackRequest, example = json!({"version": 1, "message": "the new prompt leaks"})),
    responses((status = 200, body = ToolUpsertResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rollback_tool(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    SlugPath(slug): SlugPath,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> ApiResult<Json<ToolUpsertResponse>> {
    let (stored, outcome) = rollback(&state, &admin.email, &slug, request.version, request.message.as_deref()).await?;
    Ok(Json(ToolUpsertResponse { outcome, tool: stored.meta() }))
}
