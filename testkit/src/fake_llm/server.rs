//! The fake's accept loop and per-connection request handling: routing, the chat
//! completion answer (streamed or not), fault injection, and watching for clients that
//! leave.
//!
//! Cancel detection: while a response is being produced, the connection task also reads
//! the socket. A read of 0 bytes (FIN) or an error (RST) means the client is gone; the
//! response future is then dropped, which drops its `RecordGuard`, which records the
//! request as `Cancelled` on the spot. This works the same whether the fake is between
//! chunks, stalled mid-stream, or stalled before sending a single byte, and it does not
//! depend on a write failing. A write that does fail ends the response the same way.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use super::config::{FakeLlmConfig, Fault};
use super::http::{self, ReadError, Request};
use super::record::{FakeLlmState, Outcome, RecordGuard, RecordedRequest, now_ms};
use super::reply::{self, ChatRequest, Completion, DONE_EVENT, ERROR_EVENT, EventEncoder, GARBAGE_EVENT, Usage};

/// The `owned_by` of every listed model, so nobody mistakes the fake for a provider.
pub const OWNED_BY: &str = "aniate-fake-llm (offline fake)";

const JSON: &str = "application/json";

/// Bytes a client may send ahead (pipelining) while a response is produced before the
/// fake stops reading; past this it can no longer notice the client leaving.
const MAX_READ_AHEAD_BYTES: usize = 1024 * 1024;

/// Serves the fake on `listener` until `shutdown` completes. Connections still open then
/// are dropped, and requests they were answering are recorded as `Cancelled` before
/// `run` returns.
pub async fn run(listener: TcpListener, state: FakeLlmState, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // Owning the connection tasks here means returning from `run` aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = info_span!("connection", %peer);
                    let connection = state.next_connection();
                    connections.spawn(serve_connection(stream, state.clone(), connection).instrument(span));
                }
                Err(err) => {
                    // Typically out of file descriptors; retrying at once would spin.
                    warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Waiting for the aborted tasks means their requests are recorded as cancelled by the
    // time `run` returns.
    connections.shutdown().await;
}

/// Whether a connection can serve another request after a response.
enum Next {
    KeepAlive,
    Close,
}

async fn serve_connection(mut stream: TcpStream, state: FakeLlmState, connection: u64) {
    // Stream events are small writes that must leave at once, not wait for an ACK.
    if let Err(err) = stream.set_nodelay(true) {
        debug!(cause = %err, "could not set TCP_NODELAY");
    }
    // Bytes read from the socket but not yet consumed by a request.
    let mut buf = Vec::with_capacity(4096);
    loop {
        let request = match http::read_request(&mut stream, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(ReadError::Io(err)) => {
                debug!(cause = %err, "connection ended inside a request");
                return;
            }
            Err(ReadError::Bad(bad)) => {
                debug!(%bad, "bad request");
                let body = reply::error_body(&bad.message, "invalid_request_error", "bad_request");
                let _ = http::write_response(&mut stream, bad.status, &[], JSON, &body, false).await;
                return;
            }
        };
        debug!(method = %request.method, path = %request.path, "request");
        let (mut reader, mut writer) = stream.split();
        let next = tokio::select! {
            biased;
            next = respond(&request, &mut writer, &state, connection) => next,
            () = wait_for_client_to_leave(&mut reader, &mut buf) => {
                debug!("client went away during the response");
                return;
            }
        };
        match next {
            Ok(Next::KeepAlive) if request.keep_alive => {}
            Ok(_) => return,
            Err(err) => {
                debug!(cause = %err, "write failed, client went away");
                return;
            }
        }
    }
}

