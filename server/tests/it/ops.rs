//! `/healthz`, `/metrics`, unknown routes, graceful shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, ServerOptions, assert_error, db_tests, non_loopback_ip};

db_tests!(
    health_metrics_and_unknown_routes,
    metrics_hide_brews_and_answer_only_trusted_clients,
    sigterm_shuts_down_cleanly
);

async fn health_metrics_and_unknown_routes(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let health: Value = h.http.get(h.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], true);

    let token = h.signup("ops@example.test").await;
    for _ in 0..3 {
        let response = h.run(&token, "what", json!({"instructions": "hi"}), true).await;
        response.bytes().await.unwrap();
    }
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "aniate_tool_runs_total{tool=\"what\",status=\"ok\"} 3",
        "aniate_time_to_first_token_seconds_count{tool=\"what\"} 3",
        "aniate_tokens_total{tool=\"what\",kind=\"prompt\"}",
        "aniate_http_requests_total{method=\"POST\",route=\"/tool/{slug}\",status=\"200\"} 3",
        "aniate_http_requests_total{method=\"POST\",route=\"/auth/signup\",status=\"201\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    assert_error(h.http.get(h.url("/nope")).send().await.unwrap(), 404, "not_found").await;
    let wrong_method = h.http.delete(h.url("/tools")).send().await.unwrap();
    assert_error(wrong_method, 405, "bad_request").await;
    // A client's own request id is kept when sane, replaced when not.
    let kept = h.http.get(h.url("/healthz")).header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-abc-123");
    let replaced = h.http.get(h.url("/healthz")).header("x-request-id", "bad id\"<>").send().await.unwrap();
    assert!(replaced.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
}

