//! `POST /tool/{slug}`: a streamed tool run.
//!
//! The path of a run: authenticate, find the active tool, check the input, build the messages
//! (system prompt + tagged user input), open a streamed completion at the provider, wait for it
//! to start (so provider failures still get a proper HTTP status), then relay the answer in the
//! door's [`Encoding`]: Aniate SSE events, plain text, OpenAI chunks, or one OpenAI JSON body.
//! The response body owns the provider stream: when the client goes away, hyper drops the body,
//! which drops the provider connection (cancelling the request there) and records the run as
//! `cancelled`.

use aniate_proto::error::ErrorBody;
use std::{task::Poll, time::Instant};

use aniate_proto::{
    api::RunToolRequest,
    error::{ErrorCode, ErrorDetail},
    event::{Delta, Done, Meta, StreamEvent, Usage},
    tool::{GuardMode, OutputKind},
};
use axum::{
    Extension,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::{
    AppState, RequestId,
    error::{ApiError, ApiResult},
    extract::{ApiJson, SlugPath},
    openai::OpenAiFormat,
    openapi::SseEvent,
};
use crate::{
    auth::AuthUser,
    db::{TokenReservation, UsageRecord},
    guard::{Guard, Hit, PromptIndex},
    limits::{self, Decision},
    metrics::{RunLabels, TokenLabels, ToolLabels, tool_label},
    output, prompt,
    providers::{ModelRef, RouteFailure},
    upstream::{ProviderError, UpstreamEvent, UpstreamStream},
};

/// Longest `instructions`, in bytes.
pub const MAX_INSTRUCTIONS_BYTES: usize = 16 * 1024;

#[utoipa::path(post, path = "/tool/{slug}", tag = "runs", operation_id = "run_tool", params(("slug" = String, Path, example = "what")),
    request_body(content = RunToolRequest, example = json!({"instructions": "what does `set -euo pipefail` do?"})),
    security(("token" = [])),
    responses(
        (status = 200, description = "The answer: SSE events meta, delta, done or error (Accept: text/event-stream), else plain text",
            content((SseEvent = "text/event-stream"), (String = "text/plain"))),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn run_tool(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    user: AuthUser,
    SlugPath(slug): SlugPath,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<RunToolRequest>,
) -> ApiResult<Response> {
    let tool = state
        .db
        .active_tool(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tool `{slug}`; GET /tools lists them")))?;
    if let Some(file_id) = request.file_id {
        let (name, content) = super::files::load_text(&state, user.user_id, file_id).await?;
        request.content = content;
        request.filename = request.filename.or(Some(name));
    }
    let max = state.limits.max_content_bytes;
    if request.content.len() > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("content is {} bytes; this server accepts at most {max}", request.content.len()),
        ));
    }
    if request.instructions.as_ref().is_some_and(|i| i.len() > MAX_INSTRUCTIONS_BYTES) {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("instructions may be at most {MAX_INSTRUCTIONS_BYTES} bytes"),
        ));
    }
    if tool.requires_file && request.content.trim().is_empty() {
        return Err(ApiError::invalid(format!("content: tool `{slug}` needs a file; send it in `content`")));
    }
    if !tool.requires_file
        && request.content.trim().is_empty()
        && request.instructions.as_deref().is_none_or(|i| i.trim().is_empty())
    {
        return Err(ApiError::invalid(format!("tool `{slug}` needs `content` or `instructions`")));
    }
    enforce_limits(&state, &user, &tool.slug).await?;
    let answer = Answer {
        label: tool.slug.clone(),
        version: tool.version,
        model: tool.model.clone(),
        fallbacks: tool.fallbacks.clone(),
        kind: tool.output,
        messages: prompt::tool_messages(&tool, &request),
        sampling: prompt::sampling(tool.output),
        guard: RunGuard::new(
            &state,
            &format!("tool:{}:{}", tool.slug, tool.version),
            &tool.system_prompt,
            tool.canary.as_deref(),
            tool.guard,
        ),
        original: std::mem::take(&mut request.content),
        via: Via::Aniate,
    };
    stream_answer(&state, &user, request_id, answer, Encoding::from_accept(&headers)).await
}

