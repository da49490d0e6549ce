//! Logins across servers and accounts (issue 13 items 12–15, issue 20 item 1): a stored token
//! goes only to the origin it was issued by, plain HTTP off this machine is refused unless
//! allowed, `ant logout` says when the server did not revoke the token, cached answers never
//! cross logins, and a per-command server or token reaches a daemon already running for
//! another one.

use std::sync::{Arc, Mutex};

use aniate_testkit::stack::{Stack, StackOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Client;

/// A real HTTP listener on loopback that keeps every byte it receives and answers 401 to
/// every request: a server a token must never reach.
async fn recording_server() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                sink.lock().unwrap().extend_from_slice(&seen);
                let _ = socket
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, received)
}

/// The stored credentials file's `origin` and `token`.
fn stored_login(client: &Client) -> (String, String) {
    let text = std::fs::read_to_string(client.view.join("credentials")).expect("a credentials file");
    let field = |key: &str| -> String {
        let prefix = format!("{key} = \"");
        let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("no {key}: {text}"));
        line[prefix.len()..].trim_end_matches('"').to_owned()
    };
    (field("origin"), field("token"))
}

fn set_env(client: &mut Client, key: &str, value: Option<&str>) {
    client.env.retain(|(k, _)| k != key);
    if let Some(value) = value {
        client.env.push((key.to_owned(), value.to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_token_only_goes_to_the_origin_it_was_issued_by() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (other, received) = recording_server().await;
    let mut client = Client::new(&stack, "u");
    client.ready("origin@example.test", &["what"]).await;
    let (origin, token) = stored_login(&client);
    assert_eq!(origin, stack.url);

    // Another server, named each way a user can, through the daemon and without it.
    let refused = format!("not logged in to {other}: the stored login is for {}", stack.url);
    let server_flag = ["--server", other.as_str()];
    for no_daemon in [false, true] {
        let mut base: Vec<&str> = Vec::new();
        if no_daemon {
            base.push("--no-daemon");
        }
        let mut args = base.clone();
        args.extend_from_slice(&server_flag);
        args.push("whoami");
        client.ant(&args).await.failed_with(3, &refused);
        let mut args = base.clone();
        args.extend_from_slice(&server_flag);
        args.extend_from_slice(&["what", "-i", "hello"]);
        client.ant(&args).await.failed_with(3, &refused);

        set_env(&mut client, "ANIATE_SERVER", Some(&other));
        let mut args = base.clone();
        args.push("whoami");
        client.ant(&args).await.failed_with(3, &refused);
        set_env(&mut client, "ANIATE_SERVER", None);
        client.ant(&["config", "set", "server", &other]).await.ok();
        let run = client.ant(&args).await;
        run.failed_with(3, &refused);
        assert!(run.stderr.contains(&format!("run `ant login` to log in to {other}")), "{}", run.stderr);
        client.ant(&["config", "set", "server", &stack.url]).await.ok();
        set_env(&mut client, "ANIATE_SERVER", Some(&stack.url));
    }
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(!seen.contains(&token), "the token reached another server: {seen}");
    assert!(seen.is_empty(), "nothing at all went to the other server: {seen}");

    // The login still works where it belongs.
    let who = client.ant(&["whoami", "--json"]).await;
    who.ok();
    assert!(who.stdout.contains("origin@example.test"), "{}", who.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_from_before_origins_is_bound_to_the_configured_server() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    let token = stack.signup("legacy@example.test").await.unwrap();
    let path = client.view.join("credentials");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // The first command names another server: the file is bound to the configured one all
    // the same (`--server` is not configuration), so the token does not go there.
    let (other, received) = recording_server().await;
    for no_daemon in [true, false] {
        let mut args = vec!["--server", other.as_str(), "whoami"];
        if no_daemon {
            args.insert(0, "--no-daemon");
        }
        client.ant(&args).await.failed_with(3, &format!("the stored login is for {}", stack.url));
        assert_eq!(stored_login(&client), (stack.url.clone(), token.clone()), "bound to the configured server");
        if no_daemon {
            // Bare again, for the daemon to read.
            std::fs::write(&path, format!("{token}\n")).unwrap();
        }
    }
    assert!(received.lock().unwrap().is_empty());

    let who = client.ant(&["whoami"]).await;
    who.ok();
    assert!(who.stdout.contains("legacy@example.test"), "{}", who.stdout);
    assert_eq!(stored_login(&client), (stack.url.clone(), token), "bound to the configured server");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_off_this_machine_is_refused_unless_allowed_and_then_warned_about() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut client = Client::new(&stack, "u");
    client.ready("http@example.test", &[]).await;
    let remote = "http://aniate.invalid";

    // Refused before any connection, with or without a token, through the daemon or not.
    set_env(&mut client, "ANIATE_TOKEN", Some("some-token"));
    for args in [vec!["--server", remote, "whoami"], vec!["--no-daemon", "--server", remote, "whoami"]] {
        let run = client.ant(&args).await;
        run.failed_with(1, "refusing plain http:// to aniate.invalid");
        assert!(run.stderr.contains("allow_insecure_http"), "{}", run.stderr);
    }
    set_env(&mut client, "ANIATE_TOKEN", None);
    client
        .ant_with_stdin(&["--server", remote, "login", "--email", "e@example.test", "--password-stdin"], "pw\n")
        .await
        .failed_with(1, "refusing plain http://");

    // Allowed: it goes out (and fails here, there being no such host), with a warning each time.
    client.ant(&["config", "set", "allow_insecure_http", "true"]).await.ok();
    set_env(&mut client, "ANIATE_TOKEN", Some("some-token"));
    for _ in 0..2 {
        let run = client.ant(&["--server", remote, "whoami"]).await;
        run.failed_with(5, "cannot reach the Aniate server at http://aniate.invalid");
        assert!(
            run.stderr.contains("warning: sending your token to aniate.invalid over plain http://"),
            "{}",
            run.stderr
        );
    }
    set_env(&mut client, "ANIATE_TOKEN", None);

    // Loopback is this machine: no warning.
    let run = client.ant(&["whoami"]).await;
    run.ok();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_says_when_the_server_did_not_revoke_the_token() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    let token = stack.signup("bye@example.test").await.unwrap();
    client.ant(&["login", "--token", &token]).await.ok();

    stack.server.kill();
    let run = client.ant(&["logout"]).await;
    run.failed_with(
        5,
        &format!("logged out on this machine, but the server at {} did not revoke the token", stack.url),
    );
    assert!(run.stderr.contains("ant logout --all"), "how to retry: {}", run.stderr);
    assert!(!run.stdout.contains("Logged out"), "{}", run.stdout);
    assert!(!client.view.join("credentials").exists(), "the local credentials are removed all the same");

    // What it said is true: the token still works.
    stack.restart_server().unwrap();
    let me = stack.http.get(format!("{}/me", stack.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);

    // With the server up, logout revokes it.
    client.ant(&["login", "--token", &token]).await.ok();
    let run = client.ant(&["logout"]).await;
    run.ok();
    assert!(run.stdout.contains("Logged out"), "{}", run.stdout);
    let me = stack.http.get(format!("{}/me", stack.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_never_cross_logins() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut client = Client::new(&stack, "u");
    client.ready("first@example.test", &["what"]).await;
    let ask = ["what", "-i", "the same question", "--json"];
    let cached = |run: &crate::harness::Run| {
        run.ok();
        let done: Value = run
            .stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|event| event["event"] == "done")
            .unwrap_or_else(|| panic!("no done event: {}", run.stdout));
        done["data"]["cached"].as_bool().unwrap_or(false)
    };
    assert!(!cached(&client.ant(&ask).await));
    assert!(cached(&client.ant(&ask).await), "the same login gets its cached answer");
    assert_eq!(stack.fake.requests().len(), 1);

    // Another account by ANIATE_TOKEN, with the first still logged in: its own answer.
    let other = stack.signup("other@example.test").await.unwrap();
    set_env(&mut client, "ANIATE_TOKEN", Some(&other));
    assert!(!cached(&client.ant(&ask).await), "another token never gets the first login's answer");
    set_env(&mut client, "ANIATE_TOKEN", None);
    assert_eq!(stack.fake.requests().len(), 2);

    // Log out, log in as someone else: not the first account's answer either.
    client.ant(&["logout"]).await.ok();
    client.ready("second@example.test", &[]).await;
    assert!(!cached(&client.ant(&ask).await), "a new login starts with an empty cache");
    assert_eq!(stack.fake.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_command_server_and_token_reach_a_running_daemon() {
    let a = Stack::start(StackOptions::default()).await.unwrap();
    let b = Stack::start(StackOptions::default()).await.unwrap();
    let mut client = Client::new(&a, "u");
    client.ready("alice@a.test", &["what"]).await;
    let pid = client.daemon_pid().expect("a daemon runs for server A");
    let bob = b.signup("bob@b.test").await.unwrap();
    let carol = a.signup("carol@a.test").await.unwrap();
    let whoami = |run: &crate::harness::Run| -> (String, String) {
        run.ok();
        let who: Value = serde_json::from_str(&run.stdout).unwrap();
        (who["email"].as_str().unwrap().to_owned(), who["server"].as_str().unwrap().to_owned())
    };

    // `--server B` with `ANIATE_TOKEN`, and `ANIATE_SERVER=B` with it: server B, account bob.
    set_env(&mut client, "ANIATE_TOKEN", Some(&bob));
    let expected = ("bob@b.test".to_owned(), b.url.clone());
    assert_eq!(whoami(&client.ant(&["--server", &b.url, "whoami", "--json"]).await), expected);
    set_env(&mut client, "ANIATE_SERVER", Some(&b.url));
    assert_eq!(whoami(&client.ant(&["whoami", "--json"]).await), expected);
    // A tool run goes to B's provider, not A's.
    let before_a = a.fake.requests().len();
    client.ant(&["what", "-i", "which server?"]).await.ok();
    assert_eq!(b.fake.requests().len(), 1);
    assert_eq!(a.fake.requests().len(), before_a);

    // `ANIATE_TOKEN` alone: another account on the daemon's server.
    set_env(&mut client, "ANIATE_SERVER", Some(&a.url));
    set_env(&mut client, "ANIATE_TOKEN", Some(&carol));
    assert_eq!(whoami(&client.ant(&["whoami", "--json"]).await), ("carol@a.test".to_owned(), a.url.clone()));

    // Without them, the stored login; B without a token of its own is not logged in.
    set_env(&mut client, "ANIATE_TOKEN", None);
    assert_eq!(whoami(&client.ant(&["whoami", "--json"]).await), ("alice@a.test".to_owned(), a.url.clone()));
    client.ant(&["--server", &b.url, "whoami"]).await.failed_with(3, &format!("not logged in to {}", b.url));
    assert_eq!(client.daemon_pid(), Some(pid), "one daemon served every command");

    // A daemon started by a command with `ANIATE_TOKEN` does not keep it for the next ones.
    client.ant(&["daemon", "stop"]).await.ok();
    set_env(&mut client, "ANIATE_TOKEN", Some(&carol));
    assert_eq!(whoami(&client.ant(&["whoami", "--json"]).await).0, "carol@a.test");
    set_env(&mut client, "ANIATE_TOKEN", None);
    assert_ne!(client.daemon_pid(), Some(pid), "a new daemon");
    assert_eq!(whoami(&client.ant(&["whoami", "--json"]).await).0, "alice@a.test");
}
