//! A deliberately minimal HTTP/1.1 client on a raw `TcpStream`, so tests control exactly
//! when bytes are read and when the socket is dropped.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False if the connection ended before the body did.
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header_name, _)| header_name == name).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `data:` payloads of a server-sent event stream, as bytes (they may be garbage).
    pub fn events(&self) -> Vec<Vec<u8>> {
        self.body
            .split(|&byte| byte == b'\n')
            .filter_map(|line| line.strip_prefix(b"data: "))
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The JSON events, excluding `[DONE]`; panics on garbage.
    pub fn json_events(&self) -> Vec<serde_json::Value> {
        self.events()
            .iter()
            .filter(|event| event.as_slice() != b"[DONE]")
            .map(|event| serde_json::from_slice(event).unwrap())
            .collect()
    }

    /// The concatenated `delta.content` of a stream.
    pub fn streamed_content(&self) -> String {
        self.json_events()
            .iter()
            .filter_map(|event| event["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect()
    }
}

pub struct Conn {
    pub stream: TcpStream,
    /// Bytes read but not yet consumed.
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, buf: Vec::new() }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: Option<&str>, extra_headers: &[&str]) {
        let mut request = format!("{method} {path} HTTP/1.1\r\nhost: fake\r\n");
        for header in extra_headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        if let Some(body) = body {
            request
                .push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
        } else {
            request.push_str("\r\n");
        }
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes into `buf`; returns how many (0 at end of stream, or on reset).
    pub async fn read_more(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n_read = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n_read]);
        n_read
    }

    /// Reads until `buf` holds `count` occurrences of `needle`.
    pub async fn read_until_count(&mut self, needle: &[u8], count: usize) {
        while count_occurrences(&self.buf, needle) < count {
            assert!(self.read_more().await > 0, "connection ended early: {}", String::from_utf8_lossy(&self.buf));
        }
    }

    pub async fn read_response(&mut self) -> Response {
        let head_len = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            assert!(self.read_more().await > 0, "connection ended before the response head");
        };
        let head = String::from_utf8(self.buf[..head_len].to_vec()).unwrap();
        self.buf.drain(..head_len);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let mut response = Response { status, headers, body: Vec::new(), complete: true };
        if status < 200 || status == 204 || status == 304 {
            // No body by definition.
        } else if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let Some(line_end) = self.fill_until(b"\r\n").await else {
                    response.complete = false;
                    break;
                };
                let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap(), 16).unwrap();
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    if self.fill_until(b"\r\n").await.is_none() {
                        response.complete = false;
                    } else {
                        self.buf.drain(..2);
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    if self.read_more().await == 0 {
                        break;
                    }
                }
                if self.buf.len() < size + 2 {
                    response.body.extend_from_slice(&self.buf);
                    self.buf.clear();
                    response.complete = false;
                    break;
                }
                assert_eq!(&self.buf[size..size + 2], b"\r\n");
                response.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().unwrap();
            while self.buf.len() < length {
                if self.read_more().await == 0 {
                    response.complete = false;
                    break;
                }
            }
            let length = length.min(self.buf.len());
            response.body = self.buf.drain(..length).collect();
        } else {
            while self.read_more().await > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    async fn fill_until(&mut self, needle: &[u8]) -> Option<usize> {
        loop {
            if let Some(pos) = find(&self.buf, needle) {
                return Some(pos);
            }
            if self.read_more().await == 0 {
                return None;
            }
        }
    }
}

/// One request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    let mut conn = Conn::connect(addr).await;
    conn.send(method, path, body, &["connection: close"]).await;
    conn.read_response().await
}

/// A chat completion request body with one user message.
pub fn chat_body(content: &str, stream: bool) -> String {
    serde_json::json!({
        "model": "llama-3.1-8b-instant",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
    })
    .to_string()
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

pub fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|window| *window == needle).count()
}
