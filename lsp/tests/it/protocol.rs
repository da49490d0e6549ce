//! `ant-lsp` over LSP, end to end: the real binary on stdio, a real `aniated` it starts, a
//! real `ant-server`, and the fake LLM.

use std::time::Duration;

use aniate_testkit::{FakeLlmConfig, Outcome, Rule};
use serde_json::{Value, json};
use tower_lsp_server::lsp_types::{
    CodeAction, CodeActionContext, CodeActionKind, CodeActionOrCommand, CodeActionParams, Diagnostic,
    DiagnosticSeverity, DidChangeConfigurationParams, DidChangeTextDocumentParams, DidOpenTextDocumentParams,
    DidSaveTextDocumentParams, ExecuteCommandParams, PartialResultParams, Position, PublishDiagnosticsParams, Range,
    TextDocumentContentChangeEvent, TextDocumentIdentifier, TextDocumentItem, Uri, VersionedTextDocumentIdentifier,
    WorkDoneProgressParams,
    notification::{DidChangeConfiguration, DidChangeTextDocument, DidOpenTextDocument, DidSaveTextDocument},
    request::{CodeActionRequest, CodeActionResolveRequest, ExecuteCommand},
};

use crate::{
    client::{LspClient, apply_edits, edits_for, full_capabilities},
    harness::{Machine, ant_lsp, now_ms},
};

const FIX_ME: &str = "# fix-me\ndef add(a, b):\n    return a - b\n\n\nprint(add(2, 3))\n";
const FIXED: &str = "# fix-me\ndef add(a, b):\n    return a + b\n\n\nprint(add(2, 3))\n";

const REVIEW_ME: &str = "# review-me\ndef div(a, b):\n    return a / b\n\ntotal = div(1, 0)\n";
const REVIEW_REPLY: &str = concat!(
    "{\"line\": 3, \"severity\": \"error\", \"message\": \"divides by zero when b is 0\", ",
    "\"suggestion\": \"    return a / b if b else 0\"}\n",
    "{\"line\": 5, \"severity\": \"warning\", \"message\": \"always divides by zero\"}\n",
    "{\"line\": 1, \"end_line\": 2, \"severity\": \"info\", \"message\": \"a header comment\"}\n",
    "{\"line\": 2, \"severity\": \"hint\", \"message\": \"add a docstring\"}\n",
);

fn rules() -> Vec<Rule> {
    let rule = |when: &str, reply: &str| Rule { when_contains: when.to_owned(), reply: reply.to_owned() };
    vec![
        rule("fix-me", &format!("```python\n{FIXED}```\n")),
        rule("review-me", REVIEW_REPLY),
        // A selection without the markers.
        rule("return a - b", "    return a + b\n"),
        rule("total = div", "{\"line\": 1, \"severity\": \"warning\", \"message\": \"selection finding\"}\n"),
        rule("explain-me", &"It adds two numbers.\n\nIt is called with 2 and 3, and prints 5.\n".repeat(3)),
        rule("short-me", "It prints hello."),
    ]
}

fn fake() -> FakeLlmConfig {
    FakeLlmConfig { rules: rules(), ..Default::default() }
}

/// A fake that answers slowly: about 4 s for a fix.
fn slow_fake() -> FakeLlmConfig {
    FakeLlmConfig { rules: rules(), chunk_chars: 2, chunk_delay_ms: 100, ..Default::default() }
}

async fn open(client: &LspClient, uri: &Uri, text: &str, language: &str) {
    client
        .notify::<DidOpenTextDocument>(DidOpenTextDocumentParams {
            text_document: TextDocumentItem {
                uri: uri.clone(),
                language_id: language.to_owned(),
                version: 1,
                text: text.to_owned(),
            },
        })
        .await;
}

/// A logged-in machine with `tools` installed, `ant-lsp` started on it, and the Python file
/// `name` holding `text` open in it.
async fn ready(fake: FakeLlmConfig, tools: &[&str], name: &str, text: &str) -> (Machine, LspClient, Uri) {
    let machine = Machine::start(fake).await;
    machine.login().await;
    machine.install(tools).await;
    let client = machine.lsp().await;
    let (_, uri) = machine.file(name, text);
    open(&client, &uri, text, "python").await;
    (machine, client, uri)
}

fn range(start: (u32, u32), end: (u32, u32)) -> Range {
    Range { start: Position::new(start.0, start.1), end: Position::new(end.0, end.1) }
}

