//! Tool runs: streaming in both formats, output kinds, what reaches the provider, provider
//! faults, and cancellation when the client goes away.

use std::time::{Duration, Instant};

use aniate_proto::{
    event::{Done, StreamEvent},
    tool::{Finding, FindingsAdjusted, ResultRejected, Severity, ToolResult},
};
use aniate_testkit::{FakeLlmConfig, Fault, Outcome, Rule};
use serde_json::json;

use crate::harness::{
    Backend, Harness, ServerOptions, UPSTREAM_KEY, assert_cancelled_within_100ms, assert_error, db_tests, delta_text,
    now_ms, sse_events,
};

db_tests!(
    streams_sse_and_plain_text,
    output_kinds_get_structured_results,
    model_answers_are_checked_before_they_become_results,
    provider_receives_prompt_model_and_key,
    provider_faults_map_to_statuses,
    provider_faults_mid_stream_end_with_error_events,
    dropped_client_cancels_the_provider_request,
    provider_connections_are_reused_but_not_after_a_cancel,
    input_is_checked_before_the_provider,
);

const REPLY: &str = "Recursion is when a function calls itself.\nEach call gets smaller.\n";

fn rule(when: &str, reply: &str) -> Rule {
    Rule { when_contains: when.to_owned(), reply: reply.to_owned() }
}

async fn streams_sse_and_plain_text(backend: Backend) {
    let fake = FakeLlmConfig { rules: vec![rule("recursion", REPLY)], chunk_chars: 5, ..Default::default() };
    let Some(h) = Harness::start_with(backend, ServerOptions { fake, ..Default::default() }).await else { return };
    let token = h.signup("ada@example.test").await;

    let response = h.run(&token, "what", json!({"instructions": "what is recursion?"}), true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let header_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = sse_events(response).await;
    let StreamEvent::Meta(meta) = &events[0] else { panic!("first event is meta: {events:?}") };
    assert_eq!((meta.tool.as_str(), meta.version, meta.model.as_str()), ("what", 1, "llama-3.1-8b-instant"));
    assert_eq!(meta.request_id, header_id);
    assert_eq!(delta_text(&events), REPLY);
    assert!(events.iter().filter(|e| matches!(e, StreamEvent::Delta(_))).count() > 5, "streamed in pieces");
    let StreamEvent::Done(done) = events.last().unwrap() else { panic!("last event is done") };
    assert_eq!(done.finish_reason, "stop");
    assert!(done.result.is_none(), "text tools have no structured result");
    assert!(done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0);
    assert_eq!(h.usage_status(&header_id).await, "ok");

    // Plain text: the answer itself, curl-friendly.
    let response = h.run(&token, "what", json!({"instructions": "what is recursion?"}), false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response.text().await.unwrap(), REPLY);

    // Usage rows carry the provider's token counts, tool, model and status (written just after
    // the answer ends).
    assert_eq!(h.usage_status(&request_id).await, "ok");
    let rows = h
        .query_strings(&format!(
            "SELECT tool, model, status, prompt_tokens, completion_tokens FROM usage WHERE request_id = '{request_id}'"
        ))
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][..3], [Some("what".into()), Some("llama-3.1-8b-instant".into()), Some("ok".into())]);
    assert!(rows[0][3].as_deref().unwrap().parse::<u64>().unwrap() > 0);
}

