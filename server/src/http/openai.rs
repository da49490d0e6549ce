//! The OpenAI-compatible door: `GET /v1/models` and `POST /v1/chat/completions`, so that any
//! OpenAI client (the `openai` SDKs, `llm`, aider, Continue, Zed, Open WebUI) can run the
//! server's tools and brews with the same bearer tokens, while their prompts stay here.
//!
//! Nothing here relays provider text: a completion is an [`Answer`] built by `prompt` and
//! streamed by [`stream_answer`], the one path every door shares (limits, quota, usage, metrics,
//! cancellation and the prompt guard). What is OpenAI's here is only the shape: the request,
//! the [`OpenAiFormat`] the run is encoded in, and the error body, which [`openai_errors`] makes
//! from every [`ApiError`] a `/v1` route answers with, extractors' included.

use aniate_proto::{error::ErrorCode, tool::OutputKind};
use axum::{
    Extension, Json,
    extract::{Path, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppState, RequestId,
    chat::{Conversation, MAX_MESSAGES},
    error::{ApiError, ApiResult},
    extract::ApiJson,
    run::{Answer, Encoding, RunGuard, Via, enforce_limits, stream_answer},
};
use crate::{
    auth::AuthUser,
    prompt::{self, Turn},
    upstream::Sampling,
};

/// The model id prefix that names a brew (`brew:<slug>`); a bare id is a tool's slug.
pub const BREW_PREFIX: &str = "brew:";
/// What `owned_by` says of every model.
const OWNER: &str = "aniate";
/// At most this many `stop` sequences, as OpenAI allows.
const MAX_STOP: usize = 4;

/// `GET /v1/models`: `{"object": "list", "data": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

/// One model: a tool (its slug) or a brew (`brew:<slug>`). Metadata only, never a prompt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    #[schema(example = "fix")]
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds: when the tool's current version or the brew was made.
    pub created: i64,
    /// Always `aniate`.
    pub owned_by: String,
}

/// `POST /v1/chat/completions`: the fields this server reads; others are ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A tool's slug (`GET /v1/models`), or `brew:<slug>`.
    #[schema(example = "what", min_length = 1)]
    pub model: String,
    /// At most 200, whose texts total at most the content limit (else 413). The last one is
    /// the user's input; `system` and `developer` messages are context, after the tool's own
    /// prompt.
    #[schema(min_items = 1)]
    pub messages: Vec<RequestMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Only 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
    /// Lowered to the tool's own cap when higher.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`; the smaller of the two counts.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    // What is refused with a 400 is read but left out of the document, which describes what
    // the server accepts: function calling (`tools`, `functions`) and audio.
    #[serde(default)]
    #[schema(ignore)]
    pub tools: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(ignore)]
    pub functions: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(ignore)]
    pub audio: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(ignore)]
    pub modalities: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Adds a last chunk with the usage, and no choices.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `stop`: one sequence or up to four (more is a 422).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RequestMessage {
    /// `system`, `developer`, `user` or `assistant`.
    #[schema(example = "user")]
    pub role: MessageRole,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    System,
    Developer,
    User,
    Assistant,
}

/// A message's text, as a string or as text parts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message: only `text` parts are offered (another type is a 400).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    #[schema(example = "text", pattern = "^text$")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// `stream: false`: the whole answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: CompletionUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop`, or `length` when the answer reached its token cap.
    pub finish_reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<aniate_proto::event::Usage> for CompletionUsage {
    fn from(usage: aniate_proto::event::Usage) -> CompletionUsage {
        CompletionUsage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        }
    }
}

/// `stream: true`: one `data:` event of the answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    pub created: i64,
    pub model: String,
    /// One choice; none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the last chunk, with `stream_options.include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChunkDelta,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ChunkDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Every `/v1` error: `{"error": {"message", "type", "code", "param"}}`, OpenAI's shape, with
/// the status the rest of the API gives the same error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// OpenAI's code where a client acts on it (`invalid_api_key`, `model_not_found`,
    /// `rate_limit_exceeded`), else Aniate's error code.
    pub code: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
}

