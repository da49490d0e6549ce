//! [`Backend`]: the language server. It keeps the open documents (incremental sync), lists
//! tool actions from the installed tools without any I/O, and runs a tool (through the
//! daemon) only when an action is resolved or its command executed, then turns the answer
//! into what the editor understands: an edit, diagnostics, or a message or document.

use std::{
    collections::HashMap,
    ops::Range as Bytes,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
};

use aniate_proto::{
    ipc::{IpcError, IpcErrorCode, Reply, RunToolParams},
    tool::{OutputKind, ResultRejected, ToolMeta, ToolResult},
};
use aniated::home::Home;
use tower_lsp_server::{
    Client, LanguageServer, UriExt,
    jsonrpc::{Error, Result},
    lsp_types::{
        ClientCapabilities, CodeAction, CodeActionKind, CodeActionOptions, CodeActionOrCommand, CodeActionParams,
        CodeActionProviderCapability, CodeActionResponse, CodeActionTriggerKind, ConfigurationItem,
        DidChangeConfigurationParams, DidChangeTextDocumentParams, DidCloseTextDocumentParams,
        DidOpenTextDocumentParams, DidSaveTextDocumentParams, DocumentChanges, ExecuteCommandOptions,
        ExecuteCommandParams, InitializeParams, InitializeResult, InitializedParams, LSPAny, MessageType, OneOf,
        OptionalVersionedTextDocumentIdentifier, ProgressToken, ServerCapabilities, ServerInfo, ShowDocumentParams,
        TextDocumentEdit, TextDocumentSyncCapability, TextDocumentSyncKind, TextDocumentSyncOptions,
        TextDocumentSyncSaveOptions, Uri, WorkDoneProgressCancelParams, WorkDoneProgressOptions, WorkspaceEdit,
    },
};

use crate::{
    actions::{self, RUN_COMMAND, RunData},
    daemon::Daemon,
    edits,
    findings::{self, StoredFinding},
    progress::{Cancels, RunProgress, format_size},
    settings::Settings,
    text::Document,
    textout::{self, Presentation},
    tools::Tools,
};

/// What the client said it can do, reduced to what we use.
#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    work_done_progress: bool,
    show_document: bool,
    resolve_edit: bool,
    document_changes: bool,
    configuration: bool,
}

impl Caps {
    fn from_client(caps: &ClientCapabilities) -> Caps {
        let window = caps.window.as_ref();
        let workspace = caps.workspace.as_ref();
        Caps {
            work_done_progress: window.and_then(|w| w.work_done_progress).unwrap_or(false),
            show_document: window.and_then(|w| w.show_document.as_ref()).is_some_and(|s| s.support),
            resolve_edit: caps
                .text_document
                .as_ref()
                .and_then(|t| t.code_action.as_ref())
                .and_then(|c| c.resolve_support.as_ref())
                .is_some_and(|r| r.properties.iter().any(|p| p == "edit")),
            document_changes: workspace
                .and_then(|w| w.workspace_edit.as_ref())
                .and_then(|e| e.document_changes)
                .unwrap_or(false),
            configuration: workspace.and_then(|w| w.configuration).unwrap_or(false),
        }
    }
}

