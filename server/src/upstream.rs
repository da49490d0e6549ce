//! The client of the LLM provider: any OpenAI-compatible `/chat/completions` endpoint (Groq by
//! default; OpenAI, Ollama, vLLM and LiteLLM work the same way).
//!
//! Each provider has one pooled `reqwest` client, except a plain-`http://` one, whose
//! connections the runs drive themselves ([`inline`]). A run is a streamed completion; dropping
//! an [`UpstreamStream`] drops the provider connection's body, which is how a client that goes
//! away cancels the provider request at once.
//!
//! **Architecture Invariant:** nothing the provider says is logged verbatim or relayed to a
//! client verbatim: provider error bodies may echo the request, prompt included.

use std::{collections::VecDeque, pin::Pin, time::Duration};

use aniate_proto::{event::Usage, sse::SseParser};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

mod inline;

/// Groq's OpenAI-compatible API, the default provider.
pub const DEFAULT_UPSTREAM_URL: &str = "https://api.groq.com/openai/v1";

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The OpenAI-compatible base URL, e.g. `https://api.groq.com/openai/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// From sending the request to the first token.
    pub first_token_timeout: Duration,
    /// The longest silence allowed between two chunks of a stream.
    pub idle_timeout: Duration,
}

/// Why a provider call failed. Each maps to one client-facing error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("the model provider could not be reached")]
    Unreachable,
    #[error("the model provider answered HTTP {status}")]
    Status { status: u16, retry_after: Option<u64> },
    #[error("the model provider did not start answering in time")]
    FirstTokenTimeout,
    #[error("the model provider stopped sending mid-answer")]
    IdleTimeout,
    #[error("the model provider closed the stream before the answer was complete")]
    Disconnected,
    #[error("the model provider sent a malformed stream")]
    Malformed,
    #[error("the model provider reported an error mid-answer")]
    StreamError,
}

impl ProviderError {
    /// A short, stable label for logs, metrics and the usage table.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::Unreachable => "provider_unreachable",
            ProviderError::Status { status: 429, .. } => "provider_rate_limited",
            ProviderError::Status { .. } => "provider_status",
            ProviderError::FirstTokenTimeout | ProviderError::IdleTimeout => "provider_timeout",
            ProviderError::Disconnected => "provider_disconnected",
            ProviderError::Malformed => "provider_malformed",
            ProviderError::StreamError => "provider_error",
        }
    }
}

/// One message of a chat completion request.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// The sampling settings of one completion. The server sets them per output kind; the
/// OpenAI-compatible door lets a client narrow them within those caps.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The answer's length cap, so that a run cannot cost more than it reserved.
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    stream_options: StreamOptions,
    #[serde(flatten)]
    sampling: &'a Sampling,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// Groq reports usage here when `stream_options` is not honoured.
    #[serde(default)]
    x_groq: Option<GroqExtra>,
    /// An OpenAI-style `{"error": {...}}` sent as a stream event: the answer failed.
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct GroqExtra {
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

/// What a provider stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    Delta(String),
    Finish(String),
    Usage(Usage),
}

/// The pooled provider client.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The connections of a plain-`http://` provider, driven by the runs that read them
    /// ([`inline`]); `None` for the rest, which go through `client`.
    inline: Option<std::sync::Arc<inline::InlinePool>>,
    client: reqwest::Client,
    chat_url: String,
    /// Accept, User-Agent and the key's Authorization, made once rather than per run.
    headers: http::HeaderMap,
    first_token_timeout: Duration,
    idle_timeout: Duration,
}