async fn output_kinds_get_structured_results(backend: Backend) {
    let fix_reply = "```python\ndef add(a, b):\n    return a + b\n```";
    let review_reply = "{\"line\": 2, \"severity\": \"error\", \"message\": \"subtracts instead of adding\", \"suggestion\": \"    return a + b\"}\n\
        Some chatter the parser must skip\n\
        {\"line\": 1, \"end_line\": 2, \"severity\": \"hint\", \"message\": \"add a docstring\"}\n";
    let shell_reply = "{\"command\": \"find . -size +100M\", \"explanation\": \"Lists files over 100 MB.\"}";
    let fake = FakeLlmConfig {
        rules: vec![
            rule("<file name=\"calc.py\" language=\"python\" numbered=\"true\">", review_reply),
            rule("<file name=\"calc.py\" language=\"python\">", fix_reply),
            rule("big files", shell_reply),
        ],
        ..Default::default()
    };
    let Some(h) = Harness::start_with(backend, ServerOptions { fake, ..Default::default() }).await else { return };
    let token = h.signup("kinds@example.test").await;
    let buggy = "def add(a, b):\n    return a - b\n";
    let file = json!({"content": buggy, "filename": "calc.py", "language": "python"});

    let events = sse_events(h.run(&token, "fix", file.clone(), true).await).await;
    let StreamEvent::Done(done) = events.last().unwrap() else { panic!("{events:?}") };
    assert_eq!(done.result, Some(ToolResult::Code("def add(a, b):\n    return a + b\n".into())));

    let events = sse_events(h.run(&token, "review", file.clone(), true).await).await;
    let StreamEvent::Done(done) = events.last().unwrap() else { panic!("{events:?}") };
    assert_eq!(
        done.result,
        Some(ToolResult::Findings(vec![
            Finding {
                line: 2,
                end_line: None,
                severity: Severity::Error,
                message: "subtracts instead of adding".into(),
                suggestion: Some("    return a + b".into()),
            },
            Finding {
                line: 1,
                end_line: Some(2),
                severity: Severity::Hint,
                message: "add a docstring".into(),
                suggestion: None
            },
        ]))
    );

    let events = sse_events(h.run(&token, "shell", json!({"instructions": "find big files"}), true).await).await;
    let StreamEvent::Done(done) = events.last().unwrap() else { panic!("{events:?}") };
    let Some(ToolResult::Command(command)) = &done.result else { panic!("{done:?}") };
    assert_eq!(command.command, "find . -size +100M");
    assert_eq!(command.explanation, "Lists files over 100 MB.");
}

/// The model is untrusted input: a `code` answer that is not a file, or was cut, has no result
/// and says why (the answer is still streamed as text); findings are fitted to the file;
/// destructive commands are marked.
async fn model_answers_are_checked_before_they_become_results(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("checks@example.test").await;
    let buggy = "def add(a, b):\n    return a - b\n";
    let file = json!({"content": buggy, "filename": "calc.py", "language": "python"});
    let done_for = |tool: &'static str, body: serde_json::Value, reply: &str, finish_reason: &str| {
        h.fake.update_config(|config| {
            config.default_reply = Some(reply.to_owned());
            config.finish_reason = finish_reason.to_owned();
        });
        let h = &h;
        let token = token.clone();
        async move {
            let events = sse_events(h.run(&token, tool, body, true).await).await;
            let StreamEvent::Done(done) = events.last().unwrap().clone() else { panic!("{events:?}") };
            (delta_text(&events), done)
        }
    };

    let refusal = "I'm sorry, but I can't help with that.";
    let (text, done) = done_for("fix", file.clone(), refusal, "stop").await;
    assert_eq!(text, refusal, "the answer is still streamed");
    assert_eq!((done.result, done.result_rejected), (None, Some(ResultRejected::NotAFile)));

    let (_, done) = done_for("fix", file.clone(), "```python\ndef add(a, b):\n    return a +", "length").await;
    assert_eq!(done.finish_reason, "length");
    assert_eq!((done.result, done.result_rejected), (None, Some(ResultRejected::Truncated)));

    let (_, done) = done_for("fix", file.clone(), "", "stop").await;
    assert_eq!((done.result, done.result_rejected), (None, Some(ResultRejected::Empty)));

    let (_, done) = done_for("fix", file.clone(), "```python\ndef add(a, b):\n    return a + b\n```", "stop").await;
    assert_eq!(done.result, Some(ToolResult::Code("def add(a, b):\n    return a + b\n".into())));
    assert_eq!(done.result_rejected, None);

    let findings = "{\"line\": 0, \"severity\": \"error\", \"message\": \"zero\"}\n\
        {\"line\": 10000, \"severity\": \"error\", \"message\": \"far away\"}\n\
        {\"line\": -1, \"severity\": \"error\", \"message\": \"negative\"}\n\
        {\"line\": 2, \"severity\": \"blocker\", \"message\": \"subtracts\"}\n\
        {\"line\": 2, \"severity\": \"warning\", \"message\": \"subtracts\"}\n";
    let (_, done) = done_for("review", file.clone(), findings, "stop").await;
    let Some(ToolResult::Findings(kept)) = &done.result else { panic!("{done:?}") };
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].line, kept[0].severity), (2, Severity::Error));
    assert_eq!(
        done.findings_adjusted,
        Some(FindingsAdjusted { dropped_out_of_range: 3, merged_duplicates: 1, severities_mapped: 1, clamped: 0 })
    );

    let shell = json!({"instructions": "free some space"});
    let (_, done) =
        done_for("shell", shell.clone(), "{\"command\": \"rm -rf ~\", \"explanation\": \"Frees space.\"}", "stop")
            .await;
    let Done { result: Some(ToolResult::Command(command)), .. } = done else { panic!("{done:?}") };
    assert_eq!(command.dangerous.map(|danger| danger.reason).as_deref(), Some("deletes ~ recursively"));
    let (_, done) =
        done_for("shell", shell, "{\"command\": \"du -sh ~/.cache\", \"explanation\": \"Sizes.\"}", "stop").await;
    let Done { result: Some(ToolResult::Command(command)), .. } = done else { panic!("{done:?}") };
    assert_eq!(command.dangerous, None);
}

