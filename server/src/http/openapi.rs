//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers'
//! annotations and the wire types in `aniate-proto` (utoipa), so it cannot drift from the code.

use aniate_proto::{api, error, event, tool};
use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Aniate", description = "The Aniate server: tool registry, streamed tool runs, brews, chat, files, usage."),
    paths(
        super::tools::list, super::tools::show, super::run::run_tool, super::chat::chat,
        super::account::signup, super::account::login, super::account::logout, super::account::me,
        super::admin::upsert_tool, super::admin::list_tools, super::admin::deactivate_tool,
        super::assistants::list, super::assistants::create, super::assistants::show, super::assistants::update,
        super::assistants::delete, super::files::upload, super::files::list, super::files::show, super::files::content,
        super::files::delete, super::usage::usage, super::usage::admin_usage, super::ops::healthz, super::ops::metrics,
    ),
    components(schemas(
        tool::ToolMeta, tool::OutputKind, tool::Finding, tool::Severity, tool::CommandSuggestion, tool::ToolResult,
        api::RunToolRequest, api::Credentials, api::TokenResponse, api::Me, api::Role, api::ToolUpsert,
        api::ToolUpsertResponse, api::UpsertOutcome, api::Health, api::Assistant, api::AssistantCreate,
        api::AssistantPatch, api::Visibility, api::ChatRequest, api::ChatMessage, api::ChatRole, api::FileMeta,
        api::UsageReport, api::UsageTotals, api::ToolUsage, api::DayUsage, api::AdminUsageRow,
        event::Meta, event::Delta, event::Done, event::Usage, error::ErrorBody, error::ErrorDetail, error::ErrorCode,
    )),
    modifiers(&BearerToken),
    tags(
        (name = "tools", description = "The public registry: metadata only, never a prompt"),
        (name = "runs", description = "Streamed tool runs and chats"),
        (name = "accounts"), (name = "brews"), (name = "files"), (name = "usage"), (name = "admin"), (name = "ops"),
    )
)]
pub struct ApiDoc;

/// Declares the `Authorization: Bearer <token>` scheme the `security` entries name.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("ant_…").build()),
        );
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "This document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
