//! The local IPC protocol between `aniated` and its clients (`ant`, `ant-lsp`): NDJSON frames
//! over a local socket, one JSON object per line.
//!
//! A client opens with [`ClientFrame::Hello`]; the daemon answers [`DaemonFrame::Hello`] with
//! its own protocol and version. Then the client sends [`ClientFrame::Request`]s with ids it
//! chooses, several at once if it likes, and the daemon answers each with [`DaemonFrame::Reply`]
//! frames carrying the same id: a stream of `meta`/`delta` then `done` or `error` for
//! `run_tool`, one `result` or `error` for everything else. A client that closes its connection
//! cancels its requests.
//!
//! ```text
//! → {"hello":{"protocol":1,"client":"ant/0.1.0"}}
//! ← {"hello":{"protocol":1,"daemon":"aniated/0.1.0","pid":4242}}
//! → {"request":{"id":1,"method":"run_tool","params":{"tool":"what","content":"","instructions":"hi"}}}
//! ← {"reply":{"id":1,"event":"meta","data":{"request_id":"req_…","tool":"what","version":1,"model":"…"}}}
//! ← {"reply":{"id":1,"event":"delta","data":{"text":"Hello"}}}
//! ← {"reply":{"id":1,"event":"done","data":{"usage":{…},"finish_reason":"stop"}}}
//! ```

use serde::{Deserialize, Serialize};

use crate::{
    api::{AssistantCreate, AssistantPatch, ChatMessage, Me},
    event::{Delta, Done, Meta},
    tool::ToolMeta,
};

/// The version of this protocol. A client that meets a daemon with another one restarts it.
pub const PROTOCOL: u32 = 1;

/// The largest frame either side accepts, newline included: room for a 1 MiB file after JSON
/// escaping. A larger frame ends the connection that sent it, not the daemon.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientFrame {
    Hello(ClientHello),
    Request(RequestFrame),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub protocol: u32,
    /// `name/version`, e.g. `ant/0.1.0`; for the daemon's log.
    pub client: String,
}

/// A request with the id its replies will carry. Ids are the client's: unique per connection.
///
/// `server` and `token` are the client's own settings for this request (`ant --server`,
/// `ANIATE_SERVER`, `ANIATE_TOKEN`): one daemon serves commands run with different ones. A
/// daemon older than these fields ignores them, and a client restarts an older daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    #[serde(flatten)]
    pub request: Request,
    /// The server this request goes to; absent: the daemon's configured server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The API token this request uses; absent: the stored one, if it belongs to the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl RequestFrame {
    /// A request with no per-request server or token.
    pub fn new(id: u64, request: Request) -> RequestFrame {
        RequestFrame { id, request, server: None, token: None }
    }
}

/// Every request a client can make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Request {
    /// Runs an installed tool; replies `meta`, `delta`s, then `done` or `error`.
    RunTool(RunToolParams),
    /// The installed tools: result [`ToolsListResult`].
    #[serde(rename = "tools.list")]
    ToolsList,
    /// Every tool on the server, with installed and update marks: result [`MarketplaceResult`].
    Marketplace,
    /// Installs tools by slug: result [`InstallResult`].
    Install { slugs: Vec<String> },
    /// Removes an installed tool: result [`UninstallResult`].
    Uninstall { slug: String },
    /// Applies the server's newer tool versions: result [`UpdateResult`].
    Update,
    /// Logs in with a token or email and password, and stores the token: result [`WhoamiResult`].
    Login(LoginParams),
    /// Creates an account and stores its token: result [`WhoamiResult`].
    Signup { email: String, password: String },
    /// Revokes and forgets the stored token: result `null`.
    Logout,
    /// Revokes every token of the account on the server, then forgets the stored one: result
    /// `null`. If the server refuses, the stored token is kept so that the user can retry.
    LogoutAll,
    /// Who the stored token belongs to: result [`WhoamiResult`].
    Whoami,
    /// The daemon's state: result [`StatusResult`].
    Status,
    /// A chat with a brew (or the default assistant); replies like `run_tool`.
    Chat(ChatParams),
    /// The brews the user can chat with: result `Vec<Assistant>`.
    #[serde(rename = "brew.list")]
    BrewList,
    /// One brew, by id or slug: result `Assistant` (with its prompt if it is the user's).
    #[serde(rename = "brew.show")]
    BrewShow { id: String },
    /// Creates a brew: result `Assistant`.
    #[serde(rename = "brew.create")]
    BrewCreate(AssistantCreate),
    /// Changes a brew of the user's: result `Assistant`.
    #[serde(rename = "brew.edit")]
    BrewEdit { id: String, patch: AssistantPatch },
    /// Deletes a brew of the user's: result `null`.
    #[serde(rename = "brew.delete")]
    BrewDelete { id: String },
    /// Stores a file on the server: the daemon reads `path` (absolute; it runs as the same
    /// user): result `FileMeta`.
    #[serde(rename = "files.push")]
    FilesPush { path: String, name: Option<String> },
    /// The user's stored files: result `Vec<FileMeta>`.
    #[serde(rename = "files.list")]
    FilesList,
    /// Deletes a stored file: result `null`.
    #[serde(rename = "files.rm")]
    FilesRm { id: i64 },
    /// The user's usage this month: result `UsageReport`.
    Usage,
    /// Cancels the request `id` of this connection; it ends with an `error` of code `cancelled`.
    Cancel { id: u64 },
    /// Stops the daemon after answering: result `null`.
    Shutdown,
}

