//! The client of `ant-server`: one pooled `reqwest` client (rustls, HTTP/2 by ALPN, keep-alive)
//! that the daemon opens at start and keeps warm, so a tool run pays no connection set-up.
//!
//! Every server failure becomes an [`IpcError`] whose code decides `ant`'s exit status.

use std::{path::Path, time::Duration};

use aniate_proto::{
    api::{
        Assistant, AssistantCreate, AssistantPatch, ChatRequest, Credentials, FileMeta, Me, RunToolRequest,
        TokenResponse, UsageReport,
    },
    error::ErrorBody,
    event::StreamEvent,
    ipc::{IpcError, IpcErrorCode},
    sse::SseParser,
    tool::ToolMeta,
};
use futures_util::StreamExt;

/// What `GET /tools` answered.
#[derive(Debug)]
pub enum ToolsFetch {
    Modified { tools: Vec<ToolMeta>, etag: Option<String> },
    NotModified,
}

#[derive(Debug, Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
}

impl ServerClient {
    /// Builds the client; `ca_cert` is an extra PEM root to trust (self-hosted HTTPS).
    pub fn new(base: &str, ca_cert: Option<&Path>) -> Result<ServerClient, String> {
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            // Keep the warm connection: the daemon's keep-alive probe runs well within this.
            .pool_idle_timeout(Duration::from_secs(300))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .user_agent(concat!("aniated/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem =
                std::fs::read(path).map_err(|err| format!("cannot read CA certificate {}: {err}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| format!("cannot parse CA certificate {}: {err}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(ServerClient { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// The same client aimed at another server: it shares the connection pool, which keeps
    /// one set of connections per origin.
    pub fn with_base(&self, base: &str) -> ServerClient {
        ServerClient { http: self.http.clone(), base: base.trim_end_matches('/').to_owned() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, err: &reqwest::Error) -> IpcError {
        tracing::warn!(cause = %err, "server request failed");
        let detail = if err.is_timeout() {
            "timed out".to_owned()
        } else if err.is_connect() {
            "connection refused or failed".to_owned()
        } else {
            err.to_string()
        };
        IpcError::new(
            IpcErrorCode::ServerUnavailable,
            format!("cannot reach the Aniate server at {} ({detail})", self.base),
        )
        .with_hint("check `ant config get server`, or that ant-server is running")
    }

    /// A cheap request that opens (or keeps open) the pooled connection; the server's version.
    pub async fn ping(&self) -> Result<Option<String>, IpcError> {
        let response = self.http.get(self.url("/healthz")).send().await.map_err(|err| self.unreachable(&err))?;
        // Read the body (so the connection goes back to the pool) for the version in it.
        let body = response.bytes().await.unwrap_or_default();
        Ok(serde_json::from_slice::<aniate_proto::api::Health>(&body).ok().map(|health| health.version))
    }

    pub async fn tools(&self, etag: Option<&str>) -> Result<ToolsFetch, IpcError> {
        let mut request = self.http.get(self.url("/tools"));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(ToolsFetch::NotModified);
        }
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let tools = self.json::<Vec<ToolMeta>>(response).await?;
        Ok(ToolsFetch::Modified { tools, etag })
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<String, IpcError> {
        let body = Credentials { email: email.to_owned(), password: password.to_owned() };
        let response =
            self.http.post(self.url("/auth/login")).json(&body).send().await.map_err(|err| self.unreachable(&err))?;
        Ok(self.json::<TokenResponse>(response).await?.token)
    }

    pub async fn signup(&self, email: &str, password: &str) -> Result<String, IpcError> {
        let body = Credentials { email: email.to_owned(), password: password.to_owned() };
        let response =
            self.http.post(self.url("/auth/signup")).json(&body).send().await.map_err(|err| self.unreachable(&err))?;
        Ok(self.json::<TokenResponse>(response).await?.token)
    }

    pub async fn logout(&self, token: &str) -> Result<(), IpcError> {
        let response = self
            .http
            .post(self.url("/auth/logout"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if response.status().is_success() || response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        Err(self.error_from(response).await)
    }

    /// Revokes every token of the account (`POST /auth/logout-all`).
    pub async fn logout_all(&self, token: &str) -> Result<(), IpcError> {
        let response = self
            .http
            .post(self.url("/auth/logout-all"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.error_from(response).await)
    }

    pub async fn me(&self, token: &str) -> Result<Me, IpcError> {
        let response =
            self.http.get(self.url("/me")).bearer_auth(token).send().await.map_err(|err| self.unreachable(&err))?;
        self.json(response).await
    }

    /// Starts a tool run; the stream yields the server's events.
    pub async fn run_tool(&self, token: &str, slug: &str, request: &RunToolRequest) -> Result<RunStream, IpcError> {
        self.stream(token, &format!("/tool/{slug}"), request).await
    }

    /// Starts a chat; the stream yields the server's events, like a tool run's.
    pub async fn chat(&self, token: &str, request: &ChatRequest) -> Result<RunStream, IpcError> {
        self.stream(token, "/chat", request).await
    }

    /// `POST path` asking for Server-Sent Events; the stream of a run or a chat.
    async fn stream(&self, token: &str, path: &str, body: &impl serde::Serialize) -> Result<RunStream, IpcError> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        Ok(RunStream { body: Box::pin(response.bytes_stream()), parser: SseParser::default(), pending: Vec::new() })
    }

    pub async fn brews(&self, token: &str) -> Result<Vec<Assistant>, IpcError> {
        self.get_json(token, "/assistants").await
    }

    pub async fn brew(&self, token: &str, id: &str) -> Result<Assistant, IpcError> {
        self.get_json(token, &format!("/assistants/{}", path_segment(id))).await
    }

    pub async fn create_brew(&self, token: &str, brew: &AssistantCreate) -> Result<Assistant, IpcError> {
        let response = self
            .http
            .post(self.url("/assistants"))
            .bearer_auth(token)
            .json(brew)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        self.json(response).await
    }

    pub async fn edit_brew(&self, token: &str, id: &str, patch: &AssistantPatch) -> Result<Assistant, IpcError> {
        let response = self
            .http
            .patch(self.url(&format!("/assistants/{}", path_segment(id))))
            .bearer_auth(token)
            .json(patch)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        self.json(response).await
    }

    pub async fn delete_brew(&self, token: &str, id: &str) -> Result<(), IpcError> {
        self.delete(token, &format!("/assistants/{}", path_segment(id))).await
    }

    pub async fn upload_file(&self, token: &str, name: &str, content: Vec<u8>) -> Result<FileMeta, IpcError> {
        let response = self
            .http
            .post(self.url("/files"))
            .query(&[("name", name)])
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(content)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        self.json(response).await
    }

    pub async fn files(&self, token: &str) -> Result<Vec<FileMeta>, IpcError> {
        self.get_json(token, "/files").await
    }

    pub async fn delete_file(&self, token: &str, id: i64) -> Result<(), IpcError> {
        self.delete(token, &format!("/files/{id}")).await
    }

    pub async fn usage(&self, token: &str) -> Result<UsageReport, IpcError> {
        self.get_json(token, "/usage").await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, IpcError> {
        let response =
            self.http.get(self.url(path)).bearer_auth(token).send().await.map_err(|err| self.unreachable(&err))?;
        self.json(response).await
    }

    async fn delete(&self, token: &str, path: &str) -> Result<(), IpcError> {
        let response =
            self.http.delete(self.url(path)).bearer_auth(token).send().await.map_err(|err| self.unreachable(&err))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.error_from(response).await)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, IpcError> {
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let bytes = response.bytes().await.map_err(|err| self.unreachable(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| {
            IpcError::new(
                IpcErrorCode::ServerUnavailable,
                format!("the server at {} sent an unexpected answer: {err}", self.base),
            )
        })
    }

    /// Maps an HTTP error response to an [`IpcError`], keeping the server's message.
    async fn error_from(&self, response: reqwest::Response) -> IpcError {
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let message = response
            .bytes()
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ErrorBody>(&bytes).ok())
            .map(|body| body.error.message)
            .unwrap_or_else(|| format!("the server answered HTTP {status}"));
        match status {
            401 => IpcError::new(IpcErrorCode::NotLoggedIn, format!("the server refused the credentials: {message}"))
                .with_hint("run `ant login`"),
            404 => IpcError::new(IpcErrorCode::UnknownTool, message),
            429 => {
                let error = IpcError::new(IpcErrorCode::RateLimited, message);
                // The server's messages already say when to retry; a hint only where one does not.
                match retry_after {
                    Some(seconds) if !error.message.contains("retry in") => {
                        error.with_hint(format!("retry in {seconds} s"))
                    }
                    _ => error,
                }
            }
            502 | 504 => IpcError::new(IpcErrorCode::Provider, message),
            500..=599 => IpcError::new(IpcErrorCode::ServerUnavailable, message),
            _ => IpcError::new(IpcErrorCode::Refused, message),
        }
    }
}

/// A value as one URL path segment: ids and slugs only, anything else percent-encoded.
fn path_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A tool run's events as the server streams them. Dropping it closes the request, which
/// cancels the run on the server and at the provider.
pub struct RunStream {
    body: ByteStream,
    parser: SseParser,
    /// Parsed events not yet returned, in reverse order.
    pending: Vec<StreamEvent>,
}

impl RunStream {
    /// The next event; `None` when the stream ended. A broken stream is an error event.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, IpcError>> {
        loop {
            if let Some(event) = self.pending.pop() {
                return Some(Ok(event));
            }
            let chunk = match self.body.next().await? {
                Ok(chunk) => chunk,
                Err(err) => {
                    tracing::warn!(cause = %err, "server stream broke");
                    return Some(Err(IpcError::new(
                        IpcErrorCode::ServerUnavailable,
                        "the connection to the server broke mid-answer",
                    )));
                }
            };
            let events = match self.parser.push(&chunk) {
                Ok(events) => events,
                Err(err) => return Some(Err(IpcError::new(IpcErrorCode::ServerUnavailable, err.to_string()))),
            };
            for event in events.iter().rev() {
                match StreamEvent::from_sse(event) {
                    Ok(event) => self.pending.push(event),
                    Err(err) => tracing::warn!(cause = %err, "skipping a stream event this version does not know"),
                }
            }
        }
    }
}