fn action_params(uri: &Uri, range: Range, only: Option<Vec<CodeActionKind>>) -> CodeActionParams {
    CodeActionParams {
        text_document: TextDocumentIdentifier { uri: uri.clone() },
        range,
        context: CodeActionContext { diagnostics: Vec::new(), only, trigger_kind: None },
        work_done_progress_params: WorkDoneProgressParams::default(),
        partial_result_params: PartialResultParams::default(),
    }
}

async fn actions(client: &LspClient, uri: &Uri, range: Range) -> Vec<CodeAction> {
    let response = client.request::<CodeActionRequest>(action_params(uri, range, None)).await.expect("codeAction");
    response
        .unwrap_or_default()
        .into_iter()
        .filter_map(|action| match action {
            CodeActionOrCommand::CodeAction(action) => Some(action),
            CodeActionOrCommand::Command(_) => None,
        })
        .collect()
}

fn titles(actions: &[CodeAction]) -> Vec<String> {
    actions.iter().map(|action| action.title.clone()).collect()
}

fn find(actions: &[CodeAction], title: &str) -> CodeAction {
    actions.iter().find(|a| a.title == title).cloned().unwrap_or_else(|| panic!("no {title:?} in {actions:#?}"))
}

/// Runs an action's command through `workspace/executeCommand`.
async fn execute(client: &LspClient, action: &CodeAction) -> Result<Option<Value>, Value> {
    let command = action.command.clone().expect("the action carries its command");
    client
        .request::<ExecuteCommand>(ExecuteCommandParams {
            command: command.command,
            arguments: command.arguments.unwrap_or_default(),
            work_done_progress_params: WorkDoneProgressParams::default(),
        })
        .await
}

async fn diagnostics(client: &LspClient, uri: &Uri, pred: impl Fn(&[Diagnostic]) -> bool) -> Vec<Diagnostic> {
    let message = client
        .wait_notification("textDocument/publishDiagnostics", Duration::from_secs(30), |params| {
            let params: PublishDiagnosticsParams = serde_json::from_value(params.clone()).expect("diagnostics");
            &params.uri == uri && pred(&params.diagnostics)
        })
        .await
        .expect("the diagnostics came");
    serde_json::from_value::<PublishDiagnosticsParams>(message.params).expect("diagnostics").diagnostics
}

/// The first `$/progress` report (or, with `kind` "begin"/"end", that event).
async fn progress(client: &LspClient, kind: &str) -> Value {
    client
        .wait_notification("$/progress", Duration::from_secs(30), |params| params["value"]["kind"] == kind)
        .await
        .unwrap_or_else(|| panic!("no progress {kind}"))
        .params
}

