//! A small LSP client for tests (and the bench): it runs the real `ant-lsp`, speaks JSON-RPC
//! with `Content-Length` framing over its stdio, answers the server's requests as an editor
//! would (`workspace/applyEdit`, `window/workDoneProgress/create`, `window/showDocument`,
//! `workspace/configuration`), and records every notification and server request.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
    sync::{oneshot, watch},
};
use tower_lsp_server::lsp_types::{
    self, ClientCapabilities, InitializeParams, InitializeResult, InitializedParams, Position, TextEdit, Uri,
    notification::Notification, request::Request,
};

/// What the server sent us, in order.
#[derive(Debug, Clone)]
pub struct Message {
    pub method: String,
    pub params: Value,
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct Inbox {
    pending: HashMap<i64, oneshot::Sender<Value>>,
    notifications: Vec<Message>,
    server_requests: Vec<Message>,
}

/// A running `ant-lsp` and our side of its connection.
pub struct LspClient {
    pub child: Child,
    writer: Arc<tokio::sync::Mutex<ChildStdin>>,
    inbox: Arc<Mutex<Inbox>>,
    changed: watch::Receiver<u64>,
    next_id: AtomicI64,
    /// Answered to `workspace/configuration`, one per item.
    pub configuration: Arc<Mutex<Value>>,
    reader: tokio::task::JoinHandle<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn write_message(writer: &tokio::sync::Mutex<ChildStdin>, message: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(message)?;
    let mut writer = writer.lock().await;
    writer.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await
}

async fn read_message(reader: &mut BufReader<ChildStdout>) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).await.ok()?;
    serde_json::from_slice(&body).ok()
}

impl LspClient {
    /// Starts `exe` with `env` (and no inherited `ANIATE_*`), its stderr appended to `log`.
    pub fn spawn(exe: &Path, env: &[(String, String)], cwd: &Path, log: &Path) -> LspClient {
        let mut command = tokio::process::Command::new(exe);
        aniate_testkit::clear_aniate_env(command.as_std_mut());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the ant-lsp log");
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn ant-lsp");
        let writer = Arc::new(tokio::sync::Mutex::new(child.stdin.take().expect("stdin")));
        let stdout = child.stdout.take().expect("stdout");
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let configuration = Arc::new(Mutex::new(Value::Null));
        let (tx, changed) = watch::channel(0u64);
        let reader = tokio::spawn(read_loop(
            BufReader::new(stdout),
            Arc::clone(&writer),
            Arc::clone(&inbox),
            Arc::clone(&configuration),
            tx,
        ));
        LspClient { child, writer, inbox, changed, next_id: AtomicI64::new(1), configuration, reader }
    }

    /// Sends a request; returns its id and what resolves to the whole response message.
    pub async fn send_request(&self, method: &str, params: Value) -> (i64, oneshot::Receiver<Value>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inbox).pending.insert(id, tx);
        write_message(&self.writer, &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
            .expect("write to ant-lsp");
        (id, rx)
    }

