//! Just enough HTTP/1.1 for the fake: reading requests (Content-Length or chunked bodies,
//! `Expect: 100-continue`, keep-alive) and writing responses, fixed-length or chunked.
//!
//! The fake speaks HTTP itself instead of using hyper/axum because it needs control that a
//! full server hides: it must notice a client leaving while it deliberately sends nothing
//! (stall before the first byte), decide exactly which bytes reach the socket before a
//! fault, and only call a stream complete once its last byte was written.

use std::fmt;
use std::io::Write as _;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Request heads larger than this are refused; real clients send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Request bodies larger than this are refused; enough for any test conversation.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Bytes read from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A fully read request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The request target without its query string.
    pub(crate) path: String,
    /// Header names lowercased, values trimmed, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Whether the connection may serve another request after this one; HTTP/1.0
    /// connections never do, to keep this server small.
    pub(crate) keep_alive: bool,
    /// HTTP/1.1, so streamed bodies can use chunked framing; HTTP/1.0 bodies of unknown
    /// length end when the connection closes instead.
    pub(crate) http_1_1: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header_name, _)| header_name == name).map(|(_, value)| value.as_str())
    }
}

/// Why a request could not be read; answered with `status` and the connection closed.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// What went wrong while reading a request.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client sent something that is not an acceptable HTTP/1.1 request.
    Bad(BadRequest),
    /// The socket failed or closed in the middle of a request: nobody to answer.
    Io(std::io::Error),
}

fn bad(status: u16, message: impl Into<String>) -> ReadError {
    ReadError::Bad(BadRequest { status, message: message.into() })
}

/// Reads one request from `stream`, using and refilling `buf` (which holds bytes already
/// read past the previous request). `Ok(None)` means the client closed the connection
/// cleanly between requests.
pub(crate) async fn read_request<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<Option<Request>, ReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head_len = loop {
        // Clients may send stray CRLFs between requests (RFC 9112 section 2.2).
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(bad(431, "request head too large"));
        }
        if read_more(stream, buf).await.map_err(ReadError::Io)? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| bad(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(400, format!("malformed request line {request_line:?}")));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad(505, format!("unsupported HTTP version {version:?}")));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(400, format!("malformed header line {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let is_http_1_1 = version == "HTTP/1.1";
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut request = Request {
        method: method.to_owned(),
        path,
        headers,
        body: Vec::new(),
        keep_alive: false,
        http_1_1: is_http_1_1,
    };
    buf.drain(..head_len);

    let connection = request.header("connection").unwrap_or_default().to_ascii_lowercase();
    request.keep_alive = is_http_1_1 && !connection.split(',').any(|token| token.trim().eq_ignore_ascii_case("close"));

    let chunked =
        request.header("transfer-encoding").is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    let content_length = match request.header("content-length") {
        None => None,
        Some(value) => Some(value.parse::<usize>().map_err(|_| bad(400, format!("invalid content-length {value:?}")))?),
    };
    let expects_continue = request.header("expect").is_some_and(|value| value.eq_ignore_ascii_case("100-continue"));
    if expects_continue && (chunked || content_length.unwrap_or(0) > buf.len()) {
        // Without this, curl waits a second before sending large bodies.
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(ReadError::Io)?;
    }

    request.body = if chunked {
        read_chunked_body(stream, buf).await?
    } else if let Some(length) = content_length {
        if length > MAX_BODY_BYTES {
            return Err(bad(413, "request body too large"));
        }
        while buf.len() < length {
            if read_more(stream, buf).await.map_err(ReadError::Io)? == 0 {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        buf.drain(..length).collect()
    } else {
        Vec::new()
    };
    Ok(Some(request))
}

async fn read_chunked_body<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<Vec<u8>, ReadError>
where
    S: AsyncRead + Unpin,
{
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| bad(400, format!("invalid chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line; they are of no interest.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(bad(413, "request body too large"));
        }
        while buf.len() < size + 2 {
            if read_more(stream, buf).await.map_err(ReadError::Io)? == 0 {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad(400, "chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Reads one CRLF-terminated line (without the CRLF) from the buffered stream.
async fn read_line<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<String, ReadError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.drain(..pos + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(bad(400, "chunked body line too long"));
        }
        if read_more(stream, buf).await.map_err(ReadError::Io)? == 0 {
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Appends whatever the socket has to `buf`; returns the byte count, 0 at end of stream.
///
/// Cancel safe: the bytes are appended in the same poll that reads them, so a `select!`
/// that drops this future loses nothing.
pub(crate) async fn read_more<S>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let n_read = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n_read]);
    Ok(n_read)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a complete response with a fixed-length body in one write.
pub(crate) async fn write_response<W>(
    writer: &mut W,
    status: u16,
    extra_headers: &[(&str, String)],
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut out = response_head(status, extra_headers, content_type, keep_alive);
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    writer.write_all(&bytes).await?;
    writer.flush().await
}

/// Writes the head of a streamed response (an event stream). With `chunked`, the body
/// follows as chunks framed by [`push_chunk`] and ends with [`LAST_CHUNK`]; without it
/// (HTTP/1.0 clients), the body is raw and ends when the connection closes.
pub(crate) async fn write_stream_head<W>(
    writer: &mut W,
    content_type: &str,
    chunked: bool,
    keep_alive: bool,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let extra_headers = [("cache-control", "no-cache".to_owned())];
    let mut out = response_head(200, &extra_headers, content_type, keep_alive && chunked);
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n");
    }
    out.push_str("\r\n");
    writer.write_all(out.as_bytes()).await?;
    writer.flush().await
}

/// The zero-length chunk that ends a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `payload` to `out` framed as one HTTP/1.1 chunk.
pub(crate) fn push_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        // An empty chunk would end the body.
        return;
    }
    // Writing into a `Vec` cannot fail.
    let _ = write!(out, "{:x}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

fn response_head(status: u16, extra_headers: &[(&str, String)], content_type: &str, keep_alive: bool) -> String {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\nserver: aniate-fake-llm\r\n",
        reason_phrase(status)
    );
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        out.push_str("connection: close\r\n");
    }
    out
}
