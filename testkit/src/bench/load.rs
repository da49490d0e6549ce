//! The load generator: streamed runs through ant-server (`POST /tool/{slug}`, Aniate SSE
//! events, or its OpenAI door, `POST /v1/chat/completions`) or straight at an OpenAI-compatible
//! provider (`POST /chat/completions`), timed from just before the request is sent to the first
//! token and to the end of the stream.
//!
//! Both modes read their streams the same way (body chunks through [`SseParser`], every
//! event's JSON decoded), so the client's own cost is about equal on both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aniate_proto::event::StreamEvent;
use aniate_proto::sse::{SseEvent, SseParser};
use serde::Deserialize;

/// Where the streams go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Straight at the provider (the fake LLM).
    Direct,
    /// Through ant-server, which relays the provider's stream.
    Server,
    /// Through ant-server, to a copy of the tool with its prompt guard off: the guard's cost
    /// is the difference from [`Mode::Server`].
    Unguarded,
    /// Through ant-server's OpenAI door, to the same tool: the door's cost is the difference
    /// from [`Mode::Server`].
    OpenAi,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Server => "server",
            Mode::Unguarded => "server, guard off",
            Mode::OpenAi => "server, OpenAI door",
        }
    }
}

/// The slug suffix of the copy of a tool that the bench pushes with its prompt guard off.
pub const UNGUARDED_SUFFIX: &str = "-unguarded";

/// One endpoint to drive, with its prepared request.
#[derive(Debug)]
pub struct Target {
    pub mode: Mode,
    client: reqwest::Client,
    url: String,
    /// `Authorization` header values, used in turn, one per request.
    authorizations: Vec<String>,
    /// How many requests were sent, to pick the next authorization.
    n_sent: AtomicUsize,
    /// The JSON body, built once so both modes spend nothing on it while timed.
    body: String,
}

impl Target {
    /// A target through ant-server: `POST {server_url}/tool/{slug}`, as the users of
    /// `tokens` in turn (so that no one user reaches a plan's limits).
    pub fn server(
        client: reqwest::Client,
        server_url: &str,
        slug: &str,
        tokens: &[String],
        instructions: &str,
    ) -> Target {
        let body = serde_json::json!({ "instructions": instructions }).to_string();
        Target {
            mode: if slug.ends_with(UNGUARDED_SUFFIX) { Mode::Unguarded } else { Mode::Server },
            client,
            url: format!("{}/tool/{slug}", server_url.trim_end_matches('/')),
            authorizations: tokens.iter().map(|token| format!("Bearer {token}")).collect(),
            n_sent: AtomicUsize::new(0),
            body,
        }
    }

    /// A target through ant-server's OpenAI door: `POST {server_url}/v1/chat/completions`,
    /// streamed, the tool as the model and `question` as the one user message.
    pub fn openai(client: reqwest::Client, server_url: &str, slug: &str, tokens: &[String], question: &str) -> Target {
        let body = serde_json::json!({
            "model": slug,
            "messages": [{ "role": "user", "content": question }],
            "stream": true,
        })
        .to_string();
        Target {
            mode: Mode::OpenAi,
            client,
            url: format!("{}/v1/chat/completions", server_url.trim_end_matches('/')),
            authorizations: tokens.iter().map(|token| format!("Bearer {token}")).collect(),
            n_sent: AtomicUsize::new(0),
            body,
        }
    }

    /// A target straight at an OpenAI-compatible `base_url` (ending in `/v1`), sending the
    /// messages given, streamed, with usage, as ant-server does.
    pub fn direct(client: reqwest::Client, base_url: &str, model: &str, system: &str, user: &str) -> Target {
        let body = serde_json::json!({
            "model": model,
            "messages": [
                { "role": "system", "content": system },
                { "role": "user", "content": user },
            ],
            "stream": true,
            "stream_options": { "include_usage": true },
        })
        .to_string();
        Target {
            mode: Mode::Direct,
            client,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            authorizations: vec!["Bearer bench".to_owned()],
            n_sent: AtomicUsize::new(0),
            body,
        }
    }

    /// The same target, sending `authorization` (a whole header value) with every request.
    pub fn with_authorization(mut self, authorization: String) -> Target {
        self.authorizations = vec![authorization];
        self
    }

    /// Runs one stream to its end.
    pub async fn run_once(&self) -> Result<Sample, String> {
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(self.body.clone());
        if !self.authorizations.is_empty() {
            let idx = self.n_sent.fetch_add(1, Ordering::Relaxed) % self.authorizations.len();
            request = request.header(reqwest::header::AUTHORIZATION, &self.authorizations[idx]);
        }
        let started = Instant::now();
        let mut response = request.send().await.map_err(|err| format!("request failed: {}", error_chain(&err)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            return Err(format!("HTTP {}: {excerpt}", status.as_u16()));
        }
        let mut reader = StreamReader::new(self.mode);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return Err(format!("stream broke: {}", error_chain(&err))),
            };
            let arrived = Instant::now();
            let events = reader.parser.push(&chunk).map_err(|err| err.to_string())?;
            for event in events {
                if reader.absorb(&event)? && reader.first_token.is_none() {
                    reader.first_token = Some(arrived);
                }
            }
        }
        let ended = Instant::now();
        let first_token = reader.first_token.ok_or("the stream had no text")?;
        if !reader.finished {
            return Err(match self.mode {
                Mode::Server | Mode::Unguarded => "the stream ended without a `done` event".to_owned(),
                Mode::Direct | Mode::OpenAi => "the stream ended without `data: [DONE]`".to_owned(),
            });
        }
        Ok(Sample {
            ttft: first_token.saturating_duration_since(started),
            total: ended.saturating_duration_since(started),
        })
    }
}

