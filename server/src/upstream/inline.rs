//! HTTP/1.1 connections to a plain-`http://` provider (Ollama, vLLM, a LiteLLM proxy, a
//! provider on the same host or network), driven by the run that reads them.
//!
//! A pooled client (reqwest, hyper-util) runs each connection as a task of its own, which hands
//! the response body to the reader one chunk at a time through a channel of one: every chunk
//! of a stream costs two task switches, and chunks that arrived together still leave one
//! write each. Here a run owns its connection for the length of the answer and polls it
//! itself, in the task that writes the answer to the client: chunks already read are decoded in
//! the same poll and leave together. After a clean end the connection goes back to the pool;
//! dropping a body before its end drops the connection, which is how the provider learns that
//! the run was cancelled.
//!
//! `https://` providers (Groq, OpenAI) stay on reqwest: they speak HTTP/2, whose connection
//! buffers each stream's data and has no channel of one, and they need TLS and proxies.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::{
    body::{Body, Incoming},
    client::conn::http1,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

type Connection = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// How long a connection may wait in the pool, as reqwest's `pool_idle_timeout` in the
/// reqwest path: providers close idle connections after a minute or two.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most idle connections kept per provider; more are closed when they come back.
const MAX_IDLE: usize = 512;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to the provider timed out")]
    ConnectTimeout,
    #[error("connecting to the provider failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the provider connection failed: {0}")]
    Http(#[source] hyper::Error),
}

/// The pool of connections to one `http://` provider.
#[derive(Debug)]
pub struct InlinePool {
    /// `host:port`, for connecting.
    address: String,
    /// The `Host` header: the URL's authority.
    host: HeaderValue,
    /// The request target: the chat completions path.
    path: Uri,
    connect_timeout: Duration,
    /// Most recently used last, so that a checkout takes the connection least likely to have
    /// been closed by the provider.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    connection: Connection,
    since: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("since", &self.since).finish_non_exhaustive()
    }
}

/// A connection lent to one request, with the pool it goes back to.
struct Lease {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection future has finished (closed or failed): it must not be
    /// polled again, and dropping it hands back a request it never took.
    connection: Option<Connection>,
    pool: Arc<InlinePool>,
}

impl InlinePool {
    /// A pool for `chat_url` when it is a plain `http://` URL that no proxy setting applies to;
    /// `None` leaves the provider to reqwest (TLS, HTTP/2, proxies).
    pub fn for_url(chat_url: &str, connect_timeout: Duration) -> Option<Arc<InlinePool>> {
        Self::for_url_with(chat_url, connect_timeout, |name| std::env::var_os(name))
    }

