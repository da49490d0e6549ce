//! `POST /chat`: a conversation with a brew (or Aniate's default assistant), streamed exactly
//! like a tool run. The brew's prompt and model are applied here, on the server.

use aniate_proto::{
    api::{ChatRequest, ChatRole},
    error::{ErrorBody, ErrorCode},
    tool::{GuardMode, OutputKind},
};
use axum::{Extension, extract::State, http::HeaderMap, response::Response};

use super::{
    AppState, RequestId,
    error::{ApiError, ApiResult},
    extract::ApiJson,
    openapi::SseEvent,
    run::{Answer, Encoding, RunGuard, Via, enforce_limits, stream_answer},
};
use crate::{
    auth::AuthUser,
    db::DEFAULT_MODEL,
    prompt::{self, Turn},
    upstream::Sampling,
};

/// At most this many messages in one chat request.
pub const MAX_MESSAGES: usize = 200;

/// The default assistant, when no brew is named.
const DEFAULT_PROMPT: &str = "You are Aniate, a concise and precise assistant for software developers. \
Answer in Markdown. Prefer short, correct answers with code where it helps. If you are not sure, say so.";

#[utoipa::path(post, path = "/chat", tag = "runs", operation_id = "chat",
    request_body(content = ChatRequest, example = json!({"messages": [{"role": "user", "content": "Is this sound? unsafe { *ptr }"}]})), security(("token" = [])),
    responses(
        (status = 200, description = "The answer, streamed like a tool run: SSE events with `Accept: text/event-stream`, else plain text",
            content((SseEvent = "text/event-stream"), (String = "text/plain"))),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatRequest>,
) -> ApiResult<Response> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid("messages: send at least one message"));
    }
    if request.messages.len() > MAX_MESSAGES {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("at most {MAX_MESSAGES} messages per request")));
    }
    let total: usize = request.messages.iter().map(|m| m.content.len()).sum();
    if total > state.limits.max_content_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the messages total {total} bytes; this server accepts at most {}", state.limits.max_content_bytes),
        ));
    }
    if request.messages.last().is_some_and(|m| m.content.trim().is_empty()) {
        return Err(ApiError::invalid("messages: the last message is empty"));
    }
    let conversation = Conversation::resolve(&state, &user, request.assistant.as_deref()).await?;
    enforce_limits(&state, &user, &conversation.label).await?;
    let turns = request
        .messages
        .into_iter()
        .map(|m| match m.role {
            ChatRole::User => Turn::User(m.content),
            ChatRole::Assistant => Turn::Assistant(m.content),
        })
        .collect();
    let answer = conversation.answer(turns, prompt::sampling(OutputKind::Text), Via::Aniate);
    stream_answer(&state, &user, request_id, answer, Encoding::from_accept(&headers)).await
}

/// Who answers a conversation: a brew the caller may use, or Aniate's default assistant.
pub struct Conversation {
    /// `chat` or `chat:<brew slug>`: in usage, metrics and logs.
    pub label: String,
    pub model: String,
    /// Models tried in order when `model`'s provider fails before the first token.
    pub fallbacks: Vec<String>,
    prompt: String,
    guard: Option<RunGuard>,
}

impl Conversation {
    /// The brew `assistant` names (id or slug), or the default assistant; 404 for a brew the
    /// caller may not use (another user's private one), exactly as for one that does not exist.
    pub async fn resolve(state: &AppState, user: &AuthUser, assistant: Option<&str>) -> ApiResult<Conversation> {
        Ok(match assistant {
            Some(id) => {
                let brew = state
                    .db
                    .visible_assistant(user.user_id, id)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("no brew `{id}`")))?;
                // A brew's owner may read their own prompt back; everyone else may not.
                let guard = (brew.owner_id != user.user_id)
                    .then(|| {
                        let key = format!("brew:{}:{}", brew.id, brew.updated_at);
                        RunGuard::new(state, &key, &brew.system_prompt, None, GuardMode::Block)
                    })
                    .flatten();
                // The plan may have changed since the user saved their brew: checked on every
                // chat. A global brew's models are an admin's choice, not the user's.
                if brew.owner_id == user.user_id {
                    let models: Vec<&str> =
                        std::iter::once(brew.model.as_str()).chain(brew.fallbacks.iter().map(String::as_str)).collect();
                    super::assistants::check_plan_models(state, user, &models).await?;
                }
                Conversation {
                    label: format!("chat:{}", brew.slug),
                    model: brew.model,
                    fallbacks: brew.fallbacks,
                    prompt: brew.system_prompt,
                    guard,
                }
            }
            None => Conversation {
                label: "chat".to_owned(),
                model: DEFAULT_MODEL.to_owned(),
                fallbacks: Vec::new(),
                prompt: DEFAULT_PROMPT.to_owned(),
                guard: RunGuard::new(state, "chat", DEFAULT_PROMPT, None, GuardMode::Block),
            },
        })
    }

    /// The answer to `turns`, with the private prompt first.
    pub fn answer(self, turns: Vec<Turn>, sampling: Sampling, via: Via) -> Answer {
        Answer {
            label: self.label,
            version: 0,
            model: self.model,
            fallbacks: self.fallbacks,
            kind: OutputKind::Text,
            messages: prompt::chat_messages(self.prompt, turns),
            sampling,
            original: String::new(),
            guard: self.guard,
            via,
        }
    }
}