impl Provider {
    pub fn new(config: ProviderConfig) -> anyhow::Result<Provider> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build()?;
        let chat_url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("text/event-stream"));
        headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT));
        if let Some(key) = config.api_key.filter(|key| !key.is_empty()) {
            let mut value = http::HeaderValue::try_from(format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the API key of {} is not a valid HTTP header value", config.base_url))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Ok(Provider {
            inline: inline::InlinePool::for_url(&chat_url, config.connect_timeout),
            client,
            chat_url,
            headers,
            first_token_timeout: config.first_token_timeout,
            idle_timeout: config.idle_timeout,
        })
    }

    /// Starts a streamed completion and waits for the provider's response headers. The first
    /// token is due by this provider's first-token timeout or `deadline` (the run's), whichever
    /// comes first.
    pub async fn stream_chat(
        &self,
        model: &str,
        messages: &[ChatMessage],
        sampling: &Sampling,
        deadline: Instant,
    ) -> Result<UpstreamStream, ProviderError> {
        let first_deadline = (Instant::now() + self.first_token_timeout).min(deadline);
        let request = CompletionRequest {
            model,
            messages,
            stream: true,
            stream_options: StreamOptions { include_usage: true },
            sampling,
        };
        let body = Bytes::from(serde_json::to_vec(&request).map_err(|err| {
            tracing::warn!(cause = %err, "provider request could not be encoded");
            ProviderError::Unreachable
        })?);
        let (status, retry_after, body) = tokio::time::timeout_at(first_deadline, self.post(body))
            .await
            .map_err(|_| ProviderError::FirstTokenTimeout)??;
        if !status.is_success() {
            let error_type = provider_error_type(body).await;
            tracing::warn!(status = status.as_u16(), error_type, "provider refused the request");
            return Err(ProviderError::Status { status: status.as_u16(), retry_after });
        }
        Ok(UpstreamStream {
            body,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            first_deadline: Some(first_deadline),
            idle_timeout: self.idle_timeout,
            permit: None,
            finished: false,
            saw_finish: false,
            saw_done: false,
        })
    }

    /// Sends the completion request and waits for the response head (its status and
    /// `Retry-After`): on a connection of the inline pool for a plain-`http://` provider, else
    /// through reqwest.
    async fn post(&self, body: Bytes) -> Result<(http::StatusCode, Option<u64>, ByteStream), ProviderError> {
        if let Some(pool) = &self.inline {
            let (status, headers, body) = pool.post(&self.headers, body).await.map_err(|err| {
                tracing::warn!(cause = %err, "provider request failed");
                // As reqwest's connect timeout was before.
                if matches!(err, inline::SendError::ConnectTimeout) {
                    ProviderError::FirstTokenTimeout
                } else {
                    ProviderError::Unreachable
                }
            })?;
            return Ok((status, retry_after(&headers), Box::pin(body.map_err(BoxError::from))));
        }
        let response = self
            .client
            .post(&self.chat_url)
            .headers(self.headers.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| {
                tracing::warn!(cause = %err, "provider request failed");
                if err.is_timeout() { ProviderError::FirstTokenTimeout } else { ProviderError::Unreachable }
            })?;
        let (status, retry_after) = (response.status(), retry_after(response.headers()));
        Ok((status, retry_after, Box::pin(response.bytes_stream().map_err(BoxError::from))))
    }
}