/// Everything the server keeps. Locks are never held across an `await`.
#[derive(Debug)]
struct State {
    documents: Mutex<HashMap<Uri, Document>>,
    findings: Mutex<HashMap<Uri, Vec<StoredFinding>>>,
    settings: RwLock<Settings>,
    caps: RwLock<Caps>,
    tools: Tools,
    daemon: Daemon,
    cancels: Cancels,
    /// Keeps the tools directory watched.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Markdown answers written for the editor to show; removed at shutdown.
    temp_files: Mutex<Vec<PathBuf>>,
    /// The version of each document last told it is too big, so the editor is not nagged.
    size_warned: Mutex<HashMap<Uri, i32>>,
    /// The review run on save of each document, so a new save replaces it.
    save_runs: Mutex<HashMap<Uri, tokio::task::AbortHandle>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The language server; cheap to clone (runs on save use a clone on their own task).
#[derive(Debug, Clone)]
pub struct Backend {
    client: Client,
    state: Arc<State>,
}

/// Why a run gave nothing to apply.
#[derive(Debug)]
enum RunError {
    /// Shown to the user as an error.
    Failed(String),
    /// Shown as a warning.
    Warning(String),
    /// The document changed while the tool ran; shown as a warning.
    Stale(String),
    /// The user cancelled: nothing to say.
    Cancelled,
}

/// The document as a run saw it.
#[derive(Debug)]
struct Snapshot {
    uri: Uri,
    doc: Document,
    scope: Bytes<usize>,
    whole: bool,
}

/// A run that ended with an answer, for a document that has not changed since.
#[derive(Debug)]
struct Finished {
    tool: ToolMeta,
    snapshot: Snapshot,
    text: String,
    result: Option<ToolResult>,
    /// Why the server gave no result (a `code` answer that is not a file, or was cut off).
    rejected: Option<ResultRejected>,
}

impl Backend {
    pub fn new(client: Client, home: Home) -> Backend {
        let state = State {
            documents: Mutex::default(),
            findings: Mutex::default(),
            settings: RwLock::default(),
            caps: RwLock::default(),
            tools: Tools::new(home.clone()),
            daemon: Daemon::new(home),
            cancels: Cancels::default(),
            watcher: Mutex::default(),
            temp_files: Mutex::default(),
            size_warned: Mutex::default(),
            save_runs: Mutex::default(),
        };
        Backend { client, state: Arc::new(state) }
    }

