//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers'
//! annotations and the wire types in `aniate-proto` (utoipa), so it cannot drift from the code.
//!
//! The errors that come from the shared extractors rather than from a handler (a missing token,
//! an unreadable JSON body) are added to every operation that uses them by [`ExtractorErrors`],
//! so that no handler's annotation can forget them. `server/tests/it/schema_fuzz.rs` fuzzes the
//! live server against this document with schemathesis.

use aniate_proto::{api, error, event, tool};

use super::openai;
use axum::Json;
use utoipa::{
    OpenApi, PartialSchema, ToSchema,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type},
    },
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Aniate", description = "The Aniate server: tool registry, streamed tool runs, brews, chat, files, usage."),
    paths(
        super::tools::list, super::tools::show, super::run::run_tool, super::chat::chat,
        super::account::signup, super::account::login, super::account::logout, super::account::logout_all, super::account::me,
        super::admin::upsert_tool, super::admin::list_tools, super::admin::deactivate_tool,
        super::admin::list_versions, super::admin::show_version, super::admin::rollback_tool,
        super::assistants::list, super::assistants::create, super::assistants::show, super::assistants::update,
        super::assistants::delete, super::files::upload, super::files::list, super::files::show, super::files::content,
        super::files::delete, super::usage::usage, super::usage::admin_usage, super::ops::healthz, super::ops::metrics,
        super::openai::models, super::openai::model, super::openai::chat_completions, document,
    ),
    components(schemas(
        tool::ToolMeta, tool::OutputKind, tool::Finding, tool::Severity, tool::CommandSuggestion, tool::ToolResult,
        api::RunToolRequest, api::Credentials, api::TokenResponse, api::Me, api::Role, api::ToolUpsert,
        api::ToolUpsertResponse, api::UpsertOutcome, api::AdminTool, api::Health, api::Assistant, api::AssistantCreate,
        api::AssistantPatch, api::Visibility, api::ChatRequest, api::ChatMessage, api::ChatRole, api::FileMeta,
        api::UsageReport, api::UsageTotals, api::ToolUsage, api::DayUsage, api::StorageUsage, api::AdminUsageRow, api::ModelUsage,
        api::ToolVersionInfo, api::ToolVersion, api::RollbackRequest,
        event::Meta, event::Delta, event::Done, event::Usage, error::ErrorBody, error::ErrorDetail, error::ErrorCode,
        SseEvent, openai::ModelList, openai::Model, openai::ChatCompletionRequest, openai::StreamOptions, openai::Stop,
        openai::RequestMessage, openai::MessageRole, openai::MessageContent, openai::ContentPart, openai::ChatCompletion,
        openai::CompletionChoice, openai::AssistantMessage, openai::CompletionUsage, openai::ChatCompletionChunk,
        openai::ChunkChoice, openai::ChunkDelta, openai::OpenAiErrorBody, openai::OpenAiErrorDetail, OpenAiStreamEvent,
    )),
    modifiers(&BearerToken, &ExtractorErrors, &OptionalBinaryBodies),
    tags(
        (name = "tools", description = "The public registry: metadata only, never a prompt"),
        (name = "runs", description = "Streamed tool runs and chats"),
        (name = "accounts"), (name = "brews"), (name = "files"), (name = "usage"), (name = "admin"), (name = "ops"),
        (name = "openai", description = "The OpenAI-compatible door: tools and brews as models, errors in OpenAI's shape"),
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

/// Adds the errors of the shared extractors to every operation that uses them: `AuthUser`
/// (operations with a `security` entry) answers 401, `ApiJson` (a JSON request body) answers
/// 400 for malformed JSON, 413 for a body over the limit and 422 for a missing or mistyped
/// field. A handler's own annotation wins where it describes the same status. Under `/v1` the
/// errors have OpenAI's shape (`OpenAiErrorBody`).
struct ExtractorErrors;

impl utoipa::Modify for ExtractorErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let error_schema = if path.starts_with("/v1/") { "OpenAiErrorBody" } else { "ErrorBody" };
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description, error_schema));
                };
                if operation.security.as_ref().is_some_and(|security| !security.is_empty()) {
                    add("401", "No token, or an unknown or revoked one");
                }
                let json_body = operation
                    .request_body
                    .as_ref()
                    .is_some_and(|body| body.content.keys().any(|media_type| media_type == "application/json"));
                if json_body {
                    add("400", "The body is not JSON");
                    add("413", "The body is over this server's limit");
                    add("422", "A field is missing, of the wrong type or invalid");
                }
            }
        }
    }
}

/// Marks raw-bytes request bodies as optional: utoipa makes every non-`Option` body required,
/// but an empty body is a valid empty file (HTTP cannot tell it from a missing one), and the
/// server accepts it.
struct OptionalBinaryBodies;

