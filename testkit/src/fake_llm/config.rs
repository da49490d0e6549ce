//! The fake's runtime configuration: models, reply script, pacing and injected faults.
//!
//! One serde shape serves the library, `PUT /_fake/config` (JSON) and `--script` (TOML),
//! so a test can write the same config in whichever form is handy.
//! Unknown keys are rejected: a typo in a test's config should fail loudly, not be ignored.

use serde::{Deserialize, Serialize};

/// The model id the fake lists when none is configured: a real Groq-hosted model name,
/// so the product's default config works against the fake unchanged.
pub const DEFAULT_MODEL: &str = "llama-3.1-8b-instant";

/// How the fake answers; replaceable at runtime.
///
/// JSON example (every key optional, missing keys take their defaults):
///
/// ```json
/// {
///   "models": ["llama-3.1-8b-instant"],
///   "chunk_chars": 8,
///   "chunk_delay_ms": 0,
///   "default_reply": null,
///   "rules": [{"when_contains": "ping", "reply": "pong"}],
///   "finish_reason": "stop",
///   "fault": {"kind": "none"}
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeLlmConfig {
    /// Model ids listed by `GET /v1/models`. Chat requests for other models are still
    /// answered: the fake does not validate the model, it only echoes it.
    pub models: Vec<String>,
    /// Characters (not bytes) of reply text per streamed content chunk; 0 is treated as 1.
    pub chunk_chars: usize,
    /// Pause between two streamed content chunks, in milliseconds; 0 means no pause at all.
    pub chunk_delay_ms: u64,
    /// Reply used when no rule matches; `None` means a generated description of the request.
    pub default_reply: Option<String>,
    /// Scripted replies; the first rule whose `when_contains` occurs in any message wins.
    pub rules: Vec<Rule>,
    /// The `finish_reason` every answer ends with: `stop`, or `length` to play an answer cut by
    /// the token limit.
    pub finish_reason: String,
    /// A failure to inject into every chat completion while it is set.
    pub fault: Fault,
}

impl Default for FakeLlmConfig {
    fn default() -> Self {
        FakeLlmConfig {
            models: vec![DEFAULT_MODEL.to_owned()],
            chunk_chars: 8,
            chunk_delay_ms: 0,
            default_reply: None,
            rules: Vec::new(),
            finish_reason: "stop".to_owned(),
            fault: Fault::None,
        }
    }
}

/// A scripted reply: if `when_contains` occurs in any message content (system, user or
/// assistant), the fake answers `reply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub when_contains: String,
    pub reply: String,
}

/// A failure the fake injects into every chat completion while configured.
///
/// Internally tagged by `kind`, snake_case, so it reads the same in JSON and TOML:
/// `{"kind": "none"}`, `{"kind": "http500"}`, `{"kind": "http429", "retry_after_secs": 2}`,
/// `{"kind": "stall_before_first_byte"}`, `{"kind": "stall_after_chunks", "chunks": 3}`,
/// `{"kind": "disconnect_after_chunks", "chunks": 3}`, `{"kind": "garbage_after_chunks", "chunks": 3}`;
/// in TOML: `fault = { kind = "stall_after_chunks", chunks = 3 }`.
///
/// Non-streaming requests honour `Http500`, `Http429` and `StallBeforeFirstByte`; the
/// `*_after_chunks` faults only concern streams and are ignored for them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Status 500 with an OpenAI-style error body.
    Http500,
    /// Status 429 with a `Retry-After` header and an OpenAI-style error body.
    Http429 { retry_after_secs: u64 },
    /// Read the request, then send nothing at all (not even headers) until the client leaves.
    StallBeforeFirstByte,
    /// Send the headers, the role chunk and `chunks` content chunks, then hang until the client leaves.
    StallAfterChunks { chunks: usize },
    /// Send `chunks` content chunks, then close the connection mid-body: the chunked
    /// encoding is left unterminated and no `[DONE]` is sent, so HTTP/1.1 clients report
    /// an incomplete body rather than a clean end.
    DisconnectAfterChunks { chunks: usize },
    /// Send `chunks` content chunks, then one event that is not JSON (`data: {not json`
    /// followed by bytes that are not UTF-8), then `[DONE]` and a proper end of body.
    GarbageAfterChunks { chunks: usize },
    /// Send `chunks` content chunks, then an OpenAI-style `{"error": {...}}` event (as
    /// providers do when a generation fails mid-stream), then `[DONE]` and a proper end.
    ErrorAfterChunks { chunks: usize },
}