    fn settings(&self) -> Settings {
        self.state.settings.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn caps(&self) -> Caps {
        *self.state.caps.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_settings(&self, value: &serde_json::Value) {
        let warnings = self.state.settings.write().unwrap_or_else(PoisonError::into_inner).update(value);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        tracing::debug!(settings = ?self.settings(), "settings");
    }

    /// `window/workDoneProgress/cancel`: the user cancelled a run from its progress.
    pub async fn work_done_progress_cancel(&self, params: WorkDoneProgressCancelParams) {
        if !self.state.cancels.cancel(&params.token) {
            tracing::debug!(token = ?params.token, "no running progress to cancel");
        }
    }

    async fn pull_configuration(&self) {
        let item = ConfigurationItem { scope_uri: None, section: Some("aniate".to_owned()) };
        // A client that does not answer must not hold a request slot forever.
        let pulled = tokio::time::timeout(std::time::Duration::from_secs(5), self.client.configuration(vec![item]));
        match pulled.await.unwrap_or_else(|_| Err(Error::internal_error())) {
            Ok(values) => {
                if let Some(value) = values.first().filter(|value| value.is_object()) {
                    self.update_settings(value);
                }
            }
            Err(err) => tracing::debug!(cause = %err, "workspace/configuration failed"),
        }
    }

    /// The document's name for messages: its file name, else its URI.
    fn display_name(uri: &Uri) -> String {
        uri.to_file_path()
            .and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .unwrap_or_else(|| uri.as_str().to_owned())
    }

    fn too_big_message(uri: &Uri, size: usize, limit: usize) -> String {
        format!(
            "Aniate: {} is {}, over the limit of {} (aniate.maxFileSize); Aniate tools are not offered for it",
            Self::display_name(uri),
            format_size(size),
            format_size(limit)
        )
    }

    /// Runs a tool on (part of) a document, with progress, until its answer or an error.
    async fn run(&self, data: &RunData, token: Option<ProgressToken>) -> std::result::Result<Finished, RunError> {
        let slug = data.tool.as_str();
        let tool = self.state.tools.get(slug).ok_or_else(|| {
            RunError::Failed(format!("Aniate: tool `{slug}` is not installed — run `ant install {slug}`"))
        })?;
        if !actions::offerable(&tool) {
            return Err(RunError::Failed(format!(
                "Aniate: `{slug}` proposes shell commands; run it in a terminal: ant {slug} -i \"…\""
            )));
        }
        let snapshot = {
            let documents = lock(&self.state.documents);
            let doc = documents.get(&data.uri).ok_or_else(|| {
                RunError::Failed(format!("Aniate: {} is not open in the editor", Self::display_name(&data.uri)))
            })?;
            let limit = self.settings().max_file_size;
            if doc.text.len() > limit {
                return Err(RunError::Failed(Self::too_big_message(&data.uri, doc.text.len(), limit)));
            }
            let selection = data.range.map(|range| doc.byte_range(range)).filter(|bytes| !bytes.is_empty());
            Snapshot {
                uri: data.uri.clone(),
                whole: selection.is_none(),
                scope: selection.unwrap_or(0..doc.text.len()),
                doc: doc.clone(),
            }
        };
        let content = &snapshot.doc.text[snapshot.scope.clone()];
        if content.trim().is_empty() {
            let what = if snapshot.whole { "the document" } else { "the selection" };
            return Err(RunError::Warning(format!("Aniate {slug}: {what} is empty; nothing to send")));
        }
        let params = RunToolParams {
            tool: slug.to_owned(),
            content: content.to_owned(),
            instructions: None,
            filename: snapshot.uri.to_file_path().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            language: Some(snapshot.doc.language_id.clone()).filter(|id| !id.trim().is_empty()),
            fresh: false,
        };
        let title = actions::title(&tool);
        let caps = self.caps();
        let (mut progress, cancelled) = RunProgress::begin(
            &self.client,
            &self.state.cancels,
            token,
            caps.work_done_progress,
            title,
            format!("{slug}: waiting for the model"),
        )
        .await;
        let cancelled = async move {
            // A dropped switch (no progress, or it ended) is not a cancel.
            if cancelled.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(cancelled);

        let mut replies = tokio::select! {
            replies = self.state.daemon.run_tool(params) => match replies {
                Ok(replies) => replies,
                Err(error) => {
                    progress.end("failed").await;
                    return Err(self.ipc_failure(slug, error).await);
                }
            },
            () = &mut cancelled => {
                progress.end("cancelled").await;
                return Err(RunError::Cancelled);
            }
        };
        let mut text = String::new();
        let done = loop {
            let reply = tokio::select! {
                reply = replies.next() => reply,
                () = &mut cancelled => {
                    // Dropping the replies cancels the run: daemon, server, provider.
                    drop(replies);
                    progress.end("cancelled").await;
                    return Err(RunError::Cancelled);
                }
            };
            match reply {
                Some(Reply::Delta(delta)) => {
                    text.push_str(&delta.text);
                    let output = tool.output;
                    progress.report(|| report_message(slug, output, &text)).await;
                }
                Some(Reply::Done(done)) => break done.done,
                Some(Reply::Error(error)) => {
                    progress.end("failed").await;
                    return Err(self.ipc_failure(slug, error).await);
                }
                Some(Reply::Meta(_) | Reply::Result(_)) => {}
                None => {
                    progress.end("failed").await;
                    return Err(RunError::Failed(format!("Aniate {slug}: the answer ended without a result")));
                }
            }
        };
        progress.end("done").await;
        let current = lock(&self.state.documents).get(&snapshot.uri).map(|doc| doc.version);
        if current != Some(snapshot.doc.version) {
            return Err(RunError::Stale(format!(
                "Aniate {slug}: {} changed while the tool ran, so its result was not applied; run it again",
                Self::display_name(&snapshot.uri)
            )));
        }
        Ok(Finished { tool, snapshot, text, result: done.result, rejected: done.result_rejected })
    }

    async fn ipc_failure(&self, slug: &str, error: IpcError) -> RunError {
        match error.code {
            IpcErrorCode::Cancelled => return RunError::Cancelled,
            // The daemon went away mid-run: the next run connects (and starts one) again.
            IpcErrorCode::Internal => self.state.daemon.forget().await,
            _ => {}
        }
        let mut message = format!("Aniate {slug}: {}", error.message);
        if let Some(hint) = error.hint.filter(|hint| !hint.is_empty()) {
            message.push_str(" — ");
            message.push_str(&hint);
        }
        RunError::Failed(message)
    }

    async fn tell(&self, error: RunError) {
        match error {
            RunError::Failed(message) => self.client.show_message(MessageType::ERROR, message).await,
            RunError::Warning(message) | RunError::Stale(message) => {
                self.client.show_message(MessageType::WARNING, message).await;
            }
            RunError::Cancelled => tracing::debug!("run cancelled"),
        }
    }

    /// Why a `code` answer gives no edit at all, for the user: the server did not take it as a
    /// corrected file; `None` when it did.
    fn rejected_message(finished: &Finished) -> Option<String> {
        if matches!(finished.result, Some(ToolResult::Code(_))) {
            return None;
        }
        let why = finished.rejected.map_or("the answer has no corrected file", ResultRejected::describe);
        let code = finished.rejected.map_or(String::new(), |rejected| format!(" ({rejected})"));
        Some(format!(
            "Aniate {}: {} was left unchanged: {why}{code}",
            finished.tool.slug,
            Self::display_name(&finished.snapshot.uri)
        ))
    }

    /// The edit that applies a `code` answer; `None` when it changes nothing, or when the answer
    /// is not a corrected file ([`Self::rejected_message`] says so).
    fn code_edit(&self, finished: &Finished) -> Option<WorkspaceEdit> {
        let Some(ToolResult::Code(corrected)) = &finished.result else {
            return None;
        };
        let corrected = corrected.clone();
        let snapshot = &finished.snapshot;
        let old = &snapshot.doc.text[snapshot.scope.clone()];
        let corrected = match_final_newline(old, corrected);
        let edits = edits::minimal_edits(&snapshot.doc, snapshot.scope.clone(), &corrected);
        if edits.is_empty() {
            return None;
        }
        let uri = snapshot.uri.clone();
        Some(if self.caps().document_changes {
            WorkspaceEdit {
                document_changes: Some(DocumentChanges::Edits(vec![TextDocumentEdit {
                    text_document: OptionalVersionedTextDocumentIdentifier { uri, version: Some(snapshot.doc.version) },
                    edits: edits.into_iter().map(OneOf::Left).collect(),
                }])),
                ..WorkspaceEdit::default()
            }
        } else {
            WorkspaceEdit { changes: Some([(uri, edits)].into_iter().collect()), ..WorkspaceEdit::default() }
        })
    }

    /// Acts on a finished run by its tool's output kind.
    async fn apply(&self, finished: Finished) {
        let slug = finished.tool.slug.clone();
        match finished.tool.output {
            OutputKind::Code if Self::rejected_message(&finished).is_some() => {
                let message = Self::rejected_message(&finished).unwrap_or_default();
                self.client.show_message(MessageType::WARNING, message).await;
            }
            OutputKind::Code => match self.code_edit(&finished) {
                Some(edit) => match self.client.apply_edit(edit).await {
                    Ok(response) if response.applied => {}
                    Ok(response) => {
                        let reason = response.failure_reason.unwrap_or_else(|| "no reason given".to_owned());
                        let message = format!("Aniate {slug}: the editor did not apply the change ({reason})");
                        self.client.show_message(MessageType::WARNING, message).await;
                    }
                    Err(err) => {
                        let message = format!("Aniate {slug}: the editor did not apply the change ({err})");
                        self.client.show_message(MessageType::WARNING, message).await;
                    }
                },
                None => self.no_changes(&slug).await,
            },
            OutputKind::Findings => self.publish_findings(finished).await,
            OutputKind::Text => self.present_text(finished).await,
            OutputKind::Command => {
                let message = format!("Aniate: `{slug}` proposes shell commands; run it in a terminal");
                self.client.show_message(MessageType::ERROR, message).await;
            }
        }
    }

    async fn no_changes(&self, slug: &str) {
        self.client.show_message(MessageType::INFO, format!("Aniate {slug}: no changes")).await;
    }

    async fn publish_findings(&self, finished: Finished) {
        let findings = match &finished.result {
            Some(ToolResult::Findings(findings)) => findings.clone(),
            _ => Vec::new(),
        };
        let snapshot = &finished.snapshot;
        let new = findings::to_diagnostics(&snapshot.doc, snapshot.scope.clone(), &finished.tool.slug, &findings);
        let lines = (!snapshot.whole).then(|| {
            let range = snapshot.doc.range_of(snapshot.scope.clone());
            // A selection of whole lines ends at the start of the next one, which it leaves alone.
            let last = if range.end.character == 0 && range.end.line > range.start.line {
                range.end.line - 1
            } else {
                range.end.line
            };
            (range.start.line, last)
        });
        let n_findings = new.len();
        {
            let mut stored = lock(&self.state.findings);
            findings::merge(stored.entry(snapshot.uri.clone()).or_default(), lines, new);
        }
        self.publish(&snapshot.uri).await;
        if n_findings == 0 {
            let message = format!("Aniate {}: no findings", finished.tool.slug);
            self.client.show_message(MessageType::INFO, message).await;
        }
    }

    /// Sends the stored diagnostics of `uri`.
    async fn publish(&self, uri: &Uri) {
        let diagnostics: Vec<_> = lock(&self.state.findings)
            .get(uri)
            .map(|stored| stored.iter().map(|finding| finding.diagnostic.clone()).collect())
            .unwrap_or_default();
        let version = lock(&self.state.documents).get(uri).map(|doc| doc.version);
        self.client.publish_diagnostics(uri.clone(), diagnostics, version).await;
    }

    async fn present_text(&self, finished: Finished) {
        let title = actions::title(&finished.tool);
        let caps = self.caps();
        match textout::present(&title, &finished.text, caps.show_document) {
            Presentation::Message(message) => self.client.show_message(MessageType::INFO, message).await,
            Presentation::Document(markdown) => {
                let shown = match textout::write_markdown(&finished.tool.slug, &markdown) {
                    Ok(path) => {
                        lock(&self.state.temp_files).push(path.clone());
                        match Uri::from_file_path(&path) {
                            Some(uri) => {
                                let params = ShowDocumentParams {
                                    uri,
                                    external: Some(false),
                                    take_focus: Some(true),
                                    selection: None,
                                };
                                self.client.show_document(params).await.unwrap_or(false)
                            }
                            None => false,
                        }
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, "cannot write the answer to a temp file");
                        false
                    }
                };
                if !shown {
                    let Presentation::Message(message) = textout::present(&title, &finished.text, false) else {
                        return;
                    };
                    self.client.show_message(MessageType::INFO, message).await;
                }
            }
        }
    }

    /// Runs `review` on a saved document and publishes its findings; a newer save replaces a
    /// run still going.
    fn review_on_save(&self, uri: Uri) {
        if self.state.tools.get("review").is_none_or(|tool| tool.output != OutputKind::Findings) {
            tracing::debug!("reviewOnSave is on, but `review` is not installed");
            return;
        }
        let backend = self.clone();
        let data = RunData { uri: uri.clone(), tool: "review".to_owned(), range: None, version: None };
        let task = tokio::spawn(async move {
            match backend.run(&data, None).await {
                Ok(finished) => backend.publish_findings(finished).await,
                // Typing on after a save is normal; the next save reviews again.
                Err(RunError::Stale(message)) => tracing::debug!("{message}"),
                Err(error) => backend.tell(error).await,
            }
        });
        if let Some(previous) = lock(&self.state.save_runs).insert(uri, task.abort_handle()) {
            previous.abort();
        }
    }
}

/// A progress report: how much has arrived, and for text, the latest words.
fn report_message(slug: &str, output: OutputKind, text: &str) -> String {
    let received = format!("{slug}: {} received", format_size(text.len()));
    if output != OutputKind::Text {
        return received;
    }
    let words = text.split_whitespace().collect::<Vec<_>>();
    let tail = words[words.len().saturating_sub(8)..].join(" ");
    if tail.is_empty() { received } else { format!("{received} · …{tail}") }
}

/// Models add or drop a final line break; a selection that did not end with one must not gain
/// one (nor lose one that it had).
fn match_final_newline(old: &str, mut new: String) -> String {
    let old_has = old.ends_with('\n');
    if !old_has {
        while new.ends_with('\n') {
            new.pop();
            if new.ends_with('\r') {
                new.pop();
            }
        }
    } else if !new.ends_with('\n') && !new.is_empty() {
        new.push_str(if old.ends_with("\r\n") { "\r\n" } else { "\n" });
    }
    new
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        *self.state.caps.write().unwrap_or_else(PoisonError::into_inner) = Caps::from_client(&params.capabilities);
        if let Some(options) = &params.initialization_options {
            self.update_settings(options);
        }
        for warning in self.state.tools.reload() {
            tracing::warn!("{warning}");
        }
        match self.state.tools.watch() {
            Ok(watcher) => *lock(&self.state.watcher) = Some(watcher),
            Err(err) => {
                tracing::warn!(cause = %err, "cannot watch the tools directory; reading it every 2 s");
                self.state.tools.poll();
            }
        }
        let work_done = WorkDoneProgressOptions { work_done_progress: Some(true) };
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::INCREMENTAL),
                    save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                    ..TextDocumentSyncOptions::default()
                })),
                code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
                    code_action_kinds: Some(vec![
                        CodeActionKind::QUICKFIX,
                        CodeActionKind::REFACTOR_REWRITE,
                        CodeActionKind::SOURCE,
                    ]),
                    work_done_progress_options: work_done,
                    resolve_provider: Some(true),
                })),
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: vec![RUN_COMMAND.to_owned()],
                    work_done_progress_options: work_done,
                }),
                ..ServerCapabilities::default()
            },
            server_info: Some(ServerInfo { name: "ant-lsp".to_owned(), version: Some(crate::VERSION.to_owned()) }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        // Connect (starting the daemon if needed) now, so the first run does not wait for it.
        let backend = self.clone();
        tokio::spawn(async move {
            if let Err(error) = backend.state.daemon.client().await {
                tracing::warn!(cause = %error.message, "cannot reach aniated yet");
            }
        });
        if self.caps().configuration {
            self.pull_configuration().await;
        }
    }

    async fn shutdown(&self) -> Result<()> {
        for path in lock(&self.state.temp_files).drain(..) {
            let _ = std::fs::remove_file(path);
        }
        for (_, run) in lock(&self.state.save_runs).drain() {
            run.abort();
        }
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let doc = Document::new(item.text, item.version, item.language_id);
        lock(&self.state.documents).insert(item.uri, doc);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let uri = params.text_document.uri;
        // Applied before the first await: notifications are handled in the order they came.
        let line_changes = {
            let mut documents = lock(&self.state.documents);
            let Some(doc) = documents.get_mut(&uri) else {
                tracing::warn!(uri = uri.as_str(), "didChange for a document that is not open");
                return;
            };
            doc.apply_changes(&params.content_changes, params.text_document.version)
        };
        let moved = {
            let mut stored = lock(&self.state.findings);
            match stored.get_mut(&uri) {
                Some(stored) => {
                    let mut moved = false;
                    for change in &line_changes {
                        moved |= findings::follow_change(stored, change);
                    }
                    moved
                }
                None => false,
            }
        };
        if moved {
            self.publish(&uri).await;
        }
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        if self.settings().review_on_save {
            self.review_on_save(params.text_document.uri);
        }
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri;
        lock(&self.state.documents).remove(&uri);
        if let Some(run) = lock(&self.state.save_runs).remove(&uri) {
            run.abort();
        }
        let had_findings = lock(&self.state.findings).remove(&uri).is_some_and(|stored| !stored.is_empty());
        lock(&self.state.size_warned).remove(&uri);
        if had_findings {
            self.client.publish_diagnostics(uri, Vec::new(), None).await;
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let settings = &params.settings;
        let pushed = settings.get("aniate").is_some_and(|aniate| !aniate.is_null())
            || settings.as_object().is_some_and(|object| !object.is_empty());
        if pushed {
            self.update_settings(settings);
        } else if self.caps().configuration {
            self.pull_configuration().await;
        }
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let uri = params.text_document.uri;
        let only = params.context.only.as_deref();
        let settings = self.settings();
        let (version, size) = match lock(&self.state.documents).get(&uri) {
            Some(doc) => (doc.version, doc.text.len()),
            None => return Ok(None),
        };
        let mut response: CodeActionResponse = Vec::new();
        if actions::wanted(&CodeActionKind::QUICKFIX, only)
            && let Some(stored) = lock(&self.state.findings).get(&uri)
        {
            for finding in stored.iter().filter(|finding| findings::touches(&finding.diagnostic.range, &params.range)) {
                if let Some(action) = findings::quick_fix(&uri, finding) {
                    response.push(CodeActionOrCommand::CodeAction(action));
                }
            }
        }
        if size > settings.max_file_size {
            let automatic = params.context.trigger_kind == Some(CodeActionTriggerKind::AUTOMATIC);
            if !automatic && lock(&self.state.size_warned).insert(uri.clone(), version) != Some(version) {
                let message = Self::too_big_message(&uri, size, settings.max_file_size);
                self.client.show_message(MessageType::INFO, message).await;
            }
            return Ok(Some(response));
        }
        let selection = (params.range.start != params.range.end).then_some(params.range);
        let resolve_edit = self.caps().resolve_edit;
        for tool in self.state.tools.list().iter() {
            if !actions::offerable(tool) || !settings.offers(&tool.slug) || !actions::wanted(&actions::kind(tool), only)
            {
                continue;
            }
            let data = RunData { uri: uri.clone(), tool: tool.slug.clone(), range: selection, version: Some(version) };
            response.push(CodeActionOrCommand::CodeAction(actions::tool_action(tool, data, resolve_edit)));
        }
        Ok(Some(response))
    }

    async fn code_action_resolve(&self, mut action: CodeAction) -> Result<CodeAction> {
        if action.edit.is_some() {
            return Ok(action);
        }
        let Some(data) = action.data.clone().and_then(|data| serde_json::from_value::<RunData>(data).ok()) else {
            return Ok(action);
        };
        // Only `code` tools are resolved into an edit; the others run through their command.
        if self.state.tools.get(&data.tool).is_some_and(|tool| tool.output != OutputKind::Code) {
            return Ok(action);
        }
        match self.run(&data, None).await {
            Ok(finished) if Self::rejected_message(&finished).is_some() => {
                let message = Self::rejected_message(&finished).unwrap_or_default();
                self.client.show_message(MessageType::WARNING, message).await;
            }
            Ok(finished) => match self.code_edit(&finished) {
                Some(edit) => action.edit = Some(edit),
                None => self.no_changes(&data.tool).await,
            },
            Err(error) => self.tell(error).await,
        }
        Ok(action)
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        if params.command != RUN_COMMAND {
            return Err(Error::invalid_params(format!("unknown command `{}`", params.command)));
        }
        let data = params
            .arguments
            .first()
            .cloned()
            .and_then(|argument| serde_json::from_value::<RunData>(argument).ok())
            .ok_or_else(|| {
                Error::invalid_params(format!("`{RUN_COMMAND}` takes one argument: {{uri, tool, range?}}"))
            })?;
        match self.run(&data, params.work_done_progress_params.work_done_token).await {
            Ok(finished) => self.apply(finished).await,
            Err(error) => self.tell(error).await,
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_newlines_follow_the_original() {
        assert_eq!(match_final_newline("a + b", "a - b\n".to_owned()), "a - b");
        assert_eq!(match_final_newline("a + b", "a - b\r\n\n".to_owned()), "a - b");
        assert_eq!(match_final_newline("x\n", "y".to_owned()), "y\n");
        assert_eq!(match_final_newline("x\r\n", "y".to_owned()), "y\r\n");
        assert_eq!(match_final_newline("x\n", "y\n".to_owned()), "y\n");
        assert_eq!(match_final_newline("x\n", String::new()), "");
    }

    #[test]
    fn reports_say_how_much_arrived() {
        assert_eq!(report_message("fix", OutputKind::Code, &"x".repeat(1229)), "fix: 1.2 KiB received");
        assert_eq!(
            report_message("what", OutputKind::Text, "A monad is a monoid in the category of endofunctors, they say"),
            "what: 61 B received · …monoid in the category of endofunctors, they say"
        );
    }
}
