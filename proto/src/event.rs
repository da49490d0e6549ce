//! The events of a streamed answer: `meta`, then `delta`s, then `done` or `error`.
//!
//! On HTTP they travel as Server-Sent Events whose `event:` is [`StreamEvent::name`] and whose
//! `data:` is the JSON of the payload.

use serde::{Deserialize, Serialize};

use crate::{
    error::ErrorDetail,
    sse,
    tool::{FindingsAdjusted, ResultRejected, ToolResult},
};

/// Sent first: which request, tool, version and model answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Meta {
    pub request_id: String,
    pub tool: String,
    pub version: i64,
    /// The model that answers (after any fallback), without its provider.
    pub model: String,
    /// The provider that answers, as the server's catalogue names it (absent from servers
    /// before provider catalogues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A piece of the answer's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delta {
    pub text: String,
}

/// Token counts as the provider reported them (or, if it did not, as the server estimated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Sent last on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Done {
    pub usage: Usage,
    pub finish_reason: String,
    /// The structured result for `code`, `findings` and `command` tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ToolResult>,
    /// Set when the answer could not become a structured result: then `result` is absent and
    /// the answer is only text (the `delta`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_rejected: Option<ResultRejected>,
    /// For `findings` tools: what was dropped, cut or merged to fit the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings_adjusted: Option<FindingsAdjusted>,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum StreamEvent {
    Meta(Meta),
    Delta(Delta),
    Done(Done),
    Error(ErrorDetail),
}

/// Why an SSE event could not be read as a [`StreamEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    UnknownEvent(String),
    BadData { event: &'static str, message: String },
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::UnknownEvent(name) => write!(f, "unknown stream event `{name}`"),
            EventError::BadData { event, message } => write!(f, "bad `{event}` event: {message}"),
        }
    }
}

impl std::error::Error for EventError {}

impl StreamEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Meta(_) => "meta",
            StreamEvent::Delta(_) => "delta",
            StreamEvent::Done(_) => "done",
            StreamEvent::Error(_) => "error",
        }
    }

    /// The JSON of the payload, the SSE `data:`.
    pub fn data_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no
        // user-defined Serialize impls.
        match self {
            StreamEvent::Meta(meta) => serde_json::to_string(meta),
            StreamEvent::Delta(delta) => serde_json::to_string(delta),
            StreamEvent::Done(done) => serde_json::to_string(done),
            StreamEvent::Error(error) => serde_json::to_string(error),
        }
        .expect("stream events always serialize")
    }

    /// The whole SSE frame, ready to write.
    pub fn to_sse(&self) -> String {
        sse::encode(self.name(), &self.data_json())
    }

    /// Reads an SSE event back; `event` defaults to `message` per the SSE spec.
    pub fn from_sse(event: &sse::SseEvent) -> Result<StreamEvent, EventError> {
        fn parse<T: serde::de::DeserializeOwned>(event: &'static str, data: &str) -> Result<T, EventError> {
            serde_json::from_str(data).map_err(|err| EventError::BadData { event, message: err.to_string() })
        }
        match event.event.as_deref().unwrap_or("message") {
            "meta" => parse("meta", &event.data).map(StreamEvent::Meta),
            "delta" => parse("delta", &event.data).map(StreamEvent::Delta),
            "done" => parse("done", &event.data).map(StreamEvent::Done),
            "error" => parse("error", &event.data).map(StreamEvent::Error),
            other => Err(EventError::UnknownEvent(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::ErrorCode, sse::SseParser};

    #[test]
    fn events_round_trip_through_sse() {
        let events = vec![
            StreamEvent::Meta(Meta {
                request_id: "r1".into(),
                tool: "fix".into(),
                version: 2,
                model: "m".into(),
                provider: None,
            }),
            StreamEvent::Delta(Delta { text: "line one\nline two\n".into() }),
            StreamEvent::Done(Done {
                usage: Usage { prompt_tokens: 10, completion_tokens: 4 },
                finish_reason: "stop".into(),
                result: Some(ToolResult::Code("x = 1\n".into())),
                result_rejected: None,
                findings_adjusted: None,
            }),
            StreamEvent::Done(Done {
                usage: Usage { prompt_tokens: 10, completion_tokens: 4 },
                finish_reason: "length".into(),
                result: None,
                result_rejected: Some(ResultRejected::Truncated),
                findings_adjusted: Some(FindingsAdjusted { dropped_out_of_range: 2, ..Default::default() }),
            }),
            StreamEvent::Error(ErrorDetail { code: ErrorCode::ProviderTimeout, message: "slow".into() }),
        ];
        let wire: String = events.iter().map(StreamEvent::to_sse).collect();
        let mut parser = SseParser::default();
        let parsed = parser.push(wire.as_bytes()).unwrap();
        let back: Vec<StreamEvent> = parsed.iter().map(|e| StreamEvent::from_sse(e).unwrap()).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn unknown_events_and_bad_data_are_errors_not_panics() {
        let unknown = sse::SseEvent { event: Some("surprise".into()), data: "{}".into() };
        assert_eq!(StreamEvent::from_sse(&unknown), Err(EventError::UnknownEvent("surprise".into())));
        let bad = sse::SseEvent { event: Some("delta".into()), data: "not json".into() };
        assert!(matches!(StreamEvent::from_sse(&bad), Err(EventError::BadData { event: "delta", .. })));
    }
}