#[tokio::test]
async fn version_and_help_answer_at_once() {
    let started = std::time::Instant::now();
    let output = std::process::Command::new(ant_lsp()).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("ant-lsp {}\n", env!("CARGO_PKG_VERSION")));
    let help = std::process::Command::new(ant_lsp()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["Neovim", "Helix", "eglot", "reviewOnSave", "maxFileSize", "ant login"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let bad = std::process::Command::new(ant_lsp()).arg("--nope").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_advertises_actions_commands_and_progress() {
    let machine = Machine::start(fake()).await;
    let client = LspClient::spawn(
        std::path::Path::new(&ant_lsp()),
        &machine.env,
        &machine.work,
        &machine.stack.dir.path().join("ant-lsp.log"),
    );
    let result = client.initialize(full_capabilities(), None).await;
    let caps = serde_json::to_value(&result.capabilities).unwrap();
    assert_eq!(caps["textDocumentSync"]["change"], 2, "incremental sync: {caps}");
    assert_eq!(caps["textDocumentSync"]["openClose"], true);
    assert_eq!(caps["codeActionProvider"]["resolveProvider"], true, "{caps}");
    assert_eq!(caps["codeActionProvider"]["workDoneProgress"], true, "{caps}");
    assert_eq!(caps["executeCommandProvider"]["commands"], json!(["aniate.run"]));
    assert_eq!(caps["executeCommandProvider"]["workDoneProgress"], true);
    assert_eq!(result.server_info.unwrap().name, "ant-lsp");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_actions_list_installed_tools_without_network() {
    let machine = Machine::start(fake()).await;
    machine.login().await;
    let admin = machine.stack.admin_token().await.unwrap();
    machine
        .stack
        .push_tool(
            &admin,
            json!({"slug": "docstrings", "name": "Docstrings", "description": "Adds docstrings",
                   "system_prompt": "Add docstrings.", "output": "code", "requires_file": true}),
        )
        .await
        .unwrap();
    machine.install(&["fix", "review", "what", "shell", "docstrings"]).await;
    let client = machine.lsp().await;
    let (_, uri) = machine.file("calc.py", FIX_ME);
    open(&client, &uri, FIX_ME, "python").await;

    let cursor = range((2, 4), (2, 4));
    let listed = actions(&client, &uri, cursor).await;
    // Sorted by slug; `shell` proposes commands, which is not for an editor.
    assert_eq!(
        titles(&listed),
        ["Aniate: Docstrings", "Aniate: fix", "Aniate: review", "Aniate: explain (what)"],
        "{listed:#?}"
    );
    let fix = find(&listed, "Aniate: fix");
    assert_eq!(fix.kind, Some(CodeActionKind::from("quickfix.aniate.fix")));
    assert!(fix.edit.is_none() && fix.command.is_none(), "the edit is left to resolve: {fix:?}");
    assert_eq!(fix.data.as_ref().unwrap()["range"], Value::Null, "a cursor means the whole document");
    assert!(find(&listed, "Aniate: review").command.is_some());

    // On a selection, the actions carry it.
    let selected = actions(&client, &uri, range((1, 0), (3, 0))).await;
    let data = find(&selected, "Aniate: fix").data.unwrap();
    assert_eq!(data["range"], json!({"start": {"line": 1, "character": 0}, "end": {"line": 3, "character": 0}}));

    // `only` filters by kind.
    let quickfixes = client
        .request::<CodeActionRequest>(action_params(&uri, cursor, Some(vec![CodeActionKind::QUICKFIX])))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quickfixes.len(), 1, "{quickfixes:?}");

    // The `tools` setting picks what is offered.
    client
        .notify::<DidChangeConfiguration>(DidChangeConfigurationParams {
            settings: json!({"aniate": {"tools": ["review"]}}),
        })
        .await;
    assert_eq!(titles(&actions(&client, &uri, cursor).await), ["Aniate: review"]);

    // A hundred listings later, nothing reached the model.
    for _ in 0..100 {
        actions(&client, &uri, cursor).await;
    }
    assert!(machine.stack.fake.requests().is_empty(), "{:?}", machine.stack.fake.requests());
    // And the daemon never sent a tool request to the server.
    assert!(!machine.stack.server_log().contains("/tool/"), "{}", machine.stack.server_log());
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_fix_gives_the_smallest_edit() {
    let (machine, client, uri) = ready(fake(), &["fix"], "calc.py", FIX_ME).await;

    let fix = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
    let resolved = client.request::<CodeActionResolveRequest>(fix).await.expect("resolve");
    let edit = resolved.edit.expect("the resolved action has an edit");
    let edits = edits_for(&edit, &uri);
    assert_eq!(apply_edits(FIX_ME, &edits), FIXED);
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert_eq!(edits[0].range, range((2, 13), (2, 14)), "only the operator changes: {edits:?}");
    assert_eq!(edits[0].new_text, "+");
    // Progress: begin, a report of what arrived, end.
    assert_eq!(progress(&client, "begin").await["value"]["title"], "Aniate: fix");
    let report = progress(&client, "report").await;
    assert!(report["value"]["message"].as_str().unwrap().starts_with("fix: "), "{report}");
    assert!(report["value"]["message"].as_str().unwrap().contains("received"), "{report}");
    progress(&client, "end").await;
    let request = &machine.stack.fake.requests()[0];
    assert!(request.messages[1].content.contains("name=\"calc.py\""), "{:?}", request.messages[1]);
    assert!(request.messages[1].content.contains("language=\"python\""), "{:?}", request.messages[1]);

    // Scoped to a selection: the tool gets the selected text, the edit stays inside it.
    let selection = range((2, 0), (2, 16));
    let fix = find(&actions(&client, &uri, selection).await, "Aniate: fix");
    let resolved = client.request::<CodeActionResolveRequest>(fix).await.expect("resolve");
    let edits = edits_for(&resolved.edit.expect("an edit"), &uri);
    assert_eq!(apply_edits(FIX_ME, &edits), FIXED);
    assert_eq!(edits[0].range, range((2, 13), (2, 14)));
    let last = machine.stack.fake.requests().last().cloned().unwrap();
    assert!(last.messages[1].content.contains(">\n    return a - b\n</file>"), "{:?}", last.messages[1]);

    // Through the command instead: the server applies the edit with workspace/applyEdit.
    let client_without_resolve = {
        let mut caps = full_capabilities();
        caps.text_document.as_mut().unwrap().code_action.as_mut().unwrap().resolve_support = None;
        machine.lsp_with(caps, None).await
    };
    open(&client_without_resolve, &uri, FIX_ME, "python").await;
    let fix = find(&actions(&client_without_resolve, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
    assert_eq!(execute(&client_without_resolve, &fix).await.unwrap(), None);
    let applied = client_without_resolve
        .wait_server_request("workspace/applyEdit", Duration::from_secs(10), |_| true)
        .await
        .expect("workspace/applyEdit");
    let edit: tower_lsp_server::lsp_types::ApplyWorkspaceEditParams = serde_json::from_value(applied.params).unwrap();
    let edits = edits_for(&edit.edit, &uri);
    assert_eq!(apply_edits(FIX_ME, &edits), FIXED);
    client_without_resolve.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_publishes_diagnostics_with_quick_fixes() {
    let (machine, client, uri) = ready(fake(), &["review"], "div.py", REVIEW_ME).await;

    let review = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: review");
    assert_eq!(execute(&client, &review).await.unwrap(), None);
    let published = diagnostics(&client, &uri, |d| !d.is_empty()).await;
    let summary: Vec<(Range, DiagnosticSeverity, &str)> =
        published.iter().map(|d| (d.range, d.severity.unwrap(), d.message.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (range((0, 0), (1, 14)), DiagnosticSeverity::INFORMATION, "a header comment"),
            (range((1, 0), (1, 14)), DiagnosticSeverity::HINT, "add a docstring"),
            (range((2, 0), (2, 16)), DiagnosticSeverity::ERROR, "divides by zero when b is 0"),
            (range((4, 0), (4, 17)), DiagnosticSeverity::WARNING, "always divides by zero"),
        ]
    );
    assert!(published.iter().all(|d| d.source.as_deref() == Some("aniate")));

    // The finding with a suggestion has a quick fix, answered locally.
    let n_requests = machine.stack.fake.requests().len();
    let here = actions(&client, &uri, range((2, 6), (2, 6))).await;
    let quick_fix = find(&here, "Aniate: apply suggestion (divides by zero when b is 0)");
    assert_eq!(quick_fix.kind, Some(CodeActionKind::QUICKFIX));
    let edits = edits_for(quick_fix.edit.as_ref().unwrap(), &uri);
    assert_eq!(
        apply_edits(REVIEW_ME, &edits),
        "# review-me\ndef div(a, b):\n    return a / b if b else 0\n\ntotal = div(1, 0)\n"
    );
    assert_eq!(machine.stack.fake.requests().len(), n_requests);
    // Findings without a suggestion have none.
    assert!(!titles(&actions(&client, &uri, range((4, 0), (4, 0))).await).iter().any(|t| t.contains("suggestion")));

    // A review of a selection: its line numbers map back, and only its lines are replaced.
    let selected = find(&actions(&client, &uri, range((4, 0), (4, 17))).await, "Aniate: review");
    execute(&client, &selected).await.unwrap();
    let published = diagnostics(&client, &uri, |d| d.iter().any(|d| d.message == "selection finding")).await;
    let messages: Vec<(u32, &str)> = published.iter().map(|d| (d.range.start.line, d.message.as_str())).collect();
    assert_eq!(
        messages,
        [(0, "a header comment"), (1, "add a docstring"), (2, "divides by zero when b is 0"), (4, "selection finding")]
    );

    // Lines inserted above move the diagnostics along.
    client
        .notify::<DidChangeTextDocument>(DidChangeTextDocumentParams {
            text_document: VersionedTextDocumentIdentifier { uri: uri.clone(), version: 2 },
            content_changes: vec![TextDocumentContentChangeEvent {
                range: Some(range((3, 0), (3, 0))),
                range_length: None,
                text: "\n\n".to_owned(),
            }],
        })
        .await;
    let moved = diagnostics(&client, &uri, |d| d.iter().any(|d| d.range.start.line == 6)).await;
    assert_eq!(moved.len(), 4);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_the_run_end_to_end() {
    let (machine, client, uri) = ready(slow_fake(), &["fix"], "calc.py", FIX_ME).await;
    let fix = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
    let fake = &machine.stack.fake;

    // $/cancelRequest on a resolve.
    let (id, response) = client.send_request("codeAction/resolve", serde_json::to_value(&fix).unwrap()).await;
    progress(&client, "report").await;
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.requests()[0].outcome, Outcome::InProgress);
    let cancelled_at = now_ms();
    client.notify_raw("$/cancelRequest", json!({"id": id})).await;
    let (requests, cancelled) =
        fake.wait_until(Duration::from_secs(2), |r| r.first().is_some_and(|r| r.outcome == Outcome::Cancelled)).await;
    assert!(cancelled, "{requests:?}");
    let ended = requests[0].ended_at_ms.unwrap();
    assert!(ended.saturating_sub(cancelled_at) <= 100, "cancelled {} ms after the request", ended - cancelled_at);
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
    assert_eq!(response["error"]["code"], -32800, "{response}");
    // Its progress ends.
    client
        .wait_notification("$/progress", Duration::from_secs(5), |p| p["value"]["kind"] == "end")
        .await
        .expect("the progress ended");

    // Cancelling the progress of an executed command does the same.
    let mut caps = full_capabilities();
    caps.text_document.as_mut().unwrap().code_action.as_mut().unwrap().resolve_support = None;
    let commands = machine.lsp_with(caps, None).await;
    open(&commands, &uri, FIX_ME, "python").await;
    let fix = find(&actions(&commands, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
    let command = fix.command.unwrap();
    let (_, response) = commands
        .send_request("workspace/executeCommand", json!({"command": command.command, "arguments": command.arguments}))
        .await;
    let report = progress(&commands, "report").await;
    let cancelled_at = now_ms();
    commands.notify_raw("window/workDoneProgress/cancel", json!({"token": report["token"]})).await;
    let (requests, cancelled) =
        fake.wait_until(Duration::from_secs(2), |r| r.len() == 2 && r[1].outcome == Outcome::Cancelled).await;
    assert!(cancelled, "{requests:?}");
    let ended = requests[1].ended_at_ms.unwrap();
    assert!(ended.saturating_sub(cancelled_at) <= 100, "cancelled {} ms after the request", ended - cancelled_at);
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
    assert_eq!(response["result"], Value::Null, "{response}");
    assert!(commands.server_requests("workspace/applyEdit").is_empty());
    assert!(commands.messages().is_empty(), "a cancel is not an error: {:?}", commands.messages());
    commands.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_result_is_not_applied() {
    let (_machine, client, uri) = ready(slow_fake(), &["fix"], "calc.py", FIX_ME).await;
    let fix = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
    let (_, response) = client.send_request("codeAction/resolve", serde_json::to_value(&fix).unwrap()).await;
    progress(&client, "report").await;
    // The user types while the tool runs.
    client
        .notify::<DidChangeTextDocument>(DidChangeTextDocumentParams {
            text_document: VersionedTextDocumentIdentifier { uri: uri.clone(), version: 2 },
            content_changes: vec![TextDocumentContentChangeEvent {
                range: Some(range((6, 0), (6, 0))),
                range_length: None,
                text: "print('more')\n".to_owned(),
            }],
        })
        .await;
    let response = tokio::time::timeout(Duration::from_secs(30), response).await.unwrap().unwrap();
    let resolved: CodeAction = serde_json::from_value(response["result"].clone()).expect("a code action");
    assert!(resolved.edit.is_none(), "a stale edit was returned: {resolved:?}");
    let warning = client
        .wait_notification("window/showMessage", Duration::from_secs(5), |p| p["type"] == 2)
        .await
        .expect("a warning");
    assert!(warning.params["message"].as_str().unwrap().contains("changed while the tool ran"), "{warning:?}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_tools_appear_without_a_restart() {
    let machine = Machine::start(fake()).await;
    machine.install(&["fix"]).await;
    let client = machine.lsp().await;
    let (_, uri) = machine.file("calc.py", FIX_ME);
    open(&client, &uri, FIX_ME, "python").await;
    let cursor = range((0, 0), (0, 0));
    assert_eq!(titles(&actions(&client, &uri, cursor).await), ["Aniate: fix"]);

    machine.install(&["what"]).await;
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = titles(&actions(&client, &uri, cursor).await);
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, ["Aniate: fix", "Aniate: explain (what)"]);

    machine.ant(&["uninstall", "fix"]).await;
    for _ in 0..100 {
        listed = titles(&actions(&client, &uri, cursor).await);
        if listed.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, ["Aniate: explain (what)"]);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_told_and_the_server_carries_on() {
    let machine = Machine::start(fake()).await;
    // Installed, but never logged in.
    machine.install(&["fix", "review"]).await;
    let client = machine.lsp().await;
    let (_, uri) = machine.file("calc.py", FIX_ME);
    open(&client, &uri, FIX_ME, "python").await;
    let listed = actions(&client, &uri, range((0, 0), (0, 0))).await;
    let resolved = client.request::<CodeActionResolveRequest>(find(&listed, "Aniate: fix")).await.expect("resolve");
    assert!(resolved.edit.is_none());
    let error = client
        .wait_notification("window/showMessage", Duration::from_secs(10), |p| p["type"] == 1)
        .await
        .expect("an error message");
    let message = error.params["message"].as_str().unwrap();
    assert!(message.contains("not logged in") && message.contains("ant login"), "{message}");

    // Still serving.
    assert_eq!(actions(&client, &uri, range((0, 0), (0, 0))).await.len(), 2);

    // A tool removed behind the editor's back.
    machine.ant(&["uninstall", "review"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    execute(&client, &find(&listed, "Aniate: review")).await.unwrap();
    let error = client
        .wait_notification("window/showMessage", Duration::from_secs(10), |p| {
            p["message"].as_str().unwrap_or_default().contains("not installed")
        })
        .await
        .expect("a not-installed message");
    assert!(error.params["message"].as_str().unwrap().contains("ant install review"), "{error:?}");

    // Bad requests get errors, not a crash.
    let bad = client.request_raw("workspace/executeCommand", json!({"command": "aniate.run", "arguments": [42]})).await;
    assert!(bad.is_err());
    let bad = client.request_raw("workspace/executeCommand", json!({"command": "rm -rf", "arguments": []})).await;
    assert!(bad.is_err());
    let weird = json!({"uri": uri, "tool": "fix", "range": {"start": {"line": 900, "character": 5}, "end": {"line": 0, "character": 99}}});
    client
        .request_raw("workspace/executeCommand", json!({"command": "aniate.run", "arguments": [weird]}))
        .await
        .unwrap();
    client
        .notify_raw(
            "textDocument/didChange",
            json!({"textDocument": {"uri": "file:///nope", "version": 3}, "contentChanges": [{"text": "x"}]}),
        )
        .await;
    assert_eq!(actions(&client, &uri, range((0, 0), (0, 0))).await.len(), 1);

    // The daemon going away is survived: the next run starts it again.
    let pid = machine.daemon_pid().expect("the daemon ant-lsp started");
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = client.messages().len();
    client.request::<CodeActionResolveRequest>(find(&listed, "Aniate: fix")).await.expect("resolve");
    let messages = client.wait_for(Duration::from_secs(15), || {
        let messages = client.messages();
        (messages.len() > before).then_some(messages)
    });
    let messages = messages.await.expect("a message");
    assert!(messages[before..].iter().any(|m| m.contains("ant login")), "{messages:?}");
    assert_ne!(machine.daemon_pid(), Some(pid), "a new daemon");
    client.shutdown().await;
    assert!(!machine.lsp_log().contains("panicked"), "{}", machine.lsp_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_are_shown() {
    let machine = Machine::start(fake()).await;
    machine.login().await;
    machine.install(&["what"]).await;
    let client = machine.lsp().await;
    let text = "# explain-me\nprint(add(2, 3))\n";
    let (_, uri) = machine.file("explain.py", text);
    open(&client, &uri, text, "python").await;
    let what = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: explain (what)");
    execute(&client, &what).await.unwrap();
    // A long answer opens as a Markdown document.
    let shown = client
        .wait_server_request("window/showDocument", Duration::from_secs(10), |_| true)
        .await
        .expect("window/showDocument");
    let doc_uri = shown.params["uri"].as_str().unwrap().to_owned();
    let path = doc_uri.strip_prefix("file://").unwrap();
    let name = std::path::Path::new(path).file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("aniate-what-") && name.ends_with(".md"), "{name}");
    let markdown = std::fs::read_to_string(path).unwrap();
    assert!(markdown.starts_with("# Aniate: explain (what)\n\nIt adds two numbers."), "{markdown}");

    // A short one is a message.
    let short = "print('hello')  # short-me\n";
    let (_, short_uri) = machine.file("short.py", short);
    open(&client, &short_uri, short, "python").await;
    let what = find(&actions(&client, &short_uri, range((0, 0), (0, 0))).await, "Aniate: explain (what)");
    execute(&client, &what).await.unwrap();
    let message = client
        .wait_notification("window/showMessage", Duration::from_secs(10), |p| p["type"] == 3)
        .await
        .expect("a message");
    assert_eq!(message.params["message"], "Aniate: explain (what): It prints hello.");
    client.shutdown().await;
    assert!(!std::path::Path::new(path).exists(), "the temp document is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_on_save_and_the_size_limit() {
    let machine = Machine::start(fake()).await;
    machine.login().await;
    machine.install(&["fix", "review"]).await;
    let client = machine.lsp_with(full_capabilities(), Some(json!({"aniate": {"reviewOnSave": true}}))).await;
    let (_, uri) = machine.file("div.py", REVIEW_ME);
    open(&client, &uri, REVIEW_ME, "python").await;
    client
        .notify::<DidSaveTextDocument>(DidSaveTextDocumentParams {
            text_document: TextDocumentIdentifier { uri: uri.clone() },
            text: None,
        })
        .await;
    let published = diagnostics(&client, &uri, |d| d.len() == 4).await;
    assert_eq!(published[2].severity, Some(DiagnosticSeverity::ERROR));

    // Over maxFileSize: no actions, and a message saying why.
    client
        .notify::<DidChangeConfiguration>(DidChangeConfigurationParams {
            settings: json!({"aniate": {"maxFileSize": 20, "reviewOnSave": false}}),
        })
        .await;
    let listed = actions(&client, &uri, range((0, 0), (0, 0))).await;
    assert!(listed.is_empty(), "{listed:?}");
    let message = client
        .wait_notification("window/showMessage", Duration::from_secs(5), |p| {
            p["message"].as_str().unwrap_or_default().contains("maxFileSize")
        })
        .await
        .expect("the reason");
    assert!(message.params["message"].as_str().unwrap().contains("div.py"), "{message:?}");
    let n_requests = machine.stack.fake.requests().len();
    client
        .notify::<DidSaveTextDocument>(DidSaveTextDocumentParams {
            text_document: TextDocumentIdentifier { uri: uri.clone() },
            text: None,
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(machine.stack.fake.requests().len(), n_requests, "reviewOnSave is off again");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_pulled_from_a_client_that_serves_them() {
    let machine = Machine::start(fake()).await;
    machine.install(&["fix", "review", "what"]).await;
    let mut caps = full_capabilities();
    caps.workspace.as_mut().unwrap().configuration = Some(true);
    let client = LspClient::spawn(
        std::path::Path::new(&ant_lsp()),
        &machine.env,
        &machine.work,
        &machine.stack.dir.path().join("ant-lsp.log"),
    );
    *client.configuration.lock().unwrap() = json!({"tools": ["what"]});
    client.initialize(caps, Some(json!({"aniate": {"tools": ["fix"]}}))).await;
    let (_, uri) = machine.file("calc.py", FIX_ME);
    open(&client, &uri, FIX_ME, "python").await;
    // The initialization options count at once; the settings pulled at `initialized` win.
    client
        .wait_server_request("workspace/configuration", Duration::from_secs(5), |p| {
            p["items"][0]["section"] == "aniate"
        })
        .await
        .expect("a configuration pull");
    eventually_titles(&client, &uri, &["Aniate: explain (what)"]).await;
    // A change notification without settings means: pull again.
    *client.configuration.lock().unwrap() = json!({"tools": ["review", "fix"]});
    client.notify::<DidChangeConfiguration>(DidChangeConfigurationParams { settings: Value::Null }).await;
    eventually_titles(&client, &uri, &["Aniate: fix", "Aniate: review"]).await;
    assert_eq!(client.server_requests("workspace/configuration").len(), 2);
    client.shutdown().await;
}

/// Waits (up to 5 s) until the code actions at the top of `uri` have these titles.
async fn eventually_titles(client: &LspClient, uri: &Uri, expected: &[&str]) {
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = titles(&actions(client, uri, range((0, 0), (0, 0))).await);
        if listed == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, expected);
}

/// Issue 19: an answer that is not a corrected file becomes no edit, through resolve or the
/// command, but a message saying why; the file is untouched; `shell` never runs from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_files_give_no_edit() {
    let (machine, client, uri) = ready(FakeLlmConfig::default(), &["fix", "shell"], "calc.py", FIX_ME).await;
    let path = machine.work.join("calc.py");
    let client_without_resolve = {
        let mut caps = full_capabilities();
        caps.text_document.as_mut().unwrap().code_action.as_mut().unwrap().resolve_support = None;
        machine.lsp_with(caps, None).await
    };
    open(&client_without_resolve, &uri, FIX_ME, "python").await;
    let numbered: String = FIX_ME.lines().enumerate().map(|(idx, line)| format!("{}: {line}\n", idx + 1)).collect();
    let corpus = [
        ("prose", "The code looks correct to me.".to_owned(), "stop", "(not_a_file)"),
        ("a refusal", "I'm sorry, but I can't help with that.".to_owned(), "stop", "(not_a_file)"),
        ("empty", String::new(), "stop", "(empty)"),
        ("cut by the token limit", format!("```python\n{}", &FIXED[..30]), "length", "(truncated)"),
        ("line-number prefixes", numbered, "stop", "(not_a_file)"),
        ("ten times the file", FIXED.repeat(10), "stop", "(not_a_file)"),
        // The model repeats the tool's private prompt: the server's guard stops it (issue 12).
        (
            "the tool's own instructions",
            "{{leak:verbatim}}".to_owned(),
            "stop",
            "repeated the tool's private instructions",
        ),
    ];
    for (name, reply, finish_reason, reason) in corpus {
        machine.stack.fake.update_config(|config| {
            config.default_reply = Some(reply.clone());
            config.finish_reason = finish_reason.to_owned();
        });
        let fix = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
        let before = client.messages().len();
        let resolved = client.request::<CodeActionResolveRequest>(fix).await.expect("resolve");
        assert!(resolved.edit.is_none(), "{name}: {resolved:?}");
        let messages = client
            .wait_for(Duration::from_secs(15), || {
                let messages = client.messages();
                (messages.len() > before).then_some(messages)
            })
            .await
            .expect("a message");
        let told = &messages[before];
        let left_alone = told.contains("calc.py was left unchanged") || reason.contains("private instructions");
        assert!(left_alone && told.contains(reason), "{name}: {told}");

        let fix = find(&actions(&client_without_resolve, &uri, range((0, 0), (0, 0))).await, "Aniate: fix");
        let before = client_without_resolve.messages().len();
        assert_eq!(execute(&client_without_resolve, &fix).await.unwrap(), None);
        let told = client_without_resolve
            .wait_for(Duration::from_secs(15), || client_without_resolve.messages().get(before).cloned())
            .await
            .expect("a message");
        let left_alone = told.contains("calc.py was left unchanged") || reason.contains("private instructions");
        assert!(left_alone && told.contains(reason), "{name}: {told}");
        assert!(client_without_resolve.server_requests("workspace/applyEdit").is_empty(), "{name}: an edit was sent");
        assert_eq!(std::fs::read(&path).unwrap(), FIX_ME.as_bytes(), "{name}");
    }

    // `shell` is not offered, and running it by its command is refused before any model call.
    let listed = titles(&actions(&client, &uri, range((0, 0), (0, 0))).await);
    assert_eq!(listed, ["Aniate: fix"]);
    let n_requests = machine.stack.fake.requests().len();
    let before = client.messages().len();
    let shell = json!({"uri": uri, "tool": "shell"});
    client
        .request_raw("workspace/executeCommand", json!({"command": "aniate.run", "arguments": [shell]}))
        .await
        .unwrap();
    let told =
        client.wait_for(Duration::from_secs(10), || client.messages().get(before).cloned()).await.expect("a message");
    assert!(told.contains("run it in a terminal"), "{told}");
    assert_eq!(machine.stack.fake.requests().len(), n_requests, "shell reached the model");
    client_without_resolve.shutdown().await;
    client.shutdown().await;
}

/// The editor's `ANIATE_SERVER` and `ANIATE_TOKEN` apply to its runs, even through a daemon
/// that `ant` started for another server and account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_s_server_and_token_reach_a_daemon_started_for_another() {
    let other =
        aniate_testkit::stack::Stack::start(aniate_testkit::stack::StackOptions { fake: fake(), ..Default::default() })
            .await
            .unwrap();
    let mut machine = Machine::start(fake()).await;
    machine.login().await;
    machine.install(&["what"]).await;
    let daemon = machine.daemon_pid().expect("ant started a daemon for the first server");
    let token = other.signup("editor@other.test").await.unwrap();
    machine.env.retain(|(key, _)| key != "ANIATE_SERVER" && key != "ANIATE_TOKEN");
    machine.env.push(("ANIATE_SERVER".to_owned(), other.url.clone()));
    machine.env.push(("ANIATE_TOKEN".to_owned(), token));

    let client = machine.lsp().await;
    let text = "print('hello')  # short-me\n";
    let (_, uri) = machine.file("short.py", text);
    open(&client, &uri, text, "python").await;
    let what = find(&actions(&client, &uri, range((0, 0), (0, 0))).await, "Aniate: explain (what)");
    execute(&client, &what).await.unwrap();
    let message = client
        .wait_notification("window/showMessage", Duration::from_secs(10), |p| p["type"] == 3)
        .await
        .expect("a message");
    assert_eq!(message.params["message"], "Aniate: explain (what): It prints hello.");
    assert_eq!(other.fake.requests().len(), 1, "the run went to the editor's server");
    assert!(machine.stack.fake.requests().is_empty(), "not to the daemon's");
    assert_eq!(machine.daemon_pid(), Some(daemon), "through the same daemon");
}