    fn for_url_with(
        chat_url: &str,
        connect_timeout: Duration,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Option<Arc<InlinePool>> {
        // reqwest sends `http://` requests through these when set (see its `Proxy` docs); a
        // URL they cover stays with reqwest, NO_PROXY and all.
        let proxied = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .any(|name| env(name).is_some_and(|value| !value.is_empty()));
        if proxied {
            return None;
        }
        let uri: Uri = chat_url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            // Credentials in the URL: reqwest sends them as basic auth; here they would end up
            // in the `Host` header.
            return None;
        }
        // `[::1]:11434` and `127.0.0.1:8080` parse as addresses; a name is looked up.
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let path = uri.path_and_query()?.as_str().parse().ok()?;
        Some(Arc::new(InlinePool {
            address,
            host: HeaderValue::from_str(authority.as_str()).ok()?,
            path,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// POSTs `body` (JSON) with `headers` and waits for the response head. The body that comes
    /// with the response owns the connection until it ends or is dropped.
    pub async fn post(
        self: &Arc<InlinePool>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, InlineBody), SendError> {
        let mut request = self.request(headers, body);
        loop {
            let (mut lease, reused) = match self.checkout() {
                Some(lease) => (lease, true),
                None => (self.connect().await?, false),
            };
            let sent = lease.sender.try_send_request(request);
            match drive(&mut lease.connection, sent).await {
                Ok(response) => {
                    // `lease.connection` is `None` here when the provider closed the
                    // connection with the response (`Connection: close`): the body is all read.
                    let (parts, body) = response.into_parts();
                    return Ok((parts.status, parts.headers, InlineBody { body, lease: Some(lease) }));
                }
                // A pooled connection that the provider closed before the request went out
                // (the close crossed the checkout): the request is handed back unsent, so it
                // goes again on a new connection. A request that was sent is never repeated.
                Err(mut err) if reused => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Http(err.into_error())),
                },
                Err(err) => return Err(SendError::Http(err.into_error())),
            }
        }
    }

    fn request(&self, headers: &HeaderMap, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        let request_headers = request.headers_mut();
        request_headers.extend(headers.iter().map(|(name, value)| (name.clone(), value.clone())));
        request_headers.insert(header::HOST, self.host.clone());
        request_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }

    /// The most recently returned idle connection that is still open, if any.
    fn checkout(self: &Arc<InlinePool>) -> Option<Lease> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop()?;
            if idle.since.elapsed() >= IDLE_TIMEOUT {
                // The rest are older still.
                self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
                return None;
            }
            let Idle { sender, mut connection, .. } = idle;
            // Nobody polled the connection while it was idle: let it read a close or an EOF
            // that arrived meanwhile, and see whether it is still ready for a request.
            let mut cx = Context::from_waker(Waker::noop());
            if Pin::new(&mut connection).poll(&mut cx).is_pending() && sender.is_ready() {
                return Some(Lease { sender, connection: Some(connection), pool: self.clone() });
            }
        }
    }

    async fn connect(self: &Arc<InlinePool>) -> Result<Lease, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| SendError::ConnectTimeout)?
            .map_err(SendError::Connect)?;
        // Each event goes out as soon as the provider's answer has it, as in the reqwest path.
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Http)?;
        Ok(Lease { sender, connection: Some(connection), pool: self.clone() })
    }

    fn check_in(&self, lease: Lease) {
        let Lease { sender, connection: Some(connection), .. } = lease else { return };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The oldest come first: close those that waited too long, which the provider has
        // likely closed on its side already, rather than keep their sockets until a checkout.
        let expired = idle.iter().take_while(|entry| entry.since.elapsed() >= IDLE_TIMEOUT).count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, connection, since: Instant::now() });
        }
    }

    /// Idle connections in the pool (tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// Polls the connection and the response future together until the response head is in.
async fn drive<F, T>(connection: &mut Option<Connection>, response: F) -> T
where
    F: Future<Output = T>,
{
    let mut response = std::pin::pin!(response);
    std::future::poll_fn(|cx| {
        if let Some(open) = connection
            && Pin::new(open).poll(cx).is_ready()
        {
            // The connection ended (closed, failed, or an EOF read on a pooled connection
            // before it took the request). Dropping it fails the request, handing it back if
            // it was never written, so the response future below resolves instead of waiting.
            *connection = None;
        }
        response.as_mut().poll(cx)
    })
    .await
}

/// A response body read straight off its connection, in the reader's task.
pub struct InlineBody {
    body: Incoming,
    /// `None` once the connection went back to the pool or ended.
    lease: Option<Lease>,
}