impl OpenAiErrorBody {
    pub fn new(error: &ApiError, param: Option<&str>) -> OpenAiErrorBody {
        let kind = match error.code {
            ErrorCode::RateLimited => "rate_limit_error",
            code if code.http_status() >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let code = match (error.code, param) {
            (ErrorCode::Unauthorized, _) => "invalid_api_key",
            (ErrorCode::NotFound, Some("model")) => "model_not_found",
            (ErrorCode::RateLimited, _) => "rate_limit_exceeded",
            (code, _) => code.as_str(),
        };
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: error.message.clone(),
                kind: kind.to_owned(),
                code: code.to_owned(),
                param: param.map(str::to_owned),
            },
        }
    }
}

/// The request field an error is about, carried from a handler to [`openai_errors`].
#[derive(Debug, Clone, Copy)]
struct ErrorParam(&'static str);

/// An error of a `/v1` handler: an [`ApiError`] and the field it is about.
pub struct OpenAiError {
    error: ApiError,
    param: Option<&'static str>,
}

impl OpenAiError {
    fn about(param: &'static str, error: ApiError) -> OpenAiError {
        OpenAiError { error, param: Some(param) }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> OpenAiError {
        OpenAiError { error, param: None }
    }
}

impl From<crate::db::DbError> for OpenAiError {
    fn from(error: crate::db::DbError) -> OpenAiError {
        ApiError::from(error).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(param) = self.param {
            response.extensions_mut().insert(ErrorParam(param));
        }
        response
    }
}

/// The one conversion of errors on `/v1` routes: any response made from an [`ApiError`]
/// (a handler's, an extractor's, a fallback's) gets OpenAI's body, keeping its status and
/// headers (`Retry-After`; `x-request-id` is added outside).
pub async fn openai_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<ApiError>().cloned() else { return response };
    let param = response.extensions().get::<ErrorParam>().map(|param| param.0);
    let (mut parts, _) = response.into_parts();
    let body = serde_json::to_vec(&OpenAiErrorBody::new(&error, param)).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Unknown paths under `/v1`: a 404 in OpenAI's shape, naming what exists.
pub async fn unknown_endpoint() -> ApiError {
    ApiError::not_found("no such endpoint; this server offers GET /v1/models and POST /v1/chat/completions")
}

#[utoipa::path(get, path = "/v1/models", tag = "openai", operation_id = "openai_models", security(("token" = [])),
    responses((status = 200, description = "The active tools, by slug, and the brews the caller may use, as `brew:<slug>`", body = ModelList),
        (status = 401, body = OpenAiErrorBody)))]
pub async fn models(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<ModelList>> {
    let model = |id: String, created_ms: i64| Model {
        id,
        object: "model".to_owned(),
        created: created_ms / 1000,
        owned_by: OWNER.to_owned(),
    };
    let mut data: Vec<Model> =
        state.db.active_tools().await?.into_iter().map(|tool| model(tool.slug, tool.updated_at)).collect();
    let mut brews = state.db.visible_assistants(user.user_id).await?;
    // A slug names the caller's own brew before a global one of the same slug (as in `/chat`).
    brews.sort_by_key(|brew| (brew.slug.clone(), brew.owner_id != user.user_id));
    brews.dedup_by(|later, earlier| later.slug == earlier.slug);
    data.extend(brews.into_iter().map(|brew| model(format!("{BREW_PREFIX}{}", brew.slug), brew.created_at)));
    Ok(Json(ModelList { object: "list".to_owned(), data }))
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai", operation_id = "openai_model", security(("token" = [])),
    params(("model" = String, Path, example = "fix")),
    responses((status = 200, body = Model), (status = 401, body = OpenAiErrorBody), (status = 404, body = OpenAiErrorBody)))]