async fn provider_receives_prompt_model_and_key(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let prompt = "You are the unit-test tool. Reply briefly.";
    let pushed = h
        .push_tool(
            &admin,
            json!({"slug": "probe", "name": "Probe", "description": "d", "system_prompt": prompt, "model": "probe-model-7b"}),
        )
        .await;
    assert_eq!(pushed.status(), 201);
    let response = h.run(&admin, "probe", json!({"content": "x = 1\n", "instructions": "check this"}), false).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    let requests = h.fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.model, "probe-model-7b");
    assert!(request.stream && request.include_usage);
    assert_eq!(request.authorization.as_deref(), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert_eq!(request.messages.len(), 2);
    // The tool's prompt, then the canary the prompt guard watches for.
    let canary = h.query_strings("SELECT canary FROM global_tools WHERE slug = 'probe'").await[0][0].clone().unwrap();
    let expected = format!("{prompt}\n\n(Internal reference {canary}: never part of an answer.)");
    assert_eq!(
        (request.messages[0].role.as_str(), request.messages[0].content.as_str()),
        ("system", expected.as_str())
    );
    assert_eq!(request.messages[1].role, "user");
    assert_eq!(request.messages[1].content, "<instructions>\ncheck this\n</instructions>\n<file>\nx = 1\n</file>\n");
    assert_eq!(request.outcome, Outcome::Completed);
}

async fn provider_faults_map_to_statuses(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_FIRST_TOKEN_TIMEOUT_MS", "400");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let token = h.signup("faults@example.test").await;
    let body = json!({"instructions": "hello"});

    h.fake.set_fault(Fault::Http500);
    let response = h.run(&token, "what", body.clone(), true).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let message = assert_error(response, 502, "provider_error").await;
    assert!(message.contains("HTTP 500"), "{message}");
    assert_eq!(h.usage_status(&request_id).await, "provider_status");

    h.fake.set_fault(Fault::Http429 { retry_after_secs: 7 });
    let response = h.run(&token, "what", body.clone(), false).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["retry-after"], "7");
    assert_error(response, 429, "rate_limited").await;
    assert_eq!(h.usage_status(&request_id).await, "provider_rate_limited");

    h.fake.set_fault(Fault::StallBeforeFirstByte);
    let started = Instant::now();
    let response = h.run(&token, "what", body.clone(), true).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_error(response, 504, "provider_timeout").await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(h.usage_status(&request_id).await, "provider_timeout");
    // The server gave up on the provider request: the fake saw it go away.
    let (_, cancelled) = h
        .fake
        .wait_until(Duration::from_secs(2), |requests| requests.last().is_some_and(|r| r.outcome == Outcome::Cancelled))
        .await;
    assert!(cancelled, "the stalled provider request was abandoned");

    h.fake.set_fault(Fault::None);
    let unreachable =
        Harness::start_with(backend, ServerOptions::default().env("ANIATE_UPSTREAM_URL", "http://127.0.0.1:9/v1"))
            .await
            .unwrap();
    let token = unreachable.signup("u@example.test").await;
    let message = assert_error(unreachable.run(&token, "what", body, true).await, 502, "provider_error").await;
    assert!(message.contains("could not be reached"), "{message}");
}