impl Stream for InlineBody {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(lease) = &mut this.lease
                && let Some(connection) = &mut lease.connection
                && Pin::new(connection).poll(cx).is_ready()
            {
                // The connection ended; the body reports how (its end, or an error).
                this.lease = None;
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    // Trailers: nothing a completion stream carries.
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(err))) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    if let Some(lease) = this.lease.take() {
                        lease.pool.clone().check_in(lease);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    const ANSWER: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

    /// A loopback HTTP/1.1 server that answers every request with [`ANSWER`], counting the
    /// connections it accepts; `close_after` requests on a connection, it closes it.
    async fn provider(close_after: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut served = 0;
                    while served < close_after {
                        let mut chunk = [0u8; 4096];
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        // Each request is a head and a 2-byte body (`{}`).
                        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            if buffer.len() < end + 4 + 2 {
                                break;
                            }
                            buffer.drain(..end + 4 + 2);
                            socket.write_all(ANSWER.as_bytes()).await.unwrap();
                            served += 1;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn answer(pool: &Arc<InlinePool>) -> String {
        let (status, _, mut body) = pool.post(&HeaderMap::new(), Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        text
    }

    #[tokio::test]
    async fn a_connection_serves_one_request_after_another() {
        let (url, accepted) = provider(usize::MAX).await;
        let pool = InlinePool::for_url_with(&url, Duration::from_secs(1), |_| None).unwrap();
        for _ in 0..3 {
            assert_eq!(answer(&pool).await, "hello world");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_provider_closed_is_replaced() {
        let (url, accepted) = provider(1).await;
        let pool = InlinePool::for_url_with(&url, Duration::from_secs(1), |_| None).unwrap();
        assert_eq!(answer(&pool).await, "hello world");
        // Let the close reach this side, as it would while the connection sits in the pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(answer(&pool).await, "hello world");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// The close of a pooled connection can reach the runtime after the checkout looked at the
    /// connection but before the connection took the request. The connection then ends without
    /// writing it; the request must come back unsent (to go out on a new connection) rather
    /// than wait on a connection that will never take it.
    #[tokio::test]
    async fn a_close_seen_after_the_checkout_hands_the_request_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"{}") {
                let n = socket.read(&mut chunk).unwrap();
                assert!(n > 0, "the client closed before sending a whole request");
                request.extend_from_slice(&chunk[..n]);
            }
            socket.write_all(ANSWER.as_bytes()).unwrap();
            close_rx.recv().unwrap();
        });
        let pool = InlinePool::for_url_with(&url, Duration::from_secs(1), |_| None).unwrap();
        assert_eq!(answer(&pool).await, "hello world");
        let mut lease = pool.checkout().expect("the connection is pooled and open");
        close_tx.send(()).unwrap();
        // The close arrives and the runtime takes note of it, with the connection checked out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = lease.sender.try_send_request(pool.request(&HeaderMap::new(), Bytes::from_static(b"{}")));
        let result = tokio::time::timeout(Duration::from_secs(5), drive(&mut lease.connection, sent))
            .await
            .expect("the request did not wait on a closed connection");
        let mut err = result.expect_err("a closed connection gave a response");
        assert!(err.take_message().is_some(), "the request was not handed back unsent");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/chat/completions", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 4096];
            let _ = socket.read(&mut chunk).await.unwrap();
            // The head and a first chunk, then the answer stalls as a slow model's would.
            socket.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await.unwrap();
            // The client going away is an EOF here.
            tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk)).await
        });
        let pool = InlinePool::for_url_with(&url, Duration::from_secs(1), |_| None).unwrap();
        let (_, _, mut body) = pool.post(&HeaderMap::new(), Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "hello");
        drop(body);
        let read = server.await.unwrap().expect("the provider saw the connection close");
        assert_eq!(read.unwrap(), 0);
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn only_plain_http_without_a_proxy_is_driven_inline() {
        let timeout = Duration::from_secs(1);
        let none = |_: &str| None;
        assert!(InlinePool::for_url_with("http://127.0.0.1:8080/v1/chat/completions", timeout, none).is_some());
        assert!(InlinePool::for_url_with("https://api.groq.com/openai/v1/chat/completions", timeout, none).is_none());
        let proxy = |name: &str| (name == "HTTP_PROXY").then(|| "http://proxy:3128".into());
        assert!(InlinePool::for_url_with("http://127.0.0.1:8080/v1/chat/completions", timeout, proxy).is_none());
        let pool = InlinePool::for_url_with("http://[::1]:11434/v1/chat/completions", timeout, none).unwrap();
        assert_eq!(pool.address, "[::1]:11434");
        assert_eq!(pool.host, "[::1]:11434");
        assert_eq!(pool.path, "/v1/chat/completions");
        let pool = InlinePool::for_url_with("http://ollama/v1/chat/completions", timeout, none).unwrap();
        assert_eq!(pool.address, "ollama:80");
        assert!(InlinePool::for_url_with("http://user:secret@ollama/v1/chat/completions", timeout, none).is_none());
    }
}