pub async fn model(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Model>, OpenAiError> {
    let found = match id.strip_prefix(BREW_PREFIX) {
        Some(slug) => state.db.visible_assistant(user.user_id, slug).await?.map(|brew| brew.created_at),
        None => state.db.active_tool(&id).await?.map(|tool| tool.updated_at),
    };
    let created_ms = found.ok_or_else(|| OpenAiError::about("model", no_model(&id)))?;
    Ok(Json(Model { id, object: "model".to_owned(), created: created_ms / 1000, owned_by: OWNER.to_owned() }))
}

fn no_model(id: &str) -> ApiError {
    ApiError::not_found(format!("no model `{id}`: GET /v1/models lists the tools and brews you may use"))
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", operation_id = "openai_chat_completions",
    request_body(content = ChatCompletionRequest, example = json!({"model": "what", "messages": [{"role": "user", "content": "what does `set -e` do?"}]})),
    security(("token" = [])),
    responses(
        (status = 200, description = "`stream: false`: one `chat.completion`; `stream: true`: `chat.completion.chunk` events, then `data: [DONE]`",
            content((ChatCompletion = "application/json"), (super::openapi::OpenAiStreamEvent = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody), (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 413, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody), (status = 502, body = OpenAiErrorBody), (status = 504, body = OpenAiErrorBody)))]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    user: AuthUser,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    check_unsupported(&request)?;
    let (history, input) = turns(&state, &request)?;
    let stream = request.stream.unwrap_or(false);
    let include_usage =
        stream && request.stream_options.as_ref().and_then(|options| options.include_usage).unwrap_or(false);
    let format = OpenAiFormat::new(&request_id, &request.model, crate::db::now_ms() / 1000, include_usage);
    let answer = match request.model.strip_prefix(BREW_PREFIX) {
        Some(slug) => {
            let conversation = Conversation::resolve(&state, &user, Some(slug))
                .await
                .map_err(|err| if err.code == ErrorCode::NotFound { no_model(&request.model) } else { err })
                .map_err(|err| OpenAiError::about("model", err))?;
            enforce_limits(&state, &user, &conversation.label).await?;
            let sampling = sampling(&request, prompt::sampling(OutputKind::Text))?;
            let mut turns = history;
            turns.push(Turn::User(input));
            conversation.answer(turns, sampling, Via::OpenAi)
        }
        None => {
            let tool = state
                .db
                .active_tool(&request.model)
                .await?
                .ok_or_else(|| OpenAiError::about("model", no_model(&request.model)))?;
            enforce_limits(&state, &user, &tool.slug).await?;
            let sampling = sampling(&request, prompt::sampling(tool.output))?;
            let guard = RunGuard::new(
                &state,
                &format!("tool:{}:{}", tool.slug, tool.version),
                &tool.system_prompt,
                tool.canary.as_deref(),
                tool.guard,
            );
            let original = match tool.output {
                OutputKind::Code | OutputKind::Findings => input.clone(),
                OutputKind::Text | OutputKind::Command => String::new(),
            };
            Answer {
                label: tool.slug.clone(),
                version: tool.version,
                model: tool.model.clone(),
                fallbacks: tool.fallbacks.clone(),
                kind: tool.output,
                messages: prompt::tool_conversation_messages(&tool, history, input),
                sampling,
                original,
                guard,
                via: Via::OpenAi,
            }
        }
    };
    let encoding = if stream { Encoding::OpenAiChunks(format) } else { Encoding::OpenAiJson(format) };
    Ok(stream_answer(&state, &user, request_id, answer, encoding).await?)
}

/// What this door does not offer, refused before anything else (400, as OpenAI refuses a
/// parameter it does not know).
fn check_unsupported(request: &ChatCompletionRequest) -> Result<(), OpenAiError> {
    let unsupported =
        |param: &'static str, message: &str| Err(OpenAiError::about(param, ApiError::bad_request(message)));
    if request.n.is_some_and(|n| n != 1) {
        return unsupported("n", "n: only one choice per request (n = 1) is offered");
    }
    let given = |value: &Option<serde_json::Value>| {
        value.as_ref().is_some_and(|value| !value.is_null() && value.as_array().is_none_or(|items| !items.is_empty()))
    };
    if given(&request.tools) || given(&request.functions) {
        return unsupported("tools", "tools: function calling is not offered; each model is one Aniate tool or brew");
    }
    let wants_audio = request.modalities.as_ref().is_some_and(|modalities| modalities.iter().any(|m| m == "audio"));
    if given(&request.audio) || wants_audio {
        return unsupported("audio", "audio: audio input and output are not offered");
    }
    Ok(())
}

/// The conversation as turns: the earlier messages (a client's `system` and `developer` ones as
/// context), and the last message, which must be the user's and is the input. 413 over the
/// message count or the content limit, 422 for an empty or misplaced input.
fn turns(state: &AppState, request: &ChatCompletionRequest) -> Result<(Vec<Turn>, String), OpenAiError> {
    let messages = &request.messages;
    if messages.is_empty() {
        return Err(OpenAiError::about("messages", ApiError::invalid("messages: send at least one message")));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(OpenAiError::about(
            "messages",
            ApiError::new(ErrorCode::PayloadTooLarge, format!("at most {MAX_MESSAGES} messages per request")),
        ));
    }
    let mut texts = Vec::with_capacity(messages.len());
    let mut total = 0usize;
    for message in messages {
        let text = match &message.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", part_text) => {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(part_text.as_deref().unwrap_or_default());
                        }
                        (kind, _) => {
                            return Err(OpenAiError::about(
                                "messages",
                                ApiError::bad_request(format!(
                                    "messages: content parts of type `{kind}` are not offered; send text"
                                )),
                            ));
                        }
                    }
                }
                text
            }
        };
        total += text.len();
        texts.push((message.role, text));
    }
    let max = state.limits.max_content_bytes;
    if total > max {
        return Err(OpenAiError::about(
            "messages",
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the messages total {total} bytes; this server accepts at most {max}"),
            ),
        ));
    }
    let Some((MessageRole::User, input)) = texts.pop() else {
        return Err(OpenAiError::about("messages", ApiError::invalid("messages: the last message must be the user's")));
    };
    if input.trim().is_empty() {
        return Err(OpenAiError::about("messages", ApiError::invalid("messages: the last message is empty")));
    }
    let history = texts
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(role, text)| match role {
            MessageRole::System | MessageRole::Developer => Turn::Context(text),
            MessageRole::User => Turn::User(text),
            MessageRole::Assistant => Turn::Assistant(text),
        })
        .collect();
    Ok((history, input))
}