    /// A request's `result`, or its `error` object.
    pub async fn request_raw(&self, method: &str, params: Value) -> Result<Value, Value> {
        let (_, response) = self.send_request(method, params).await;
        let response = tokio::time::timeout(Duration::from_secs(60), response)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"))
            .expect("ant-lsp answered");
        match response.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(response.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    pub async fn request<R: Request>(&self, params: R::Params) -> Result<R::Result, Value> {
        let result = self.request_raw(R::METHOD, serde_json::to_value(params).expect("params")).await?;
        Ok(serde_json::from_value(result).expect("a result of the documented shape"))
    }

    pub async fn notify_raw(&self, method: &str, params: Value) {
        write_message(&self.writer, &json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
            .expect("write to ant-lsp");
    }

    pub async fn notify<N: Notification>(&self, params: N::Params) {
        self.notify_raw(N::METHOD, serde_json::to_value(params).expect("params")).await;
    }

    /// `initialize` (with `capabilities` and `options`) then `initialized`.
    pub async fn initialize(&self, capabilities: ClientCapabilities, options: Option<Value>) -> InitializeResult {
        #[allow(deprecated)]
        let params = InitializeParams {
            process_id: Some(std::process::id()),
            capabilities,
            initialization_options: options,
            ..InitializeParams::default()
        };
        let result = self.request::<lsp_types::request::Initialize>(params).await.expect("initialize");
        self.notify::<lsp_types::notification::Initialized>(InitializedParams {}).await;
        result
    }

    pub fn notifications(&self, method: &str) -> Vec<Message> {
        lock(&self.inbox).notifications.iter().filter(|m| m.method == method).cloned().collect()
    }

    pub fn server_requests(&self, method: &str) -> Vec<Message> {
        lock(&self.inbox).server_requests.iter().filter(|m| m.method == method).cloned().collect()
    }

    /// Waits until some notification `method` satisfies `pred`; returns it.
    pub async fn wait_notification(
        &self,
        method: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Message> {
        self.wait_for(timeout, || self.notifications(method).into_iter().find(|m| pred(&m.params))).await
    }

    /// Waits until some server request `method` satisfies `pred`; returns it.
    pub async fn wait_server_request(
        &self,
        method: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Message> {
        self.wait_for(timeout, || self.server_requests(method).into_iter().find(|m| pred(&m.params))).await
    }

    pub async fn wait_for<T>(&self, timeout: Duration, check: impl Fn() -> Option<T>) -> Option<T> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.mark_unchanged();
            if let Some(found) = check() {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                return check();
            }
        }
    }

    /// The `window/showMessage` texts so far.
    pub fn messages(&self) -> Vec<String> {
        self.notifications("window/showMessage")
            .into_iter()
            .map(|m| m.params["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// `shutdown`, `exit`, and waits for the process to end.
    pub async fn shutdown(mut self) {
        let _ = self.request_raw("shutdown", Value::Null).await;
        self.notify_raw("exit", Value::Null).await;
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        assert!(matches!(status, Ok(Ok(status)) if status.success()), "ant-lsp did not exit cleanly: {status:?}");
        self.reader.abort();
    }
}

async fn read_loop(
    mut reader: BufReader<ChildStdout>,
    writer: Arc<tokio::sync::Mutex<ChildStdin>>,
    inbox: Arc<Mutex<Inbox>>,
    configuration: Arc<Mutex<Value>>,
    changed: watch::Sender<u64>,
) {
    while let Some(message) = read_message(&mut reader).await {
        let method = message.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = message.get("id").cloned();
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        match (method, id) {
            (Some(method), Some(id)) => {
                let result = match method.as_str() {
                    "workspace/applyEdit" => Some(json!({"applied": true})),
                    "window/workDoneProgress/create" | "client/registerCapability" => Some(Value::Null),
                    "window/showDocument" => Some(json!({"success": true})),
                    "workspace/configuration" => {
                        let n_items = params["items"].as_array().map_or(1, Vec::len);
                        let value = lock(&configuration).clone();
                        Some(Value::Array(vec![value; n_items]))
                    }
                    _ => None,
                };
                lock(&inbox).server_requests.push(Message { method, params, at: std::time::Instant::now() });
                let reply = match result {
                    Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    None => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "not supported"}}),
                };
                let _ = write_message(&writer, &reply).await;
            }
            (Some(method), None) => {
                lock(&inbox).notifications.push(Message { method, params, at: std::time::Instant::now() });
            }
            (None, Some(id)) => {
                let sender = id.as_i64().and_then(|id| lock(&inbox).pending.remove(&id));
                if let Some(sender) = sender {
                    let _ = sender.send(message);
                }
            }
            (None, None) => {}
        }
        changed.send_modify(|n| *n += 1);
    }
}

/// Everything an editor client of ant-lsp would say it supports.
pub fn full_capabilities() -> ClientCapabilities {
    serde_json::from_value(json!({
        "window": {"workDoneProgress": true, "showDocument": {"support": true}},
        "workspace": {"applyEdit": true, "workspaceEdit": {"documentChanges": true}, "configuration": false},
        "textDocument": {"codeAction": {
            "dataSupport": true,
            "resolveSupport": {"properties": ["edit"]},
            "codeActionLiteralSupport": {"codeActionKind": {"valueSet": ["", "quickfix", "refactor", "source"]}}
        }}
    }))
    .expect("capabilities")
}

pub fn file_uri(path: &Path) -> Uri {
    format!("file://{}", path.display()).parse().expect("a file URI")
}

/// The byte offset of an LSP position in `text` (lines split on `\n`, columns in UTF-16), done
/// independently of ant-lsp's own code.
pub fn offset_of(text: &str, position: Position) -> usize {
    let mut offset = 0;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if idx == position.line as usize {
            let mut units = 0;
            for (byte, c) in line.char_indices() {
                if units >= position.character || c == '\n' {
                    return offset + byte;
                }
                units += c.len_utf16() as u32;
            }
            return offset + line.trim_end_matches('\n').len();
        }
        offset += line.len();
    }
    text.len()
}

/// Applies non-overlapping edits (relative to `text`) as an editor does.
pub fn apply_edits(text: &str, edits: &[TextEdit]) -> String {
    let mut spans: Vec<(usize, usize, &str)> = edits
        .iter()
        .map(|edit| (offset_of(text, edit.range.start), offset_of(text, edit.range.end), edit.new_text.as_str()))
        .collect();
    spans.sort_by_key(|(start, _, _)| std::cmp::Reverse(*start));
    let mut out = text.to_owned();
    for (start, end, new_text) in spans {
        out.replace_range(start..end, new_text);
    }
    out
}

/// The text edits for `uri` in a workspace edit, whichever shape it has.
pub fn edits_for(edit: &lsp_types::WorkspaceEdit, uri: &Uri) -> Vec<TextEdit> {
    if let Some(changes) = &edit.changes
        && let Some(edits) = changes.get(uri)
    {
        return edits.clone();
    }
    match &edit.document_changes {
        Some(lsp_types::DocumentChanges::Edits(edits)) => edits
            .iter()
            .filter(|e| &e.text_document.uri == uri)
            .flat_map(|e| {
                e.edits.iter().map(|edit| match edit {
                    lsp_types::OneOf::Left(edit) => edit.clone(),
                    lsp_types::OneOf::Right(annotated) => annotated.text_edit.clone(),
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}