/// Issue 13, item 8: brews are one `brew` label (their slugs are private, and each would add
/// series), and `/metrics` answers loopback clients or the bearer of `ANIATE_METRICS_TOKEN`.
async fn metrics_hide_brews_and_answer_only_trusted_clients(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_BIND", "0.0.0.0:0").env("ANIATE_METRICS_TOKEN", "scrape-s3cret");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let port = h.base.rsplit(':').next().unwrap().to_owned();
    let loopback = format!("http://127.0.0.1:{port}");
    let token = h.signup("falcon@example.test").await;
    let brew_series = || async {
        let metrics = h.http.get(format!("{loopback}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200, "a loopback client needs no token");
        let metrics = metrics.text().await.unwrap();
        assert!(!metrics.contains("secret-project"), "a brew's slug in\n{metrics}");
        metrics.lines().filter(|line| line.contains("tool=\"brew\"")).count()
    };
    for (n_brews, slug) in
        ["secret-project-falcon", "secret-project-osprey", "secret-project-kestrel"].iter().enumerate()
    {
        let created = h
            .http
            .post(format!("{loopback}/assistants"))
            .bearer_auth(&token)
            .json(&json!({"name": slug, "slug": slug, "system_prompt": "p"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let chat = h
            .http
            .post(format!("{loopback}/chat"))
            .bearer_auth(&token)
            .json(&json!({"assistant": slug, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(chat.status(), 200);
        chat.bytes().await.unwrap();
        // The run is counted when its body ends, just after the client has read it.
        let mut counted = String::new();
        for _ in 0..100 {
            counted = h.http.get(format!("{loopback}/metrics")).send().await.unwrap().text().await.unwrap();
            if counted.contains(&format!("aniate_tool_runs_total{{tool=\"brew\",status=\"ok\"}} {}", n_brews + 1)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(counted.contains(&format!("tool=\"brew\",status=\"ok\"}} {}", n_brews + 1)), "{counted}");
    }
    let after_three = brew_series().await;
    assert!(after_three > 0);
    let created = h
        .http
        .post(format!("{loopback}/assistants"))
        .bearer_auth(&token)
        .json(&json!({"name": "secret-project-harrier", "system_prompt": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let chat = h
        .http
        .post(format!("{loopback}/chat"))
        .bearer_auth(&token)
        .json(&json!({"assistant": "secret-project-harrier", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    chat.bytes().await.unwrap();
    assert_eq!(brew_series().await, after_three, "a new brew adds no series");

    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipping the remote-client half: this machine has no non-loopback address");
        return;
    };
    let remote = format!("http://{}/metrics", std::net::SocketAddr::new(ip, port.parse().unwrap()));
    assert_error(h.http.get(&remote).send().await.unwrap(), 403, "forbidden").await;
    assert_error(h.http.get(&remote).bearer_auth("scrape-s3creT").send().await.unwrap(), 403, "forbidden").await;
    assert_error(h.http.get(&remote).bearer_auth(&token).send().await.unwrap(), 403, "forbidden").await;
    let scraped = h.http.get(&remote).bearer_auth("scrape-s3cret").send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("aniate_http_requests_total"));
    // Everything else still answers a remote client as before.
    assert_eq!(h.http.get(format!("http://{ip}:{port}/healthz")).send().await.unwrap().status(), 200);
}

async fn sigterm_shuts_down_cleanly(backend: Backend) {
    let Some(mut h) = Harness::start(backend).await else { return };
    assert_eq!(h.http.get(h.url("/healthz")).send().await.unwrap().status(), 200);
    let status = h.server_mut().terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(h.server_log().contains("stopped"));
}

/// `/openapi.json` documents every route, generated from the code, and the public tool schema
/// has no prompt field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_the_api() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let doc: Value = h.http.get(h.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for route in [
        "/tools",
        "/tools/{slug}",
        "/tool/{slug}",
        "/chat",
        "/auth/signup",
        "/auth/login",
        "/auth/logout",
        "/me",
        "/admin/tools",
        "/admin/tools/{slug}",
        "/admin/tools/{slug}/versions",
        "/admin/tools/{slug}/versions/{version}",
        "/admin/tools/{slug}/rollback",
        "/admin/usage",
        "/assistants",
        "/assistants/{id}",
        "/files",
        "/files/{id}",
        "/files/{id}/content",
        "/usage",
        "/healthz",
        "/metrics",
        "/v1/models",
        "/v1/chat/completions",
    ] {
        assert!(paths.iter().any(|p| p.as_str() == route), "{route} is missing from {paths:?}");
    }
    let schemas = &doc["components"]["schemas"];
    let tool_meta: Vec<&String> = schemas["ToolMeta"]["properties"].as_object().unwrap().keys().collect();
    assert!(!tool_meta.iter().any(|k| k.contains("prompt")), "{tool_meta:?}");
    assert!(schemas["ToolUpsert"]["properties"]["system_prompt"].is_object(), "admins send prompts");
    let version_info: Vec<&String> = schemas["ToolVersionInfo"]["properties"].as_object().unwrap().keys().collect();
    assert!(!version_info.iter().any(|k| k.contains("prompt")), "the history list has no prompts: {version_info:?}");
    assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    // What the server sends matches what the document says about it.
    let tools: Vec<Value> = h.http.get(h.url("/tools")).send().await.unwrap().json().await.unwrap();
    let required: Vec<&str> =
        schemas["ToolMeta"]["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for tool in &tools {
        for key in &required {
            assert!(tool.get(*key).is_some(), "{key} missing in {tool}");
        }
        assert_eq!(tool.as_object().unwrap().len(), tool_meta.len());
    }
}

#[test]
fn man_pages_are_generated_from_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        std::process::Command::new(crate::harness::SERVER_BIN).arg("manpages").arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for page in ["ant-server.1", "ant-server-serve.1", "ant-server-admin.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    let serve = std::fs::read_to_string(dir.path().join("ant-server-serve.1")).unwrap();
    assert!(serve.contains("ANIATE_DATABASE_URL"), "the environment variables are documented");
}

/// Opens `n` connections that send half a request head and then nothing.
async fn slow_connections(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect a slow client");
        stream.write_all(b"POST /auth/login HTTP/1.1\r\nHost: aniate\r\nContent-Ty").await.unwrap();
        streams.push(stream);
    }
    streams
}

/// Whether the server has closed `stream` (within `wait`).
async fn closed_by_server(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // hyper may answer a timed-out head with a 408 before closing.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Issue 13, item 4: 1,100 connections that sent half a request head used to make `/healthz`
/// and logins time out. Each now has a header timeout (also the idle timeout of a kept-alive
/// connection), and the soft descriptor limit is raised, so a real login answers within 1 s
/// meanwhile and the slow ones are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_do_not_starve_logins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The test holds 1,100 sockets too.
    ant_server::serve::raise_open_files_limit();
    let options = ServerOptions::default().env("ANIATE_HEADER_TIMEOUT_MS", "3000");
    let Some(h) = Harness::start_with(Backend::Sqlite, options).await else { return };
    h.signup("patient@example.test").await;
    let addr = h.base.trim_start_matches("http://").to_owned();

    // A kept-alive connection that goes quiet after one request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: aniate\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let opened = std::time::Instant::now();
    let mut slow = slow_connections(&addr, 1_100).await;
    let started = std::time::Instant::now();
    let login = h
        .http
        .post(h.url("/auth/login"))
        .json(&json!({"email": "patient@example.test", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1), "login took {:?} beside 1,100 slow clients", started.elapsed());
    assert_eq!(h.http.get(h.url("/healthz")).send().await.unwrap().status(), 200);

    // The header timeout closes every slow one, and the idle one, a little after 3 s.
    let wait = Duration::from_secs(6).saturating_sub(opened.elapsed());
    assert!(closed_by_server(&mut idle, wait).await, "an idle kept-alive connection stays open");
    for stream in &mut slow {
        assert!(closed_by_server(stream, Duration::from_secs(3)).await, "a slow client's connection stays open");
    }
    assert!(opened.elapsed() >= Duration::from_millis(2_900), "closed before the timeout: {:?}", opened.elapsed());
}

/// Issue 13, item 4: past ANIATE_MAX_CONNECTIONS open connections, a new client waits in the
/// backlog until one closes, rather than the server running out of descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let options = ServerOptions::default().env("ANIATE_MAX_CONNECTIONS", "20").env("ANIATE_HEADER_TIMEOUT_MS", "1500");
    let Some(h) = Harness::start_with(Backend::Sqlite, options).await else { return };
    let addr = h.base.trim_start_matches("http://").to_owned();
    // Let the harness's own start-up connections close.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let _slow = slow_connections(&addr, 20).await;
    let started = std::time::Instant::now();
    let fresh = reqwest::Client::new();
    let response = fresh.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_000), "answered in {waited:?}: the cap of 20 let a 21st in");
    assert!(waited < Duration::from_secs(5), "answered in {waited:?}");
}
