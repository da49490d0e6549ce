//! `/healthz`, `/metrics`, unknown routes, graceful shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, assert_error, db_tests};

db_tests!(health_metrics_and_unknown_routes, sigterm_shuts_down_cleanly);

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

async fn sigterm_shuts_down_cleanly(backend: Backend) {
    let Some(mut h) = Harness::start(backend).await else { return };
    assert_eq!(h.http.get(h.url("/healthz")).send().await.unwrap().status(), 200);
    let status = h.server_mut().terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(h.server_log().contains("stopped"));
}