/// A `Retry-After` given in seconds.
fn retry_after(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

/// Reads the `error.type` (or `error.code`) of an OpenAI-style error body: a short label, safe
/// to log, unlike the message, which may quote the request.
async fn provider_error_type(mut body: ByteStream) -> String {
    #[derive(Deserialize)]
    struct ErrorEnvelope {
        error: ErrorFields,
    }
    #[derive(Deserialize)]
    struct ErrorFields {
        #[serde(rename = "type", default)]
        kind: Option<serde_json::Value>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    }
    const LIMIT: usize = 64 * 1024;
    let read = async {
        let mut collected = Vec::new();
        while let Some(chunk) = body.next().await {
            collected.extend_from_slice(&chunk.ok()?);
            if collected.len() > LIMIT {
                return None;
            }
        }
        Some(collected)
    };
    let Ok(Some(body)) = tokio::time::timeout(Duration::from_secs(2), read).await else {
        return "unreadable".to_owned();
    };
    let label = serde_json::from_slice::<ErrorEnvelope>(&body)
        .ok()
        .and_then(|envelope| envelope.error.kind.or(envelope.error.code))
        .map(|value| match value {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        })
        .unwrap_or_else(|| "unknown".to_owned());
    label.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(48).collect()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

const USER_AGENT: &str = concat!("ant-server/", env!("CARGO_PKG_VERSION"));

/// A provider's streamed answer. Dropping it cancels the provider request.
pub struct UpstreamStream {
    body: ByteStream,
    parser: SseParser,
    pending: VecDeque<UpstreamEvent>,
    /// Until the first content arrives, the deadline for it; afterwards, `None` and the idle
    /// timeout applies per chunk.
    first_deadline: Option<Instant>,
    idle_timeout: Duration,
    finished: bool,
    saw_finish: bool,
    saw_done: bool,
    /// The provider's concurrency slot, held while the stream lives (`max_concurrency`).
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl UpstreamStream {
    /// Keeps a concurrency slot of the provider until the stream is dropped.
    pub fn hold(&mut self, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
        self.permit = permit;
    }

    /// Cancels the provider request now: the connection's body is dropped (so the provider
    /// sees the request go away) and the stream ends.
    pub fn cancel(&mut self) {
        self.body = Box::pin(futures_util::stream::empty());
        self.pending.clear();
        self.finished = true;
        self.permit = None;
    }

    /// The next event; `None` at the clean end of the stream.
    pub async fn next(&mut self) -> Option<Result<UpstreamEvent, ProviderError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if matches!(event, UpstreamEvent::Delta(_)) {
                    self.first_deadline = None;
                }
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            if self.saw_done {
                // Read the body to its end so the connection goes back to the pool instead of
                // being closed; the rest is only the transfer's terminator.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_millis(200), self.body.next()).await {}
                self.finished = true;
                return None;
            }
            let deadline = self.first_deadline.unwrap_or_else(|| Instant::now() + self.idle_timeout);
            let chunk = match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => {
                    self.finished = true;
                    return Some(Err(if self.first_deadline.is_some() {
                        ProviderError::FirstTokenTimeout
                    } else {
                        ProviderError::IdleTimeout
                    }));
                }
                Ok(None) => {
                    self.finished = true;
                    // A provider may omit `[DONE]`, but not the finish reason.
                    return if self.saw_finish { None } else { Some(Err(ProviderError::Disconnected)) };
                }
                Ok(Some(Err(err))) => {
                    tracing::warn!(cause = %err, "provider stream broke");
                    self.finished = true;
                    return Some(Err(ProviderError::Disconnected));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if let Err(err) = self.absorb(&chunk) {
                self.finished = true;
                return Some(Err(err));
            }
        }
    }

    fn absorb(&mut self, chunk: &[u8]) -> Result<(), ProviderError> {
        let events = self.parser.push(chunk).map_err(|_| ProviderError::Malformed)?;
        for event in events {
            let data = event.data.trim();
            if data == "[DONE]" {
                self.saw_done = true;
                return Ok(());
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|_| ProviderError::Malformed)?;
            if chunk.error.is_some() {
                // Its message may quote the request, so only the fact is logged.
                tracing::warn!("provider sent an error event mid-stream");
                return Err(ProviderError::StreamError);
            }
            for choice in chunk.choices {
                if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                    self.pending.push_back(UpstreamEvent::Delta(text));
                }
                if let Some(reason) = choice.finish_reason {
                    self.saw_finish = true;
                    self.pending.push_back(UpstreamEvent::Finish(reason));
                }
            }
            if let Some(usage) = chunk.usage.or(chunk.x_groq.and_then(|extra| extra.usage)) {
                self.pending.push_back(UpstreamEvent::Usage(Usage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                }));
            }
        }
        Ok(())
    }
}