impl Request {
    /// The method name, for logs (never the parameters: they may hold passwords or files).
    pub fn method(&self) -> &'static str {
        match self {
            Request::RunTool(_) => "run_tool",
            Request::ToolsList => "tools.list",
            Request::Marketplace => "marketplace",
            Request::Install { .. } => "install",
            Request::Uninstall { .. } => "uninstall",
            Request::Update => "update",
            Request::Login(_) => "login",
            Request::Signup { .. } => "signup",
            Request::Logout => "logout",
            Request::LogoutAll => "logout_all",
            Request::Whoami => "whoami",
            Request::Status => "status",
            Request::Chat(_) => "chat",
            Request::BrewList => "brew.list",
            Request::BrewShow { .. } => "brew.show",
            Request::BrewCreate(_) => "brew.create",
            Request::BrewEdit { .. } => "brew.edit",
            Request::BrewDelete { .. } => "brew.delete",
            Request::FilesPush { .. } => "files.push",
            Request::FilesList => "files.list",
            Request::FilesRm { .. } => "files.rm",
            Request::Usage => "usage",
            Request::Cancel { .. } => "cancel",
            Request::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunToolParams {
    pub tool: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Skip the local result cache.
    #[serde(default)]
    pub fresh: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant: Option<String>,
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LoginParams {
    Token { token: String },
    Password { email: String, password: String },
}

/// What the daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonFrame {
    Hello(DaemonHello),
    Reply(ReplyFrame),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonHello {
    pub protocol: u32,
    /// `aniated/VERSION`.
    pub daemon: String,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyFrame {
    pub id: u64,
    #[serde(flatten)]
    pub event: Reply,
}

/// One reply to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Reply {
    Meta(Meta),
    Delta(Delta),
    Done(RunDone),
    Error(IpcError),
    /// The answer to a one-shot request; its shape depends on the method.
    Result(serde_json::Value),
}

impl Reply {
    /// Whether this reply ends its request.
    pub fn is_final(&self) -> bool {
        matches!(self, Reply::Done(_) | Reply::Error(_) | Reply::Result(_))
    }
}

/// `done` of a tool run: the server's `done`, and whether it came from the local cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDone {
    #[serde(flatten)]
    pub done: Done,
    #[serde(default)]
    pub cached: bool,
}

/// Why a request failed; [`IpcErrorCode::exit_code`] is what `ant` exits with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    pub code: IpcErrorCode,
    pub message: String,
    /// What the user can do about it, e.g. `run \`ant install fix\``.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl IpcError {
    pub fn new(code: IpcErrorCode, message: impl Into<String>) -> IpcError {
        IpcError { code, message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> IpcError {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for IpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IpcError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcErrorCode {
    /// The request was malformed or invalid (e.g. a file over the limit).
    BadRequest,
    /// No stored token, or the server refused it.
    NotLoggedIn,
    /// The tool is not installed here.
    NotInstalled,
    /// The server has no such (active) tool.
    UnknownTool,
    /// The server could not be reached, or answered 5xx.
    ServerUnavailable,
    /// The model provider failed or timed out (server 502/504).
    Provider,
    /// The server or provider is rate limiting.
    RateLimited,
    /// The server refused the request for another reason (403, 409, 413, 422).
    Refused,
    /// The request was cancelled.
    Cancelled,
    /// The server stopped the answer: it repeated the tool's private instructions.
    PromptProtected,
    /// The daemon could not write under `ANIATE_HOME` (disk full, read-only, permissions);
    /// what was stored before is intact.
    Storage,
    /// A bug or an unexpected state; the daemon log has details.
    Internal,
    /// A code this version does not know, from a newer daemon.
    #[serde(other)]
    Unknown,
}

impl IpcErrorCode {
    /// The exit code of `ant` for this error, per the CLI contract: 1 error, 3 not logged in,
    /// 4 tool not installed or unknown, 5 server or provider unavailable, 130 interrupted.
    pub fn exit_code(self) -> u8 {
        match self {
            IpcErrorCode::NotLoggedIn => 3,
            IpcErrorCode::NotInstalled | IpcErrorCode::UnknownTool => 4,
            IpcErrorCode::ServerUnavailable | IpcErrorCode::Provider | IpcErrorCode::RateLimited => 5,
            IpcErrorCode::Cancelled => 130,
            IpcErrorCode::BadRequest
            | IpcErrorCode::Refused
            | IpcErrorCode::PromptProtected
            | IpcErrorCode::Storage
            | IpcErrorCode::Internal
            | IpcErrorCode::Unknown => 1,
        }
    }
}

/// An installed tool as the client keeps it in `tools/<slug>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledTool {
    #[serde(flatten)]
    pub meta: ToolMeta,
    /// The newer version the server has, when the background check found one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_available: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolsListResult {
    pub tools: Vec<InstalledTool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketplaceEntry {
    #[serde(flatten)]
    pub meta: ToolMeta,
    /// The installed version, if installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<i64>,
}

impl MarketplaceEntry {
    pub fn update_available(&self) -> bool {
        self.installed_version.is_some_and(|installed| installed < self.meta.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketplaceResult {
    pub tools: Vec<MarketplaceEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallResult {
    pub installed: Vec<ToolMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UninstallResult {
    pub slug: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolUpdate {
    pub slug: String,
    pub from_version: i64,
    pub to_version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResult {
    /// Installed tools that moved to a newer version.
    pub updated: Vec<ToolUpdate>,
    /// Installed tools the server deactivated or deleted; they were uninstalled.
    pub removed: Vec<String>,
    /// How many installed tools were already current.
    pub unchanged: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoamiResult {
    #[serde(flatten)]
    pub me: Me,
    pub server: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    pub server: String,
    /// The server's version, from its last `/healthz` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Whether the last request to the server (or keep-alive probe) succeeded.
    pub server_reachable: bool,
    pub logged_in: bool,
    pub installed_tools: usize,
    pub requests_served: u64,
    pub cache_hits: u64,
    /// Tools with a newer version on the server, from the background check.
    pub updates_available: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_client(frame: ClientFrame, json: &str) {
        assert_eq!(serde_json::to_string(&frame).unwrap(), json);
        assert_eq!(serde_json::from_str::<ClientFrame>(json).unwrap(), frame);
    }

    #[test]
    fn client_frames_have_the_documented_shape() {
        round_trip_client(
            ClientFrame::Hello(ClientHello { protocol: 1, client: "ant/0.1.0".into() }),
            r#"{"hello":{"protocol":1,"client":"ant/0.1.0"}}"#,
        );
        round_trip_client(
            ClientFrame::Request(RequestFrame::new(
                1,
                Request::RunTool(RunToolParams {
                    tool: "what".into(),
                    instructions: Some("hi".into()),
                    ..Default::default()
                }),
            )),
            r#"{"request":{"id":1,"method":"run_tool","params":{"tool":"what","content":"","instructions":"hi","fresh":false}}}"#,
        );
        round_trip_client(
            ClientFrame::Request(RequestFrame::new(2, Request::Status)),
            r#"{"request":{"id":2,"method":"status"}}"#,
        );
        round_trip_client(
            ClientFrame::Request(RequestFrame::new(3, Request::ToolsList)),
            r#"{"request":{"id":3,"method":"tools.list"}}"#,
        );
        round_trip_client(
            ClientFrame::Request(RequestFrame::new(4, Request::Cancel { id: 1 })),
            r#"{"request":{"id":4,"method":"cancel","params":{"id":1}}}"#,
        );
        // A request with its own server and token (`ant --server`, `ANIATE_TOKEN`).
        round_trip_client(
            ClientFrame::Request(RequestFrame {
                server: Some("https://b.example".into()),
                token: Some("t".into()),
                ..RequestFrame::new(6, Request::Whoami)
            }),
            r#"{"request":{"id":6,"method":"whoami","server":"https://b.example","token":"t"}}"#,
        );
        let login = r#"{"request":{"id":5,"method":"login","params":{"token":"t"}}}"#;
        let ClientFrame::Request(frame) = serde_json::from_str(login).unwrap() else { panic!() };
        assert_eq!(frame.request, Request::Login(LoginParams::Token { token: "t".into() }));
    }

    #[test]
    fn daemon_frames_have_the_documented_shape() {
        let frame = DaemonFrame::Reply(ReplyFrame { id: 7, event: Reply::Delta(Delta { text: "x".into() }) });
        let json = r#"{"reply":{"id":7,"event":"delta","data":{"text":"x"}}}"#;
        assert_eq!(serde_json::to_string(&frame).unwrap(), json);
        assert_eq!(serde_json::from_str::<DaemonFrame>(json).unwrap(), frame);
        let error = DaemonFrame::Reply(ReplyFrame {
            id: 8,
            event: Reply::Error(IpcError::new(IpcErrorCode::NotInstalled, "no").with_hint("ant install x")),
        });
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(
            json,
            r#"{"reply":{"id":8,"event":"error","data":{"code":"not_installed","message":"no","hint":"ant install x"}}}"#
        );
        assert_eq!(serde_json::from_str::<DaemonFrame>(&json).unwrap(), error);
    }

    #[test]
    fn bad_frames_are_errors() {
        for bad in [
            r#"{"request":{"id":1,"method":"format_disk"}}"#,
            r#"{"hello":{}}"#,
            "[]",
            r#"{"request":{"method":"status"}}"#,
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_codes_follow_the_cli_contract() {
        assert_eq!(IpcErrorCode::NotLoggedIn.exit_code(), 3);
        assert_eq!(IpcErrorCode::NotInstalled.exit_code(), 4);
        assert_eq!(IpcErrorCode::ServerUnavailable.exit_code(), 5);
        assert_eq!(IpcErrorCode::Cancelled.exit_code(), 130);
    }
}