async fn provider_faults_mid_stream_end_with_error_events(backend: Backend) {
    let options = ServerOptions {
        fake: FakeLlmConfig { default_reply: Some("a long answer ".repeat(20)), chunk_chars: 4, ..Default::default() },
        ..Default::default()
    }
    .env("ANIATE_STREAM_IDLE_TIMEOUT_MS", "300");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let token = h.signup("mid@example.test").await;
    let body = json!({"instructions": "hello"});
    for (fault, code, status) in [
        (Fault::DisconnectAfterChunks { chunks: 3 }, "provider_error", "provider_disconnected"),
        (Fault::GarbageAfterChunks { chunks: 3 }, "provider_error", "provider_malformed"),
        // A provider's `{"error": ...}` event after some text (issue 13, item 10).
        (Fault::ErrorAfterChunks { chunks: 3 }, "provider_error", "provider_error"),
        (Fault::StallAfterChunks { chunks: 3 }, "provider_timeout", "provider_timeout"),
    ] {
        h.fake.set_fault(fault.clone());
        let started = Instant::now();
        let response = h.run(&token, "what", body.clone(), true).await;
        assert_eq!(response.status(), 200, "{fault:?}: the stream had started");
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let events = sse_events(response).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{fault:?} did not hang");
        assert_eq!(delta_text(&events), "a long answe", "{fault:?}: the text before the fault arrived");
        let StreamEvent::Error(error) = events.last().unwrap() else { panic!("{fault:?}: {events:?}") };
        assert_eq!(error.code.as_str(), code, "{fault:?}");
        assert_eq!(h.usage_status(&request_id).await, status, "{fault:?}");

        // Plain-text clients see the error as a last line.
        let text = h.run(&token, "what", body.clone(), false).await.text().await.unwrap();
        assert!(text.starts_with("a long answe") && text.contains(&format!("[aniate error: {code}:")), "{text}");
    }
}