/// The client's sampling settings within the server's: `max_tokens` never above the kind's cap
/// (which is what the quota reserves), values outside OpenAI's ranges refused (422).
fn sampling(request: &ChatCompletionRequest, server: Sampling) -> Result<Sampling, OpenAiError> {
    let mut sampling = server;
    let asked = [request.max_tokens, request.max_completion_tokens].into_iter().flatten().min();
    if let Some(asked) = asked {
        if asked == 0 {
            return Err(OpenAiError::about("max_tokens", ApiError::invalid("max_tokens: at least 1")));
        }
        sampling.max_tokens = sampling.max_tokens.min(asked);
    }
    if let Some(temperature) = request.temperature {
        if !(0.0..=2.0).contains(&temperature) {
            return Err(OpenAiError::about("temperature", ApiError::invalid("temperature: from 0 to 2")));
        }
        sampling.temperature = Some(temperature);
    }
    if let Some(top_p) = request.top_p {
        if !(0.0..=1.0).contains(&top_p) {
            return Err(OpenAiError::about("top_p", ApiError::invalid("top_p: from 0 to 1")));
        }
        sampling.top_p = Some(top_p);
    }
    sampling.stop = match request.stop.clone() {
        None => Vec::new(),
        Some(Stop::One(stop)) => vec![stop],
        Some(Stop::Many(stops)) => stops,
    };
    sampling.stop.retain(|stop| !stop.is_empty());
    if sampling.stop.len() > MAX_STOP {
        return Err(OpenAiError::about("stop", ApiError::invalid(format!("stop: at most {MAX_STOP} sequences"))));
    }
    sampling.seed = request.seed;
    Ok(sampling)
}

/// How one answer is written in OpenAI's format: the completion's id, model and time, shared
/// by its chunks or its one body.
pub struct OpenAiFormat {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    /// Everything of a text chunk before the text: built once, as the chunks are the hot path.
    delta_prefix: String,
}

/// Everything of a text chunk after the text.
const DELTA_SUFFIX: &str = "},\"finish_reason\":null}]}\n\n";