/// How an answer is written to its client: the one thing that differs between the doors.
pub enum Encoding {
    /// Aniate's SSE events: `meta`, `delta`s, then `done` (with the structured result) or `error`.
    Sse,
    /// The answer's text as it comes, an error as a last line (curl-friendly).
    Plain,
    /// OpenAI `chat.completion.chunk` events, then `data: [DONE]`.
    OpenAiChunks(OpenAiFormat),
    /// One OpenAI `chat.completion` body, written once the answer is complete. The stream is
    /// read to its end inside the handler, so that a provider failure or a guard block is a
    /// proper HTTP status rather than a 200.
    OpenAiJson(OpenAiFormat),
}

impl Encoding {
    /// SSE when the client accepts `text/event-stream`, else plain text.
    pub fn from_accept(headers: &HeaderMap) -> Encoding {
        if wants_sse(headers) { Encoding::Sse } else { Encoding::Plain }
    }

    fn is_stream_of_events(&self) -> bool {
        matches!(self, Encoding::Sse | Encoding::OpenAiChunks(_))
    }
}

/// The door a run came in by, kept in its usage row (`usage.via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `/tool/{slug}` and `/chat`: `ant`, `ant-lsp`, the daemon, curl.
    Aniate,
    /// `/v1/chat/completions`: any OpenAI client.
    OpenAi,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Aniate => "aniate",
            Via::OpenAi => "openai",
        }
    }
}

/// Whether the client asked for Server-Sent Events.
pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"))
}

/// Refuses a model call over the user's per-minute limit (429 with `Retry-After`, naming the
/// limit). The monthly tokens are reserved later, by [`stream_answer`], once the prompt is known.
pub async fn enforce_limits(state: &AppState, user: &AuthUser, label: &str) -> ApiResult<()> {
    let plan = state.limiter.plan(&state.db, &user.plan).await?;
    if let Decision::Limited { retry_after_secs } =
        state.limiter.check_rate(user.user_id, plan.requests_per_minute, &state.metrics).await
    {
        state
            .metrics
            .rate_limited
            .get_or_create(&RunLabels { tool: tool_label(label), status: "per_minute".to_owned() })
            .inc();
        return Err(ApiError {
            code: ErrorCode::RateLimited,
            message: format!(
                "rate limit: the {} plan allows {} requests a minute; retry in {retry_after_secs} s",
                plan.name, plan.requests_per_minute
            ),
            retry_after: Some(retry_after_secs),
        });
    }
    Ok(())
}

