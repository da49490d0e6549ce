//! The socket protocol: handshake, multiplexing, cancellation, the cache, bad frames, a request's own
//! server and token.

use std::time::Duration;

use aniate_testkit::{
    FakeLlmConfig, Outcome,
    stack::{Stack, StackOptions},
};
use serde_json::{Value, json};

use crate::harness::{Daemon, Raw, daemon_bin, login_and_install, now_ms};

fn slow_fake() -> FakeLlmConfig {
    FakeLlmConfig {
        default_reply: Some("slow words ".repeat(200)),
        chunk_chars: 6,
        chunk_delay_ms: 15,
        ..Default::default()
    }
}

/// The provider's first request was cancelled less than 100 ms after `since` (Unix ms), when `what`.
async fn assert_cancelled_within_100ms(stack: &Stack, since: u64, what: &str) {
    let (requests, ok) = stack
        .fake
        .wait_until(Duration::from_secs(2), |r| r.first().is_some_and(|r| r.outcome == Outcome::Cancelled))
        .await;
    assert!(ok, "{requests:?}");
    let delay = requests[0].ended_at_ms.unwrap().saturating_sub(since);
    assert!(delay < 100, "provider request cancelled {delay} ms after {what}");
}

fn text_of(replies: &[Value]) -> String {
    replies.iter().filter(|r| r["event"] == "delta").map(|r| r["data"]["text"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_private_and_requests_multiplex() {
    let stack = Stack::start(StackOptions {
        fake: FakeLlmConfig { chunk_chars: 3, chunk_delay_ms: 2, ..Default::default() },
        ..Default::default()
    })
    .await
    .unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start(&stack, &home);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(daemon.socket()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
        let home_mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(home_mode, 0o700, "home mode {home_mode:o}");
    }
    let mut raw = Raw::greeted(&daemon.socket()).await;
    login_and_install(&stack, &mut raw, "multi@example.test", &["what"]).await;
    raw.request(3, "run_tool", json!({"tool": "what", "instructions": "fill the cache"})).await;
    assert_eq!(raw.replies_of(3).await.last().unwrap()["event"], "done");
    {
        // Everything the daemon keeps is its user's alone: every directory 0700, every file 0600.
        use std::os::unix::fs::PermissionsExt;
        fn check(dir: &std::path::Path, seen: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if entry.file_name() == "stderr.log" {
                    continue; // the test's own capture of the daemon's stderr
                }
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                if path.is_dir() {
                    assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
                    check(&path, seen);
                } else {
                    assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
                }
                seen.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let mut seen = Vec::new();
        check(&home, &mut seen);
        for expected in ["credentials", "tools", "what.json", "state.redb", "aniated.log", "aniated.sock"] {
            assert!(seen.iter().any(|name| name == expected), "no {expected} in {seen:?}");
        }
    }

    // Two streams at once on one connection, replies tagged by id.
    raw.request(1, "run_tool", json!({"tool": "what", "instructions": "first question"})).await;
    raw.request(2, "run_tool", json!({"tool": "what", "instructions": "second question"})).await;
    let mut by_id: std::collections::HashMap<u64, Vec<Value>> = Default::default();
    let mut order = Vec::new();
    while by_id.values().filter(|r| r.last().is_some_and(|l| l["event"] == "done")).count() < 2 {
        let frame = raw.recv().await.expect("a frame");
        let id = frame["reply"]["id"].as_u64().unwrap();
        order.push(id);
        by_id.entry(id).or_default().push(frame["reply"].clone());
    }
    assert!(text_of(&by_id[&1]).contains("first question"));
    assert!(text_of(&by_id[&2]).contains("second question"));
    assert_eq!(by_id[&1][0]["event"], "meta");
    let first_done = order.iter().position(|id| *id == 1 && !by_id[&1].is_empty()).unwrap();
    assert!(
        order[first_done..].contains(&2) && order.iter().filter(|id| **id == 2).count() > 3,
        "interleaved: {order:?}"
    );

    let status = raw.call(3, "status", Value::Null).await;
    assert_eq!(status["logged_in"], true);
    assert_eq!(status["installed_tools"], 1);
    assert_eq!(status["server_reachable"], true);
    assert!(status["requests_served"].as_u64().unwrap() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_disconnect_cancel_the_provider_request() {
    let stack = Stack::start(StackOptions { fake: slow_fake(), ..Default::default() }).await.unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start(&stack, &home);
    let mut raw = Raw::greeted(&daemon.socket()).await;
    login_and_install(&stack, &mut raw, "cancel@example.test", &["what"]).await;

    // An explicit cancel.
    raw.request(1, "run_tool", json!({"tool": "what", "instructions": "talk", "fresh": true})).await;
    loop {
        let frame = raw.recv().await.unwrap();
        if frame["reply"]["event"] == "delta" {
            break;
        }
    }
    raw.request(2, "cancel", json!({"id": 1})).await;
    let cancelled_at = now_ms();
    let replies = raw.replies_of(1).await;
    assert_eq!(replies.last().unwrap()["data"]["code"], "cancelled");
    assert_cancelled_within_100ms(&stack, cancelled_at, "the cancel").await;

    // A client that goes away.
    stack.fake.clear_requests();
    raw.request(3, "run_tool", json!({"tool": "what", "instructions": "talk more", "fresh": true})).await;
    loop {
        let frame = raw.recv().await.unwrap();
        if frame["reply"]["id"] == 3 && frame["reply"]["event"] == "delta" {
            break;
        }
    }
    drop(raw);
    let dropped_at = now_ms();
    assert_cancelled_within_100ms(&stack, dropped_at, "the client left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstalled_tools_fail_locally_and_results_are_cached() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start(&stack, &home);
    let mut raw = Raw::greeted(&daemon.socket()).await;

    // Not logged in, nothing installed: both refused without the network.
    raw.request(1, "run_tool", json!({"tool": "what", "instructions": "x"})).await;
    let replies = raw.replies_of(1).await;
    assert_eq!(replies[0]["data"]["code"], "not_installed", "{replies:?}");
    assert!(replies[0]["data"]["hint"].as_str().unwrap().contains("ant install what"));

    login_and_install(&stack, &mut raw, "cache@example.test", &["what", "fix"]).await;
    let server_lines_before = stack.server_log().lines().filter(|l| l.contains("response")).count();
    raw.request(2, "run_tool", json!({"tool": "review", "content": "x = 1"})).await;
    assert_eq!(raw.replies_of(2).await[0]["data"]["code"], "not_installed");
    raw.request(3, "run_tool", json!({"tool": "fix", "content": "   "})).await;
    assert_eq!(raw.replies_of(3).await[0]["data"]["code"], "bad_request");
    raw.request(4, "run_tool", json!({"tool": "fix", "content": "x".repeat(1024 * 1024 + 1)})).await;
    assert_eq!(raw.replies_of(4).await[0]["data"]["code"], "bad_request");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_lines_after = stack.server_log().lines().filter(|l| l.contains("response")).count();
    assert_eq!(server_lines_before, server_lines_after, "refused runs made no server request");
    assert!(stack.fake.requests().is_empty());

    // The same request twice: the second is answered from state.redb.
    let run = json!({"tool": "what", "instructions": "cache me", "filename": "a.py"});
    raw.request(5, "run_tool", run.clone()).await;
    let first = raw.replies_of(5).await;
    raw.request(6, "run_tool", run.clone()).await;
    let second = raw.replies_of(6).await;
    assert_eq!(first.last().unwrap()["data"]["cached"], false);
    assert_eq!(second.last().unwrap()["data"]["cached"], true);
    assert_eq!(text_of(&first), text_of(&second));
    assert_eq!(stack.fake.requests().len(), 1);
    let mut fresh = run.clone();
    fresh["fresh"] = json!(true);
    raw.request(7, "run_tool", fresh).await;
    assert_eq!(raw.replies_of(7).await.last().unwrap()["data"]["cached"], false);
    assert_eq!(stack.fake.requests().len(), 2);
    let status = raw.call(8, "status", Value::Null).await;
    assert_eq!(status["cache_hits"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_end_only_their_connection() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start(&stack, &home);

    let mut early = Raw::connect(&daemon.socket()).await;
    early.send(json!({"request": {"id": 1, "method": "status"}})).await;
    let reply = early.recv().await.unwrap();
    assert_eq!(reply["reply"]["data"]["code"], "bad_request");
    assert!(early.recv().await.is_none(), "closed after a request without hello");

    let mut garbage = Raw::greeted(&daemon.socket()).await;
    garbage.send_raw(b"{this is not json}\n").await.unwrap();
    assert_eq!(garbage.recv().await.unwrap()["reply"]["data"]["code"], "bad_request");
    assert!(garbage.recv().await.is_none());

    let mut huge = Raw::greeted(&daemon.socket()).await;
    let big = vec![b'a'; aniate_proto::ipc::MAX_FRAME_BYTES + 1024];
    // The daemon may close before it has read everything; either way it must answer or close.
    let _ = huge.send_raw(&big).await;
    let _ = huge.send_raw(b"\n").await;
    if let Some(frame) = huge.recv().await {
        assert_eq!(frame["reply"]["data"]["code"], "bad_request");
    }

    let mut unknown = Raw::greeted(&daemon.socket()).await;
    unknown.send(json!({"request": {"id": 5, "method": "format_disk"}})).await;
    assert_eq!(unknown.recv().await.unwrap()["reply"]["data"]["code"], "bad_request");

    // The daemon is fine.
    let mut fine = Raw::greeted(&daemon.socket()).await;
    let status = fine.call(1, "status", Value::Null).await;
    assert_eq!(status["protocol"], 1);
    assert!(daemon.log().contains("bad frame"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_their_own_server_and_token() {
    let a = Stack::start(StackOptions::default()).await.unwrap();
    let b = Stack::start(StackOptions::default()).await.unwrap();
    let home = a.new_home("h");
    let daemon = Daemon::start(&a, &home);
    let mut raw = Raw::greeted(&daemon.socket()).await;
    login_and_install(&a, &mut raw, "alice@a.test", &[]).await;
    let bob = b.signup("bob@b.test").await.unwrap();

    // The frame's own server and token, for that request only.
    raw.send(json!({"request": {"id": 1, "method": "whoami", "server": b.url, "token": bob}})).await;
    let who = raw.replies_of(1).await;
    assert_eq!(who[0]["data"]["email"], "bob@b.test", "{who:?}");
    assert_eq!(who[0]["data"]["server"], b.url.as_str());
    let who = raw.call(2, "whoami", Value::Null).await;
    assert_eq!((who["email"].as_str(), who["server"].as_str()), (Some("alice@a.test"), Some(a.url.as_str())));

    // Another server without a token of its own: the stored login is not sent there.
    raw.send(json!({"request": {"id": 3, "method": "whoami", "server": b.url}})).await;
    let refused = raw.replies_of(3).await;
    assert_eq!(refused[0]["event"], "error");
    assert_eq!(refused[0]["data"]["code"], "not_logged_in");
    assert!(refused[0]["data"]["message"].as_str().unwrap().contains(&format!("not logged in to {}", b.url)));
}

/// `aniated --stdio`, the private daemon of `ant --no-daemon`: it serves the socket on its stdin
/// next to the daemon of the same home (no lock, no socket of its own), cancels what its client
/// leaves running, and exits when that client goes away. Anything but a socket on stdin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_serves_one_client_next_to_the_daemon_and_exits_with_it() {
    // Slow enough to leave mid-run, quick enough to run to the end.
    let fake = FakeLlmConfig { chunk_chars: 60, ..slow_fake() };
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start(&stack, &home);
    let mut raw = Raw::greeted(&daemon.socket()).await;
    login_and_install(&stack, &mut raw, "stdio@example.test", &["what"]).await;

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut command = std::process::Command::new(daemon_bin());
    aniate_testkit::clear_aniate_env(&mut command);
    let mut child = command
        .arg("--stdio")
        .envs(stack.client_env(&home))
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut private = Raw::over(tokio::net::UnixStream::from_std(ours).unwrap());
    let hello = private.greet().await;
    assert_eq!(hello["hello"]["pid"], child.id(), "{hello}");

    // It reads the home's login and tools, and answers a tool run in full.
    let me = private.call(1, "whoami", Value::Null).await;
    assert_eq!(me["email"], "stdio@example.test", "{me}");
    private.request(2, "run_tool", json!({"tool": "what", "instructions": "talk", "fresh": true})).await;
    let replies = private.replies_of(2).await;
    assert_eq!(replies.last().unwrap()["event"], "done", "{replies:?}");
    assert!(text_of(&replies).starts_with("slow words"), "{replies:?}");
    // The daemon of the home is untouched: still the one on its socket.
    assert_eq!(raw.call(3, "status", Value::Null).await["pid"], daemon.process.pid());

    // Its client goes away mid-run: the provider request is cancelled and the process exits.
    stack.fake.clear_requests();
    private.request(4, "run_tool", json!({"tool": "what", "instructions": "talk more", "fresh": true})).await;
    while private.recv().await.is_some_and(|frame| frame["reply"]["event"] != "delta") {}
    drop(private);
    let dropped_at = now_ms();
    assert_cancelled_within_100ms(&stack, dropped_at, "the client left").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "aniated --stdio outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status}");

    // Started by hand in a terminal or with a file on stdin: a clear refusal, not a hang.
    let refused = std::process::Command::new(daemon_bin())
        .arg("--stdio")
        .envs(stack.client_env(&home))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("this stdin is not a socket"), "{stderr}");
}