/// What one successful stream took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// From just before sending the request to the arrival of the body bytes holding the
    /// first text.
    pub ttft: Duration,
    /// From just before sending the request to the end of the body.
    pub total: Duration,
}

/// Reads one stream's events, in either mode.
struct StreamReader {
    mode: Mode,
    parser: SseParser,
    first_token: Option<Instant>,
    /// Saw `done` (server) or `[DONE]` (direct, OpenAI door).
    finished: bool,
}

/// The part of an OpenAI stream chunk the bench looks at.
#[derive(Deserialize)]
struct DirectChunk {
    #[serde(default)]
    choices: Vec<DirectChoice>,
}

#[derive(Deserialize)]
struct DirectChoice {
    #[serde(default)]
    delta: DirectDelta,
}

#[derive(Deserialize, Default)]
struct DirectDelta {
    #[serde(default)]
    content: Option<String>,
}

impl StreamReader {
    fn new(mode: Mode) -> StreamReader {
        StreamReader { mode, parser: SseParser::default(), first_token: None, finished: false }
    }

    /// Takes one event; returns whether it carried answer text.
    fn absorb(&mut self, event: &SseEvent) -> Result<bool, String> {
        if self.finished {
            return Err("an event after the end of the stream".to_owned());
        }
        match self.mode {
            Mode::Server | Mode::Unguarded => match StreamEvent::from_sse(event).map_err(|err| err.to_string())? {
                StreamEvent::Meta(_) => Ok(false),
                StreamEvent::Delta(delta) => Ok(!delta.text.is_empty()),
                StreamEvent::Done(_) => {
                    self.finished = true;
                    Ok(false)
                }
                StreamEvent::Error(detail) => Err(format!("error event: {}: {}", detail.code, detail.message)),
            },
            Mode::Direct | Mode::OpenAi => {
                let data = event.data.trim();
                if data == "[DONE]" {
                    self.finished = true;
                    return Ok(false);
                }
                let chunk: DirectChunk =
                    serde_json::from_str(data).map_err(|err| format!("bad stream chunk: {err}"))?;
                Ok(chunk.choices.iter().any(|choice| choice.delta.content.as_deref().is_some_and(|t| !t.is_empty())))
            }
        }
    }
}

/// The outcome of one round: `n_runs` streams with at most `concurrency` in flight.
#[derive(Debug, Default)]
pub struct RoundResult {
    pub samples: Vec<Sample>,
    pub errors: Vec<String>,
    /// From starting the first stream to the end of the last.
    pub wall: Duration,
}

/// Runs `n_runs` streams at `target` from `concurrency` tasks that each take the next run
/// as soon as their previous one ends.
pub async fn run_round(target: &Arc<Target>, n_runs: usize, concurrency: usize) -> RoundResult {
    let next_run = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n_runs.max(1)) {
        let target = Arc::clone(target);
        let next_run = Arc::clone(&next_run);
        workers.spawn(async move {
            let mut samples = Vec::with_capacity(n_runs / concurrency.max(1) + 1);
            let mut errors = Vec::new();
            while next_run.fetch_add(1, Ordering::Relaxed) < n_runs {
                match target.run_once().await {
                    Ok(sample) => samples.push(sample),
                    Err(err) => errors.push(err),
                }
            }
            (samples, errors)
        });
    }
    let mut result = RoundResult::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((samples, errors)) => {
                result.samples.extend(samples);
                result.errors.extend(errors);
            }
            Err(err) => result.errors.push(format!("worker task failed: {err}")),
        }
    }
    result.wall = started.elapsed();
    result
}

/// The error and its sources, `: `-separated: reqwest's own message alone rarely says why.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<SseEvent> {
        SseParser::default().push(text.as_bytes()).unwrap()
    }

    #[test]
    fn server_streams_need_text_then_done() {
        let mut reader = StreamReader::new(Mode::Server);
        let stream = "event: meta\ndata: {\"request_id\":\"r\",\"tool\":\"what\",\"version\":1,\"model\":\"m\"}\n\n\
                      event: delta\ndata: {\"text\":\"hi\"}\n\n\
                      event: done\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1},\"finish_reason\":\"stop\"}\n\n";
        let texts: Vec<bool> = events(stream).iter().map(|event| reader.absorb(event).unwrap()).collect();
        assert_eq!(texts, [false, true, false]);
        assert!(reader.finished);
    }

    #[test]
    fn server_error_events_are_errors() {
        let mut reader = StreamReader::new(Mode::Server);
        let stream = "event: error\ndata: {\"code\":\"provider_error\",\"message\":\"boom\"}\n\n";
        let err = reader.absorb(&events(stream)[0]).unwrap_err();
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn direct_streams_need_content_then_done() {
        let mut reader = StreamReader::new(Mode::Direct);
        let stream = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n\
                      data: [DONE]\n\n";
        let texts: Vec<bool> = events(stream).iter().map(|event| reader.absorb(event).unwrap()).collect();
        assert_eq!(texts, [false, false, true, false, false]);
        assert!(reader.finished);
        assert!(reader.absorb(&events("data: {}\n\n")[0]).is_err());
    }

    #[test]
    fn direct_garbage_is_an_error() {
        let mut reader = StreamReader::new(Mode::Direct);
        assert!(reader.absorb(&events("data: {not json\n\n")[0]).is_err());
    }
}