impl OpenAiFormat {
    pub fn new(request_id: &str, model: &str, created: i64, include_usage: bool) -> OpenAiFormat {
        let id = format!("chatcmpl-{request_id}");
        let delta_prefix = format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":",
            json_string(&id),
            json_string(model)
        );
        OpenAiFormat { id, model: model.to_owned(), created, include_usage, delta_prefix }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<CompletionUsage>) -> String {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        };
        format!("data: {}\n\n", serde_json::to_string(&chunk).unwrap_or_default())
    }

    /// The first chunk, naming the role, as OpenAI sends it.
    pub fn role_chunk(&self) -> String {
        let delta = ChunkDelta { role: Some("assistant".to_owned()), content: Some(String::new()) };
        self.chunk(vec![ChunkChoice { index: 0, delta, finish_reason: None }], None)
    }

    /// A chunk of answer text.
    pub fn delta_chunk(&self, out: &mut String, text: &str) {
        out.push_str(&self.delta_prefix);
        out.push_str(&json_string(text));
        out.push_str(DELTA_SUFFIX);
    }

    /// The end: the finish reason, the usage when asked for, `[DONE]`.
    pub fn finish_chunks(&self, out: &mut String, finish_reason: &str, usage: aniate_proto::event::Usage) {
        let choice =
            ChunkChoice { index: 0, delta: ChunkDelta::default(), finish_reason: Some(finish_reason.to_owned()) };
        out.push_str(&self.chunk(vec![choice], None));
        if self.include_usage {
            out.push_str(&self.chunk(Vec::new(), Some(usage.into())));
        }
        out.push_str("data: [DONE]\n\n");
    }

    /// An error after the answer started: an event with OpenAI's error body, which the SDKs
    /// raise as an `APIError`; the stream ends there.
    pub fn error_event(&self, out: &mut String, error: &ApiError) {
        let body = serde_json::to_string(&OpenAiErrorBody::new(error, None)).unwrap_or_default();
        out.push_str(&format!("data: {body}\n\n"));
    }

    /// The whole answer as one `chat.completion`.
    pub fn completion_body(&self, text: &str, finish_reason: &str, usage: aniate_proto::event::Usage) -> Bytes {
        let completion = ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                message: AssistantMessage { role: "assistant".to_owned(), content: text.to_owned() },
                finish_reason: finish_reason.to_owned(),
            }],
            usage: usage.into(),
        };
        Bytes::from(serde_json::to_vec(&completion).unwrap_or_default())
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_are_the_chunk_type_serialized() {
        let format = OpenAiFormat::new("req_1", "fix", 1_700_000_000, false);
        let mut out = String::new();
        format.delta_chunk(&mut out, "a \"quoted\"\nline é");
        let data = out.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        let chunk: ChatCompletionChunk = serde_json::from_str(data).unwrap();
        assert_eq!(chunk.id, "chatcmpl-req_1");
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.model, "fix");
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("a \"quoted\"\nline é"));
        assert_eq!(chunk.choices[0].finish_reason, None);
        let expected = ChatCompletionChunk {
            choices: vec![ChunkChoice {
                index: 0,
                delta: ChunkDelta { role: None, content: Some("a \"quoted\"\nline é".to_owned()) },
                finish_reason: None,
            }],
            ..chunk
        };
        assert_eq!(data, serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn the_end_has_usage_only_when_asked() {
        let usage = aniate_proto::event::Usage { prompt_tokens: 3, completion_tokens: 4 };
        for (include_usage, n_events) in [(false, 2), (true, 3)] {
            let mut out = String::new();
            OpenAiFormat::new("r", "what", 1, include_usage).finish_chunks(&mut out, "stop", usage);
            let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert_eq!(events.len(), n_events, "{out}");
            assert_eq!(*events.last().unwrap(), "data: [DONE]");
            assert!(events[0].contains("\"finish_reason\":\"stop\""), "{out}");
            if include_usage {
                assert!(events[1].contains("\"choices\":[]") && events[1].contains("\"total_tokens\":7"), "{out}");
            }
        }
    }

    #[test]
    fn errors_take_openai_types_and_codes() {
        let body = |error: ApiError, param| serde_json::to_value(OpenAiErrorBody::new(&error, param)).unwrap();
        let unauthorized = body(ApiError::unauthorized("no"), None);
        assert_eq!(unauthorized["error"]["type"], "invalid_request_error");
        assert_eq!(unauthorized["error"]["code"], "invalid_api_key");
        assert!(unauthorized["error"]["param"].is_null());
        let model = body(ApiError::not_found("no model"), Some("model"));
        assert_eq!(
            (model["error"]["code"].as_str(), model["error"]["param"].as_str()),
            (Some("model_not_found"), Some("model"))
        );
        let limited = body(ApiError::new(ErrorCode::RateLimited, "slow down"), None);
        assert_eq!(
            (limited["error"]["type"].as_str(), limited["error"]["code"].as_str()),
            (Some("rate_limit_error"), Some("rate_limit_exceeded"))
        );
        let provider = body(ApiError::new(ErrorCode::ProviderError, "down"), None);
        assert_eq!(
            (provider["error"]["type"].as_str(), provider["error"]["code"].as_str()),
            (Some("server_error"), Some("provider_error"))
        );
        let guarded = body(ApiError::new(ErrorCode::PromptProtected, "stopped"), None);
        assert_eq!(guarded["error"]["code"], "prompt_protected");
    }
}