impl utoipa::Modify for OptionalBinaryBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.post, &mut item.put].into_iter().flatten() {
                if let Some(body) = operation.request_body.as_mut()
                    && body.content.keys().all(|media_type| media_type == "application/octet-stream")
                {
                    body.required = Some(utoipa::openapi::Required::False);
                }
            }
        }
    }
}

/// A response with the `{"error": {...}}` body of `schema`.
fn error_response(description: &str, schema: &str) -> RefOr<utoipa::openapi::Response> {
    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
    ResponseBuilder::new().description(description).content("application/json", body).build().into()
}

/// Raw bytes: a file's content, sent and served as is.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// One Server-Sent Event of a streamed answer, as OpenAPI 3.1 describes the items of a
/// `text/event-stream`: `event` names it, `data` is a JSON document of the matching type
/// (`contentMediaType` and `contentSchema`, which schemathesis checks event by event).
pub struct SseEvent;

impl PartialSchema for SseEvent {
    fn schema() -> RefOr<Schema> {
        let event = |name: &str, data_schema: &str| {
            let mut data =
                ObjectBuilder::new().schema_type(Type::String).content_media_type("application/json").build();
            // utoipa has no typed field for `contentSchema`; extensions are written flattened
            // into the schema object, and inserting through the map keeps the key as it is.
            let content_schema = serde_json::json!({ "$ref": format!("#/components/schemas/{data_schema}") });
            data.extensions.get_or_insert_with(Default::default).insert("contentSchema".to_owned(), content_schema);
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("event", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([name])))
                .property("data", data)
                .required("event")
                .required("data")
                .build()
        };
        OneOfBuilder::new()
            .item(event("meta", "Meta"))
            .item(event("delta", "Delta"))
            .item(event("done", "Done"))
            .item(event("error", "ErrorDetail"))
            .description(Some("One event of a streamed answer: `meta`, then `delta`s, then `done` or `error`"))
            .into()
    }
}

impl ToSchema for SseEvent {}

/// One event of an OpenAI stream: `data` is a `ChatCompletionChunk` (JSON), an error body, or
/// `[DONE]` at the end. Events have no `event` name.
pub struct OpenAiStreamEvent;

impl PartialSchema for OpenAiStreamEvent {
    fn schema() -> RefOr<Schema> {
        let json_data = |schema: &str| {
            let mut data =
                ObjectBuilder::new().schema_type(Type::String).content_media_type("application/json").build();
            let content_schema = serde_json::json!({ "$ref": format!("#/components/schemas/{schema}") });
            data.extensions.get_or_insert_with(Default::default).insert("contentSchema".to_owned(), content_schema);
            data
        };
        // anyOf, not oneOf: a validator that does not decode `contentSchema` sees every branch
        // match a string.
        let data = utoipa::openapi::schema::AnyOfBuilder::new()
            .item(json_data("ChatCompletionChunk"))
            .item(json_data("OpenAiErrorBody"))
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["[DONE]"])));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("data", data)
            .required("data")
            .description(Some("One `data:` event of a streamed completion"))
            .into()
    }
}

impl ToSchema for OpenAiStreamEvent {}

#[utoipa::path(get, path = "/openapi.json", tag = "ops", operation_id = "openapi_document",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operation ids name operations in generated clients and in schemathesis' links, so two
    /// handlers with the same function name must not share one.
    #[test]
    fn operation_ids_are_unique() {
        let doc = ApiDoc::openapi();
        let mut seen = std::collections::BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let operations = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.clone().unwrap_or_default();
                assert!(!id.is_empty(), "{path} has an operation without an id");
                assert!(seen.insert(id.clone()), "operation id `{id}` is used twice (again on {path})");
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(object) => {
                    if let Some(reference) = object.get("$ref").and_then(serde_json::Value::as_str) {
                        out.push(reference);
                    }
                    object.values().for_each(|inner| refs(inner, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|inner| refs(inner, out)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for reference in found.iter().filter_map(|r| r.strip_prefix("#/components/schemas/")) {
            assert!(doc["components"]["schemas"][reference].is_object(), "dangling schema reference `{reference}`");
        }
        let done = &doc["components"]["schemas"]["Done"]["properties"];
        assert!(done["result_rejected"].is_object() && done["findings_adjusted"].is_object(), "{done}");
    }

    #[test]
    fn authenticated_and_json_operations_declare_their_extractor_errors() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let me = &doc["paths"]["/me"]["get"]["responses"];
        assert_eq!(me["401"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody");
        let signup = &doc["paths"]["/auth/signup"]["post"]["responses"];
        for status in ["400", "413", "422"] {
            assert!(signup[status].is_object(), "signup lacks {status}");
        }
        assert!(signup["401"].is_null(), "signup needs no token");
        let event = &doc["components"]["schemas"]["SseEvent"]["oneOf"][0]["properties"]["data"];
        assert_eq!(event["contentSchema"]["$ref"], "#/components/schemas/Meta");
        assert_eq!(event["contentMediaType"], "application/json");
    }
}