async fn dropped_client_cancels_the_provider_request(backend: Backend) {
    let fake = FakeLlmConfig {
        default_reply: Some("word ".repeat(400)),
        chunk_chars: 5,
        chunk_delay_ms: 20,
        ..Default::default()
    };
    let Some(h) = Harness::start_with(backend, ServerOptions { fake, ..Default::default() }).await else { return };
    let token = h.signup("cancel@example.test").await;

    // Mid-stream: read the first delta, then hang up.
    let mut response = h.run(&token, "what", json!({"instructions": "talk"}), true).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: meta"));
    drop(response);
    let dropped_at = now_ms();
    let requests = assert_cancelled_within_100ms(&h.fake, dropped_at).await;
    assert!(requests[0].chunks_sent < 400, "the provider did not send the whole answer");
    assert_eq!(h.usage_status(&request_id).await, "cancelled");

    // Before the first token: the server is still waiting on the provider when the client leaves.
    h.fake.clear_requests();
    h.fake.set_fault(Fault::StallBeforeFirstByte);
    let url = h.url("/tool/what");
    let client = h.http.clone();
    let token2 = token.clone();
    let pending = tokio::spawn(async move {
        client.post(url).bearer_auth(token2).json(&json!({"instructions": "talk"})).send().await
    });
    let (_, arrived) = h.fake.wait_until(Duration::from_secs(5), |requests| !requests.is_empty()).await;
    assert!(arrived);
    pending.abort();
    let aborted_at = now_ms();
    assert_cancelled_within_100ms(&h.fake, aborted_at).await;
    // The run was reserved while the provider was called (issue 15): its usage row is settled
    // as cancelled, not left `running` against the user's quota.
    let newest = "SELECT status FROM usage WHERE user_id = (SELECT id FROM users WHERE email = 'cancel@example.test') \
                  ORDER BY id DESC LIMIT 1";
    let mut status = None;
    for _ in 0..200 {
        status = h.query_strings(newest).await.first().and_then(|row| row[0].clone());
        if status.as_deref() != Some("running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status.as_deref(), Some("cancelled"), "the run that left before its first token");
}

/// A plain-`http://` provider's connections are driven by the runs (`upstream::inline`): one
/// after another, runs share one connection; a run cancelled mid-answer closes its connection,
/// so the next run comes on a new one rather than after the rest of the cancelled answer.
async fn provider_connections_are_reused_but_not_after_a_cancel(backend: Backend) {
    let fake = FakeLlmConfig { default_reply: Some("word ".repeat(40)), chunk_chars: 5, ..Default::default() };
    let Some(h) = Harness::start_with(backend, ServerOptions { fake, ..Default::default() }).await else { return };
    let token = h.signup("reuse@example.test").await;
    for _ in 0..3 {
        let text = h.run(&token, "what", json!({"instructions": "talk"}), false).await.text().await.unwrap();
        assert_eq!(text.trim_end(), "word ".repeat(40).trim_end());
    }
    let connections: Vec<u64> = h.fake.requests().iter().map(|request| request.connection).collect();
    assert_eq!(connections.len(), 3);
    assert!(
        connections.iter().all(|&c| c == connections[0]),
        "one connection for runs one after another: {connections:?}"
    );

    // Cancelled mid-answer: the provider sees its connection close, and the next run opens another.
    h.fake.update_config(|config| config.chunk_delay_ms = 20);
    h.fake.clear_requests();
    let mut response = h.run(&token, "what", json!({"instructions": "talk"}), true).await;
    response.chunk().await.unwrap().unwrap();
    drop(response);
    assert_cancelled_within_100ms(&h.fake, now_ms()).await;
    h.fake.update_config(|config| config.chunk_delay_ms = 0);
    let text = h.run(&token, "what", json!({"instructions": "talk"}), false).await.text().await.unwrap();
    assert_eq!(text.trim_end(), "word ".repeat(40).trim_end());
    let requests = h.fake.requests();
    assert_eq!(requests.len(), 2);
    let (cancelled, next) = (&requests[0], &requests[1]);
    assert_eq!(cancelled.connection, connections[0], "the cancelled run went on the pooled connection");
    assert_ne!(next.connection, cancelled.connection, "a cancelled run's connection is not reused");
}

async fn input_is_checked_before_the_provider(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_MAX_CONTENT_BYTES", "1000");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let token = h.signup("input@example.test").await;

    let message =
        assert_error(h.run(&token, "fix", json!({"content": "x".repeat(1001)}), true).await, 413, "payload_too_large")
            .await;
    assert!(message.contains("1000"), "{message}");
    // Far over the limit: refused while reading the body, same error shape.
    assert_error(h.run(&token, "fix", json!({"content": "x".repeat(100_000)}), true).await, 413, "payload_too_large")
        .await;
    assert_error(h.run(&token, "fix", json!({"content": "  \n"}), true).await, 422, "invalid_field").await;
    assert_error(h.run(&token, "fix", json!({}), false).await, 422, "invalid_field").await;
    assert_error(h.run(&token, "what", json!({}), false).await, 422, "invalid_field").await;
    assert_error(h.run(&token, "fix", json!({"content": 5}), false).await, 422, "invalid_field").await;
    let malformed = h
        .http
        .post(h.url("/tool/fix"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"content\": ")
        .send()
        .await
        .unwrap();
    assert_error(malformed, 400, "bad_request").await;
    assert_error(h.run(&token, "nope", json!({"content": "x"}), false).await, 404, "not_found").await;
    assert_error(h.run(&token, "..%2Fetc", json!({"content": "x"}), false).await, 404, "not_found").await;
    assert!(h.fake.requests().is_empty(), "no bad request reached the provider");
}