/// Completes when the client closes or resets the connection. Bytes it sends meanwhile
/// (a pipelined next request) are kept in `buf` for the next `read_request`.
async fn wait_for_client_to_leave<R>(reader: &mut R, buf: &mut Vec<u8>)
where
    R: AsyncRead + Unpin,
{
    while buf.len() < MAX_READ_AHEAD_BYTES {
        match http::read_more(reader, buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

async fn respond<W>(request: &Request, writer: &mut W, state: &FakeLlmState, connection: u64) -> std::io::Result<Next>
where
    W: AsyncWrite + Unpin,
{
    let keep_alive = request.keep_alive;
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/chat/completions") => chat_completion(request, writer, state, connection).await,
        ("GET", "/v1/models") => {
            let data: Vec<_> = state
                .config()
                .models
                .iter()
                .map(|model| serde_json::json!({"id": model, "object": "model", "created": 0, "owned_by": OWNED_BY}))
                .collect();
            let body = serde_json::json!({"object": "list", "data": data});
            json_response(writer, keep_alive, 200, body.to_string().into_bytes()).await
        }
        ("GET", "/_fake/requests") => json_response(writer, keep_alive, 200, to_json(&state.requests())).await,
        ("DELETE", "/_fake/requests") => {
            state.clear_requests();
            json_response(writer, keep_alive, 200, br#"{"cleared":true}"#.to_vec()).await
        }
        ("GET", "/_fake/config") => json_response(writer, keep_alive, 200, to_json(&state.config())).await,
        ("PUT", "/_fake/config") => match serde_json::from_slice::<FakeLlmConfig>(&request.body) {
            Ok(config) => {
                let body = to_json(&config);
                state.set_config(config);
                json_response(writer, keep_alive, 200, body).await
            }
            Err(err) => {
                let message = format!("invalid fake config: {err}");
                json_response(
                    writer,
                    keep_alive,
                    400,
                    reply::error_body(&message, "invalid_request_error", "bad_config"),
                )
                .await
            }
        },
        (_, "/v1/chat/completions" | "/v1/models" | "/_fake/requests" | "/_fake/config") => {
            let message = format!("method {} not allowed on {}", request.method, request.path);
            json_response(
                writer,
                keep_alive,
                405,
                reply::error_body(&message, "invalid_request_error", "method_not_allowed"),
            )
            .await
        }
        (_, path) => {
            let message = format!("aniate-fake-llm has no route {path}");
            json_response(writer, keep_alive, 404, reply::error_body(&message, "invalid_request_error", "not_found"))
                .await
        }
    }
}

async fn json_response<W>(writer: &mut W, keep_alive: bool, status: u16, body: Vec<u8>) -> std::io::Result<Next>
where
    W: AsyncWrite + Unpin,
{
    http::write_response(writer, status, &[], JSON, &body, keep_alive).await?;
    Ok(Next::KeepAlive)
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The fake's own types have string keys and no custom serializers, so this cannot fail;
    // an empty body would still be a visible error in a test.
    serde_json::to_vec(value).unwrap_or_default()
}

async fn chat_completion<W>(
    request: &Request,
    writer: &mut W,
    state: &FakeLlmState,
    connection: u64,
) -> std::io::Result<Next>
where
    W: AsyncWrite + Unpin,
{
    let keep_alive = request.keep_alive;
    let chat: ChatRequest = match serde_json::from_slice(&request.body) {
        Ok(chat) => chat,
        Err(err) => {
            let message = format!("invalid chat completion request: {err}");
            let body = reply::error_body(&message, "invalid_request_error", "invalid_json");
            http::write_response(writer, 400, &[], JSON, &body, keep_alive).await?;
            return Ok(Next::KeepAlive);
        }
    };
    // One snapshot per request, so a config change never affects a response half-way.
    let config = state.config();
    let messages = chat.recorded_messages();
    let guard = state.record(RecordedRequest {
        id: 0,
        model: chat.model.clone(),
        messages: messages.clone(),
        stream: chat.stream(),
        include_usage: chat.include_usage(),
        max_tokens: chat.max_tokens,
        sampling: chat.sampling(),
        authorization: request.header("authorization").map(str::to_owned),
        received_at_ms: now_ms(),
        outcome: Outcome::InProgress,
        ended_at_ms: None,
        chunks_sent: 0,
        connection,
    });

    match config.fault {
        Fault::Http500 => {
            let body = reply::error_body(
                "aniate-fake-llm: injected fault: internal server error",
                "server_error",
                "fake_http500",
            );
            http::write_response(writer, 500, &[], JSON, &body, keep_alive).await?;
            guard.settle(Outcome::Faulted);
            return Ok(Next::KeepAlive);
        }
        Fault::Http429 { retry_after_secs } => {
            let body = reply::error_body(
                "aniate-fake-llm: injected fault: rate limit reached",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
            );
            let headers = [("retry-after", retry_after_secs.to_string())];
            http::write_response(writer, 429, &headers, JSON, &body, keep_alive).await?;
            guard.settle(Outcome::Faulted);
            return Ok(Next::KeepAlive);
        }
        // Holding `guard` while pending: the client leaving drops this future and the guard.
        Fault::StallBeforeFirstByte => std::future::pending().await,
        Fault::None
        | Fault::StallAfterChunks { .. }
        | Fault::DisconnectAfterChunks { .. }
        | Fault::GarbageAfterChunks { .. }
        | Fault::ErrorAfterChunks { .. } => {}
    }

    let reply = reply::select_reply(&config, &messages);
    let chunks = reply::split_chunks(&reply, config.chunk_chars);
    let usage = Usage::new(&messages, chunks.len());
    let completion =
        Completion { id: format!("chatcmpl-fake-{}", guard.id()), created: now_ms() / 1000, model: &chat.model };
    if !chat.stream() {
        let body = completion.body(&reply, usage, &config.finish_reason);
        http::write_response(writer, 200, &[], JSON, &body, keep_alive).await?;
        guard.settle(Outcome::Completed);
        return Ok(Next::KeepAlive);
    }
    let stream = EventStream {
        writer,
        chunked: request.http_1_1,
        encoder: completion.encoder(),
        event: Vec::with_capacity(256),
        frame: Vec::with_capacity(256),
    };
    stream_reply(stream, &config, &chunks, usage, chat.include_usage(), guard, keep_alive).await
}

/// Writes stream events, each as one HTTP chunk in one write, reusing its buffers.
struct EventStream<'w, W> {
    writer: &'w mut W,
    /// Chunked framing (HTTP/1.1); otherwise raw bytes ended by closing (HTTP/1.0).
    chunked: bool,
    encoder: EventEncoder,
    /// The event being built.
    event: Vec<u8>,
    /// The chunk-framed bytes of the next write.
    frame: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> EventStream<'_, W> {
    /// Frames the pending event as one chunk, appended to the next write.
    fn frame_event(&mut self) {
        if self.chunked {
            http::push_chunk(&mut self.frame, &self.event);
        } else {
            self.frame.extend_from_slice(&self.event);
        }
        self.event.clear();
    }

    /// Appends the end of the body to the next write.
    fn end_body(&mut self) {
        if self.chunked {
            self.frame.extend_from_slice(http::LAST_CHUNK);
        }
    }

    async fn write_frame(&mut self) -> std::io::Result<()> {
        let res = self.writer.write_all(&self.frame).await;
        self.frame.clear();
        res?;
        self.writer.flush().await
    }
}

async fn stream_reply<W>(
    mut stream: EventStream<'_, W>,
    config: &FakeLlmConfig,
    chunks: &[&str],
    usage: Usage,
    include_usage: bool,
    guard: RecordGuard,
    keep_alive: bool,
) -> std::io::Result<Next>
where
    W: AsyncWrite + Unpin,
{
    http::write_stream_head(stream.writer, "text/event-stream", stream.chunked, keep_alive).await?;
    stream.encoder.role(&mut stream.event);
    stream.frame_event();
    stream.write_frame().await?;

    let n_chunks_to_send = match config.fault {
        Fault::StallAfterChunks { chunks: n_chunks }
        | Fault::DisconnectAfterChunks { chunks: n_chunks }
        | Fault::GarbageAfterChunks { chunks: n_chunks }
        | Fault::ErrorAfterChunks { chunks: n_chunks } => n_chunks.min(chunks.len()),
        Fault::None | Fault::Http500 | Fault::Http429 { .. } | Fault::StallBeforeFirstByte => chunks.len(),
    };
    let delay = Duration::from_millis(config.chunk_delay_ms);
    for (chunk_idx, chunk) in chunks[..n_chunks_to_send].iter().enumerate() {
        // Zero delay must not even touch the timer, so fast streams stay fast.
        if chunk_idx > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        stream.encoder.content(&mut stream.event, chunk);
        stream.frame_event();
        stream.write_frame().await?;
        guard.set_chunks_sent(chunk_idx + 1);
    }

    match config.fault {
        // Holding `guard` while pending: the client leaving drops this future and the guard.
        Fault::StallAfterChunks { .. } => std::future::pending().await,
        Fault::DisconnectAfterChunks { .. } => {
            // Closing now leaves the chunked body unterminated, which clients report as an
            // incomplete message instead of a clean end of stream.
            guard.settle(Outcome::Faulted);
            return Ok(Next::Close);
        }
        Fault::GarbageAfterChunks { .. } | Fault::ErrorAfterChunks { .. } => {
            let event =
                if matches!(config.fault, Fault::GarbageAfterChunks { .. }) { GARBAGE_EVENT } else { ERROR_EVENT };
            stream.event.extend_from_slice(event);
            stream.frame_event();
            stream.event.extend_from_slice(DONE_EVENT);
            stream.frame_event();
            stream.end_body();
            stream.write_frame().await?;
            guard.settle(Outcome::Faulted);
            return Ok(if stream.chunked { Next::KeepAlive } else { Next::Close });
        }
        Fault::None | Fault::Http500 | Fault::Http429 { .. } | Fault::StallBeforeFirstByte => {}
    }

    stream.encoder.finish(&mut stream.event, &config.finish_reason);
    stream.frame_event();
    if include_usage {
        stream.encoder.usage(&mut stream.event, usage);
        stream.frame_event();
    }
    stream.event.extend_from_slice(DONE_EVENT);
    stream.frame_event();
    stream.end_body();
    stream.write_frame().await?;
    // Only now, with every byte handed to the socket, is the stream complete.
    guard.settle(Outcome::Completed);
    // Without chunked framing, closing is what ends the body.
    Ok(if stream.chunked { Next::KeepAlive } else { Next::Close })
}