/// Reserves the most a run may cost against the user's monthly tokens (the prompt estimated at
/// 4 characters a token, plus the answer's `max_tokens`), through the database, so that parallel
/// runs on any number of replicas cannot together overshoot the quota by more than what runs
/// use beyond their reservation. 429 with `Retry-After` (the next month) when it does not fit.
/// Returns the usage row that holds the reservation and the month it counts in, settled by
/// [`RunRecorder::finish`].
async fn reserve_tokens(
    state: &AppState,
    user: &AuthUser,
    run: &RunIdentity,
    request_id: &str,
    prompt_chars: usize,
    max_tokens: u32,
    route: &[ModelRef],
) -> ApiResult<(i64, i64)> {
    let plan = state.limiter.plan(&state.db, &user.plan).await?;
    let now = crate::db::now_ms();
    let (month_start, next_month) = limits::month_bounds(now);
    let prompt_estimate = prompt_chars.div_ceil(4) as u64;
    // The plan's cost limit is held like its tokens: the most the run may cost, reserved.
    let cost_estimate = state
        .providers
        .max_cost(route, Usage { prompt_tokens: prompt_estimate, completion_tokens: u64::from(max_tokens) });
    let reservation = TokenReservation {
        user_id: user.user_id,
        tool: run.label.clone(),
        model: run.model.clone(),
        request_id: request_id.to_owned(),
        tokens: prompt_estimate + u64::from(max_tokens),
        tokens_per_month: plan.tokens_per_month,
        cost_micro_usd: cost_estimate,
        cost_limit_micro_usd: plan.cost_micro_usd_per_month,
        month_start_ms: month_start,
        via: run.via.as_str(),
    };
    let reserved_tokens = reservation.tokens;
    if let Some(usage_id) = state.db.reserve_tokens(reservation).await? {
        return Ok((usage_id, month_start));
    }
    // Refused: this user's next runs reserve before they call the provider.
    state.limiter.note_refusal(user.user_id);
    let retry_after = u64::try_from((next_month - now) / 1000).unwrap_or(1).max(1);
    let used = state.db.tokens_since(user.user_id, month_start).await?;
    // Which limit refused the run: the tokens if they do not fit, else the cost.
    if let Some(limit) = plan.cost_micro_usd_per_month
        && used.saturating_add(reserved_tokens) <= plan.tokens_per_month
    {
        let spent = state.db.cost_since(user.user_id, month_start).await?;
        {
            state
                .metrics
                .rate_limited
                .get_or_create(&RunLabels { tool: tool_label(&run.label), status: "monthly_cost".to_owned() })
                .inc();
            let usd = crate::admin_cli::usd;
            return Err(ApiError {
                code: ErrorCode::RateLimited,
                message: format!(
                    "cost limit: this run may cost up to {}; the {} plan has {} of its {} left this month \
                     (runs in progress count at their reservation); it resets at {}",
                    usd(cost_estimate),
                    plan.name,
                    usd(limit.saturating_sub(spent)),
                    usd(limit),
                    crate::db::rfc3339(next_month)
                ),
                retry_after: Some(retry_after),
            });
        }
    }
    state
        .metrics
        .rate_limited
        .get_or_create(&RunLabels { tool: tool_label(&run.label), status: "monthly_tokens".to_owned() })
        .inc();
    let left = plan.tokens_per_month.saturating_sub(used);
    Err(ApiError {
        code: ErrorCode::RateLimited,
        message: format!(
            "quota: this run may use up to {} tokens (about {prompt_estimate} for the input, at most {max_tokens} for the answer); \
             the {} plan has {left} of its {} tokens left this month (runs in progress count at their reservation); it resets at {}",
            reserved_tokens,
            plan.name,
            plan.tokens_per_month,
            crate::db::rfc3339(next_month)
        ),
        retry_after: Some(retry_after),
    })
}

/// What a reservation records of its run, owned, so that the reservation can finish in a task
/// of its own after its client left.
struct RunIdentity {
    label: String,
    model: String,
    via: Via,
}

/// One model call to stream back: a tool run or a chat.
pub struct Answer {
    /// The tool slug, or `chat` / `chat:<brew>`; in `meta`, logs and usage, and in metrics as
    /// [`tool_label`] makes it.
    pub label: String,
    pub version: i64,
    /// `provider/model`, or a bare model of the default provider.
    pub model: String,
    /// Tried in order when the model's provider fails before the first token; empty means the
    /// catalogue's own fallbacks.
    pub fallbacks: Vec<String>,
    pub kind: OutputKind,
    pub messages: Vec<crate::upstream::ChatMessage>,
    /// Temperature, the answer's token cap (which the quota reservation counts) and the rest.
    pub sampling: crate::upstream::Sampling,
    /// The content the user sent, which a structured result is checked against.
    pub original: String,
    /// The prompt guard for this answer; `None` when the answer may repeat its prompt (guard
    /// off, or a brew's owner reading their own brew).
    pub guard: Option<RunGuard>,
    pub via: Via,
}

/// The prompt guard of one answer: the index of its private prompt and what to do on a hit.
pub struct RunGuard {
    pub index: std::sync::Arc<PromptIndex>,
    pub mode: GuardMode,
}

impl RunGuard {
    /// The guard for a prompt whose text changes only with `key`; `None` when `mode` is off.
    pub fn new(state: &AppState, key: &str, prompt: &str, canary: Option<&str>, mode: GuardMode) -> Option<RunGuard> {
        (mode != GuardMode::Off)
            .then(|| RunGuard { index: state.guards.index(key, prompt, canary, state.guard_words), mode })
    }
}

/// What the client is told when the guard stops an answer.
pub const PROMPT_PROTECTED_MESSAGE: &str = "the answer was stopped: it repeated the tool's private instructions";

/// Opens the provider stream, waits for it to start, and relays it in `encoding`.
pub async fn stream_answer(
    state: &AppState,
    user: &AuthUser,
    request_id: String,
    answer: Answer,
    encoding: Encoding,
) -> ApiResult<Response> {
    let prompt_chars: usize = answer.messages.iter().map(|m| m.content.chars().count()).sum();
    let max_tokens = answer.sampling.max_tokens;
    let route = state.providers.route(&answer.model, &answer.fallbacks);
    // The reservation and the provider call overlap, so the first token waits for the slower of
    // the two rather than for both; nothing reaches the client before the reservation is made,
    // and a refused one drops (cancels) the provider call. Only one run of a user overlaps at a
    // time, and none for a while after a refusal (`Limiter::overlap_reservation`). The recorder
    // is made as soon as the reservation is, so that a client that leaves while the provider is
    // still to answer has its run settled as cancelled rather than left `running`.
    let started = Instant::now();
    let deadline = state.providers.run_deadline();
    let reserve = {
        let (state, user, first) = (state.clone(), user.clone(), route[0].clone());
        let (route, request_id) = (route.clone(), request_id.clone());
        let identity = RunIdentity { label: answer.label.clone(), model: answer.model.clone(), via: answer.via };
        let mut reserving = Box::pin(async move {
            let reserved =
                reserve_tokens(&state, &user, &identity, &request_id, prompt_chars, max_tokens, &route).await;
            reserved.map(|(usage_id, month_start_ms)| RunRecorder {
                state,
                usage_id,
                month_start_ms,
                user_id: user.user_id,
                tool: identity.label,
                answered_by: first,
                request_id,
                started,
                ttft_ms: None,
                prompt_chars,
                completion_chars: 0,
                usage: None,
                provider_started: false,
                finished: false,
            })
        });
        async move {
            // A reservation that can be written at once (`Db::reserve_tokens`: the usage rows'
            // SQLite connection free, no settlement waiting) is written here, in this task, in
            // this first poll, which comes after the provider call's (the `join!` below).
            if let Poll::Ready(recorder) = std::future::poll_fn(|cx| Poll::Ready(reserving.as_mut().poll(cx))).await {
                return recorder;
            }
            // The rest runs to its end in a task of its own: its write may commit after the
            // client left (a dropped wait for the usage writer does not stop the write), and
            // then it must still be settled. When nobody waits for it any more, the failed send
            // hands the recorder back, and dropping it settles the run as cancelled.
            let (reserved_tx, reserved_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = reserved_tx.send(reserving.await);
            });
            reserved_rx.await.unwrap_or_else(|_| Err(ApiError::internal()))
        }
    };
    let open = state.providers.open(&route, &answer.messages, &answer.sampling, deadline, &state.metrics);
    let (reserved, opened) = if let Some(_overlapping) = state.limiter.overlap_reservation(user.user_id) {
        // The provider call first, so that its request is on its way while the reservation
        // is written.
        let (opened, reserved) = tokio::join!(open, reserve);
        (reserved, opened)
    } else {
        let recorder = reserve.await?;
        (Ok(recorder), open.await)
    };
    let mut recorder = reserved?;

    // The router waits for the answer to start, so that a provider that fails before its first
    // token gets a real HTTP status rather than a 200 with an error event, and so that the run
    // can move to its next fallback until then.
    let opened = match opened {
        Ok(opened) => opened,
        Err(failure) => {
            recorder.provider_started = failure.provider_started;
            recorder.finish(failure.error.label());
            return Err(route_api_error(&failure));
        }
    };
    recorder.provider_started = true;
    recorder.answered_by = opened.answered_by;
    let (upstream, first) = (opened.stream, opened.first);
    if matches!(first, Some(Ok(UpstreamEvent::Delta(_)))) {
        recorder.mark_first_token();
    }

    let meta = Meta {
        request_id,
        tool: answer.label.clone(),
        version: answer.version,
        model: recorder.answered_by.model.clone(),
        provider: Some(recorder.answered_by.provider.clone()),
    };
    let guard = answer.guard.map(|guard| ActiveGuard { guard: Guard::new(guard.index, guard.mode), mode: guard.mode });
    let mut run = RunStream {
        guard,
        upstream,
        replay: first,
        recorder,
        kind: answer.kind,
        original: answer.original,
        answer: String::new(),
        finish_reason: None,
        encoding,
        meta: Some(meta),
        ended: false,
        collected: String::new(),
        failure: None,
    };
    if let Encoding::OpenAiJson(_) = run.encoding {
        // Read the whole answer here; dropping this future (the client left) drops the run, which
        // cancels the provider request and records `cancelled`, as for a stream.
        let body = run.next_bytes().await.unwrap_or_default();
        if let Some(failure) = run.failure.take() {
            return Err(failure);
        }
        let mut response = Body::from(body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(response);
    }
    let sse = run.encoding.is_stream_of_events();
    let body = Body::from_stream(futures_util::stream::unfold(run, |mut run| async move {
        let bytes = run.next_bytes().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(bytes), run))
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    if sse {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tell nginx-style proxies not to buffer the stream.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    Ok(response)
}

/// The client-facing error when every entry of a run's route failed: the first entry's class
/// (429, 502, 504), naming what was tried.
fn route_api_error(failure: &RouteFailure) -> ApiError {
    let mut error = provider_api_error(&failure.error);
    if failure.tried.len() > 1 {
        error.message = format!("{} (tried {})", error.message, failure.tried.join(", "));
    }
    error
}

/// The client-facing error for a provider failure. Never the provider's own words.
fn provider_api_error(err: &ProviderError) -> ApiError {
    match err {
        ProviderError::Status { status: 429, retry_after } => {
            let seconds = retry_after.unwrap_or(1);
            ApiError {
                code: ErrorCode::RateLimited,
                message: format!("the model provider is rate limiting this server; retry in {seconds} s"),
                retry_after: Some(seconds),
            }
        }
        ProviderError::FirstTokenTimeout | ProviderError::IdleTimeout => {
            ApiError::new(ErrorCode::ProviderTimeout, err.to_string())
        }
        _ => ApiError::new(ErrorCode::ProviderError, err.to_string()),
    }
}

/// The relay from provider to client, pulled by hyper as it writes the response body.
struct RunStream {
    upstream: UpstreamStream,
    /// The event read before responding, to be relayed first.
    replay: Option<Result<UpstreamEvent, ProviderError>>,
    recorder: RunRecorder,
    kind: OutputKind,
    original: String,
    answer: String,
    finish_reason: Option<String>,
    encoding: Encoding,
    meta: Option<Meta>,
    ended: bool,
    guard: Option<ActiveGuard>,
    /// [`Encoding::OpenAiJson`]: the text released so far, sent as one body at the end.
    collected: String,
    /// [`Encoding::OpenAiJson`]: why the answer failed, to become the response's status.
    failure: Option<ApiError>,
}

struct ActiveGuard {
    guard: Guard,
    mode: GuardMode,
}

impl RunStream {
    async fn next_bytes(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if let Some(meta) = self.meta.take() {
            match &self.encoding {
                Encoding::Sse => return Some(Bytes::from(StreamEvent::Meta(meta).to_sse())),
                Encoding::OpenAiChunks(format) => return Some(Bytes::from(format.role_chunk())),
                Encoding::Plain | Encoding::OpenAiJson(_) => {}
            }
        }
        loop {
            let event = match self.replay.take() {
                Some(event) => Some(event),
                None => self.upstream.next().await,
            };
            match event {
                Some(Ok(UpstreamEvent::Delta(text))) => {
                    let mut out = String::new();
                    if self.push_delta(&mut out, text).is_err() {
                        return Some(self.block(out));
                    }
                    // Send what else is already here in the same write: fewer, larger writes
                    // when the provider is faster than the client.
                    while out.len() < COALESCE_BYTES {
                        match futures_util::FutureExt::now_or_never(self.upstream.next()) {
                            Some(Some(Ok(UpstreamEvent::Delta(text)))) => {
                                if self.push_delta(&mut out, text).is_err() {
                                    return Some(self.block(out));
                                }
                            }
                            Some(Some(Ok(UpstreamEvent::Finish(reason)))) => self.finish_reason = Some(reason),
                            Some(Some(Ok(UpstreamEvent::Usage(usage)))) => self.recorder.usage = Some(usage),
                            Some(other) => {
                                self.replay = other;
                                break;
                            }
                            None => break,
                        }
                    }
                    if out.is_empty() {
                        // The guard holds all of it back for now.
                        continue;
                    }
                    return Some(Bytes::from(out));
                }
                Some(Ok(UpstreamEvent::Finish(reason))) => self.finish_reason = Some(reason),
                Some(Ok(UpstreamEvent::Usage(usage))) => self.recorder.usage = Some(usage),
                None => {
                    // The last held-back words: checked once more now that no word can follow.
                    let mut out = String::new();
                    if self.flush_guard(&mut out).is_err() {
                        return Some(self.block(out));
                    }
                    self.ended = true;
                    let usage = self.recorder.finish("ok");
                    let finish_reason = self.finish_reason.take().unwrap_or_else(|| "stop".to_owned());
                    match &self.encoding {
                        Encoding::Sse => {}
                        Encoding::Plain => return (!out.is_empty()).then(|| Bytes::from(out)),
                        Encoding::OpenAiChunks(format) => {
                            format.finish_chunks(&mut out, &finish_reason, usage);
                            return Some(Bytes::from(out));
                        }
                        Encoding::OpenAiJson(format) => {
                            return Some(format.completion_body(&self.collected, &finish_reason, usage));
                        }
                    }
                    // Checking an answer against a file of up to a few MiB is CPU work: off the
                    // async workers. A failed check (it does not panic) would give no result.
                    let (kind, answer, original) =
                        (self.kind, std::mem::take(&mut self.answer), std::mem::take(&mut self.original));
                    let reason = finish_reason.clone();
                    let checked = if kind == OutputKind::Text {
                        output::Checked::default()
                    } else {
                        tokio::task::spawn_blocking(move || {
                            output::structured_result(kind, &answer, &original, &reason)
                        })
                        .await
                        .unwrap_or_default()
                    };
                    let done = Done {
                        usage,
                        finish_reason,
                        result: checked.result,
                        result_rejected: checked.rejected,
                        findings_adjusted: checked.findings_adjusted,
                    };
                    out.push_str(&StreamEvent::Done(done).to_sse());
                    return Some(Bytes::from(out));
                }
                Some(Err(err)) => {
                    // The text received before the failure is the user's: send what the guard
                    // still holds, unless it completes a leak.
                    let mut out = String::new();
                    if self.flush_guard(&mut out).is_err() {
                        return Some(self.block(out));
                    }
                    self.ended = true;
                    self.recorder.finish(err.label());
                    let api_error = provider_api_error(&err);
                    self.fail(&mut out, api_error);
                    return Some(Bytes::from(out));
                }
            }
        }
    }

    /// Takes one delta: passes it through the prompt guard and appends what may be sent now to
    /// `out`. `Err(Hit)` when the guard blocks the answer.
    fn push_delta(&mut self, out: &mut String, text: String) -> Result<(), Hit> {
        self.recorder.mark_first_token();
        self.recorder.completion_chars += text.chars().count();
        if self.kind != OutputKind::Text {
            self.answer.push_str(&text);
        }
        let text = match &mut self.guard {
            None => text,
            Some(active) => match active.guard.push(&text) {
                Ok(released) => released,
                Err(Hit) if active.mode == GuardMode::Block => return Err(Hit),
                Err(Hit) => {
                    // `log`: nothing was held back, so this delta is all there is to send.
                    self.log_hit();
                    text
                }
            },
        };
        self.emit(out, text);
        Ok(())
    }

    /// At the end of the answer: checks the words the guard still holds, now that no word can
    /// follow them, and appends them to `out`. `Err(Hit)` when they complete a blocked leak.
    fn flush_guard(&mut self, out: &mut String) -> Result<(), Hit> {
        match self.guard.as_mut().map(|active| (active.guard.finish(), active.mode)) {
            Some((Ok(rest), _)) => self.emit(out, rest),
            Some((Err(Hit), GuardMode::Block)) => return Err(Hit),
            Some((Err(Hit), _)) => self.log_hit(),
            None => {}
        }
        Ok(())
    }

    /// Appends answer text to `out` in the run's encoding (or, for one JSON body, keeps it).
    fn emit(&mut self, out: &mut String, text: String) {
        if text.is_empty() {
            return;
        }
        match &self.encoding {
            Encoding::Sse => out.push_str(&StreamEvent::Delta(Delta { text }).to_sse()),
            Encoding::Plain => out.push_str(&text),
            Encoding::OpenAiChunks(format) => format.delta_chunk(out, &text),
            Encoding::OpenAiJson(_) => self.collected.push_str(&text),
        }
    }

    /// Ends the answer with `error` in the run's encoding: an event, a last line, or (one JSON
    /// body) the failure the handler answers with.
    fn fail(&mut self, out: &mut String, error: ApiError) {
        match &self.encoding {
            Encoding::Sse => {
                let detail = ErrorDetail { code: error.code, message: error.message };
                out.push_str(&StreamEvent::Error(detail).to_sse());
            }
            Encoding::Plain => out.push_str(&format!("\n[aniate error: {}: {}]\n", error.code, error.message)),
            Encoding::OpenAiChunks(format) => format.error_event(out, &error),
            Encoding::OpenAiJson(_) => self.failure = Some(error),
        }
    }

    /// Ends an answer that repeated its private prompt: what was released before stays sent,
    /// the provider request is cancelled, the client gets `prompt_protected`.
    fn block(&mut self, mut out: String) -> Bytes {
        if let Some(mut active) = self.guard.take() {
            self.emit(&mut out, active.guard.take_before_hit());
        }
        self.ended = true;
        self.upstream.cancel();
        self.report_hit(GuardMode::Block);
        self.recorder.finish("blocked");
        self.fail(&mut out, ApiError::new(ErrorCode::PromptProtected, PROMPT_PROTECTED_MESSAGE));
        Bytes::from(out)
    }

    /// `guard = "log"`: reports the first hit of this answer and stops watching it.
    fn log_hit(&mut self) {
        self.guard = None;
        self.report_hit(GuardMode::Log);
    }

    /// Counts a hit and logs one warning naming the request, tool and user (never the text).
    fn report_hit(&self, mode: GuardMode) {
        let metrics = &self.recorder.state.metrics;
        let counter =
            if mode == GuardMode::Block { &metrics.prompt_guard_blocks } else { &metrics.prompt_guard_logged };
        counter.get_or_create(&ToolLabels { tool: tool_label(&self.recorder.tool) }).inc();
        let what = if mode == GuardMode::Block {
            "prompt guard stopped an answer that repeated the private prompt"
        } else {
            "an answer repeated the private prompt (guard = log: relayed)"
        };
        tracing::warn!(
            request_id = %self.recorder.request_id,
            tool = %self.recorder.tool,
            user_id = self.recorder.user_id,
            "{what}"
        );
    }
}

/// Deltas already received are joined into one write up to this size.
const COALESCE_BYTES: usize = 16 * 1024;

/// Records a run in the usage table and the metrics exactly once: when it finishes, or, if
/// the client went away first, when it is dropped (as `cancelled`). Recording settles the run's
/// reserved usage row to the real cost.
struct RunRecorder {
    state: AppState,
    /// The usage row holding this run's token reservation.
    usage_id: i64,
    /// The month the reservation counts in.
    month_start_ms: i64,
    user_id: i64,
    tool: String,
    /// The provider and model that answer: the route's first entry until one starts answering.
    answered_by: ModelRef,
    request_id: String,
    started: Instant,
    ttft_ms: Option<u64>,
    prompt_chars: usize,
    completion_chars: usize,
    usage: Option<Usage>,
    /// Whether the provider accepted the request (and so may bill for it).
    provider_started: bool,
    finished: bool,
}

impl RunRecorder {
    fn mark_first_token(&mut self) {
        if self.ttft_ms.is_none() {
            let elapsed = self.started.elapsed();
            self.ttft_ms = Some(elapsed.as_millis() as u64);
            self.state
                .metrics
                .time_to_first_token
                .get_or_create(&ToolLabels { tool: tool_label(&self.tool) })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Records the outcome; returns the usage, estimated at 4 characters a token when the
    /// provider reported none, and zero when the provider never accepted the request.
    fn finish(&mut self, status: &str) -> Usage {
        let usage = match (self.usage, self.provider_started) {
            (Some(usage), _) => usage,
            (None, true) => Usage {
                prompt_tokens: self.prompt_chars.div_ceil(4) as u64,
                completion_tokens: self.completion_chars.div_ceil(4) as u64,
            },
            (None, false) => Usage::default(),
        };
        if self.finished {
            return usage;
        }
        self.finished = true;
        let metrics = &self.state.metrics;
        metrics.tool_runs.get_or_create(&RunLabels { tool: tool_label(&self.tool), status: status.to_owned() }).inc();
        if status != "ok" && status != "cancelled" {
            metrics
                .tool_errors
                .get_or_create(&RunLabels { tool: tool_label(&self.tool), status: status.to_owned() })
                .inc();
        }
        for (kind, count) in [("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)] {
            metrics.tokens.get_or_create(&TokenLabels { tool: tool_label(&self.tool), kind }).inc_by(count);
        }
        let latency_ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(
            request_id = %self.request_id,
            tool = %self.tool,
            provider = %self.answered_by.provider,
            model = %self.answered_by.model,
            status,
            latency_ms,
            ttft_ms = self.ttft_ms,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            "tool run finished"
        );
        let (cost_micro_usd, priced) = self.state.providers.cost(&self.answered_by, usage);
        let record = UsageRecord {
            user_id: self.user_id,
            tool: self.tool.clone(),
            provider: self.answered_by.provider.clone(),
            model: self.answered_by.model.clone(),
            cost_micro_usd,
            priced,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            latency_ms,
            ttft_ms: self.ttft_ms,
            status: status.to_owned(),
            request_id: self.request_id.clone(),
        };
        self.state.db.settle_usage(self.usage_id, self.month_start_ms, record);
        usage
    }
}

impl Drop for RunRecorder {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("cancelled");
        }
    }
}
