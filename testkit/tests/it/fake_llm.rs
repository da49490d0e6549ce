//! The fake's HTTP surface: stream format, non-streaming answers, rules, faults, control
//! endpoints and keep-alive.

use std::time::Duration;

use aniate_testkit::{FakeLlm, FakeLlmConfig, Fault, Outcome, Rule};
use serde_json::json;

use crate::client::{self, Conn, chat_body};

const REPLY: &str = "Hello, wörld! This is the fake speaking 🦀.";

async fn fake_with_reply(reply: &str, chunk_chars: usize) -> FakeLlm {
    FakeLlm::start(FakeLlmConfig { default_reply: Some(reply.to_owned()), chunk_chars, ..FakeLlmConfig::default() })
        .await
        .unwrap()
}

#[tokio::test]
async fn stream_format_without_usage() {
    let fake = fake_with_reply(REPLY, 5).await;
    let mut conn = Conn::connect(fake.addr()).await;
    conn.send("POST", "/v1/chat/completions", Some(&chat_body("hi", true)), &["authorization: Bearer sk-test"]).await;
    let response = conn.read_response().await;

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert!(response.complete);
    assert!(response.body.ends_with(b"data: [DONE]\n\n"));
    let events = response.json_events();
    assert_eq!(events[0]["choices"][0]["delta"], json!({"role": "assistant"}));
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["model"], "llama-3.1-8b-instant");
    let n_chunks = REPLY.chars().count().div_ceil(5);
    assert_eq!(events.len(), 1 + n_chunks + 1, "role, content, finish");
    for event in &events[1..=n_chunks] {
        let piece = event["choices"][0]["delta"]["content"].as_str().unwrap();
        assert!(piece.chars().count() <= 5);
        assert_eq!(event["choices"][0]["finish_reason"], json!(null));
        assert_eq!(event["id"], events[0]["id"]);
    }
    assert_eq!(response.streamed_content(), REPLY);
    let finish = events.last().unwrap();
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(events.iter().all(|event| event.get("usage").is_none()));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded.id, 1);
    assert_eq!(recorded.outcome, Outcome::Completed);
    assert_eq!(recorded.chunks_sent, n_chunks);
    assert!(recorded.stream);
    assert!(!recorded.include_usage);
    assert_eq!(recorded.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(recorded.messages[0].role, "user");
    assert_eq!(recorded.messages[0].content, "hi");
    assert!(recorded.ended_at_ms.unwrap() >= recorded.received_at_ms);
}

#[tokio::test]
async fn stream_with_usage_ends_with_usage_chunk_then_done() {
    let fake = fake_with_reply("0123456789", 4).await;
    let body = json!({
        "model": "some-model",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.2,
    });
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&body.to_string())).await;
    let events = response.json_events();
    let usage_event = events.last().unwrap();
    assert_eq!(usage_event["choices"], json!([]));
    // 13 prompt characters -> 4 tokens; 10 reply characters in chunks of 4 -> 3 chunks.
    assert_eq!(usage_event["usage"], json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}));
    assert_eq!(usage_event["model"], "some-model");
    assert_eq!(events[events.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(response.events().last().unwrap(), b"[DONE]");
    assert_eq!(response.streamed_content(), "0123456789");
    assert!(fake.requests()[0].include_usage);
}

#[tokio::test]
async fn non_streaming_completion() {
    let fake = fake_with_reply(REPLY, 8).await;
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("abcde", false))).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let n_chunks = REPLY.chars().count().div_ceil(8);
    assert_eq!(body["usage"], json!({"prompt_tokens": 2, "completion_tokens": n_chunks, "total_tokens": 2 + n_chunks}));
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.outcome, Outcome::Completed);
    assert!(!recorded.stream);
    assert_eq!(recorded.authorization, None);
}

#[tokio::test]
async fn rules_match_any_message_and_first_wins() {
    let fake = FakeLlm::start(FakeLlmConfig {
        rules: vec![
            Rule { when_contains: "SECRET-PROMPT".to_owned(), reply: "system rule".to_owned() },
            Rule { when_contains: "weather".to_owned(), reply: "sunny".to_owned() },
        ],
        ..FakeLlmConfig::default()
    })
    .await
    .unwrap();
    let ask = |messages: serde_json::Value| {
        let addr = fake.addr();
        async move {
            let body = json!({"model": "m", "messages": messages}).to_string();
            let response = client::request(addr, "POST", "/v1/chat/completions", Some(&body)).await;
            response.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        ask(json!([{"role": "system", "content": "SECRET-PROMPT v1"}, {"role": "user", "content": "weather?"}])).await,
        "system rule"
    );
    assert_eq!(ask(json!([{"role": "user", "content": "the weather"}])).await, "sunny");
    assert_eq!(
        ask(json!([{"role": "user", "content": "a\nb"}, {"role": "user", "content": "two\nlines"}])).await,
        "[aniate-fake-llm: offline fake model] You sent 2 message(s), 12 characters. Last message starts: two lines"
    );
}

#[tokio::test]
async fn models_say_they_are_fake() {
    let fake =
        FakeLlm::start(FakeLlmConfig { models: vec!["a".to_owned(), "b".to_owned()], ..FakeLlmConfig::default() })
            .await
            .unwrap();
    assert_eq!(fake.base_url(), format!("http://{}/v1", fake.addr()));
    let response = client::request(fake.addr(), "GET", "/v1/models", None).await;
    let body = response.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "a");
    assert_eq!(body["data"][1]["id"], "b");
    assert_eq!(body["data"][1]["object"], "model");
    assert_eq!(body["data"][0]["owned_by"], "aniate-fake-llm (offline fake)");

    let fake = FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    let body = client::request(fake.addr(), "GET", "/v1/models", None).await.json();
    assert_eq!(body["data"][0]["id"], "llama-3.1-8b-instant");
}

#[tokio::test]
async fn control_endpoints() {
    let fake = FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    let addr = fake.addr();
    let config = client::request(addr, "GET", "/_fake/config", None).await.json();
    assert_eq!(config["fault"], json!({"kind": "none"}));
    assert_eq!(config["chunk_chars"], 8);

    let new_config = json!({
        "default_reply": "configured",
        "fault": {"kind": "http429", "retry_after_secs": 9},
    });
    let response = client::request(addr, "PUT", "/_fake/config", Some(&new_config.to_string())).await;
    assert_eq!(response.status, 200);
    assert_eq!(fake.config().default_reply.as_deref(), Some("configured"));
    assert_eq!(fake.config().fault, Fault::Http429 { retry_after_secs: 9 });
    assert_eq!(fake.config().models, ["llama-3.1-8b-instant"], "missing keys take defaults");
    let config = client::request(addr, "GET", "/_fake/config", None).await.json();
    assert_eq!(config["fault"], json!({"kind": "http429", "retry_after_secs": 9}));

    let response = client::request(addr, "PUT", "/_fake/config", Some(r#"{"fault": {"kind": "boom"}}"#)).await;
    assert_eq!(response.status, 400);
    assert!(response.json()["error"]["message"].as_str().unwrap().contains("boom"));
    let response = client::request(addr, "PUT", "/_fake/config", Some(r#"{"chunk_char": 3}"#)).await;
    assert_eq!(response.status, 400, "typos in config keys are refused");

    fake.set_fault(Fault::None);
    client::request(addr, "POST", "/v1/chat/completions", Some(&chat_body("one", false))).await;
    client::request(addr, "POST", "/v1/chat/completions", Some(&chat_body("two", true))).await;
    let requests = client::request(addr, "GET", "/_fake/requests", None).await.json();
    assert_eq!(requests.as_array().unwrap().len(), 2);
    assert_eq!(requests[0]["id"], 1);
    assert_eq!(requests[0]["outcome"], "completed");
    assert_eq!(requests[1]["id"], 2);
    assert_eq!(requests[1]["messages"][0]["content"], "two");
    assert_eq!(requests[1]["stream"], true);
    let parsed: Vec<aniate_testkit::RecordedRequest> = serde_json::from_value(requests).unwrap();
    assert_eq!(parsed, fake.requests());

    let response = client::request(addr, "DELETE", "/_fake/requests", None).await;
    assert_eq!(response.status, 200);
    assert!(fake.requests().is_empty());
    client::request(addr, "POST", "/v1/chat/completions", Some(&chat_body("three", false))).await;
    assert_eq!(fake.requests()[0].id, 3, "ids keep counting after a clear");
}

#[tokio::test]
async fn bad_requests_get_openai_style_errors() {
    let fake = FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    let addr = fake.addr();
    let response = client::request(addr, "GET", "/v1/nothing", None).await;
    assert_eq!(response.status, 404);
    assert!(response.json()["error"]["message"].is_string());
    let response = client::request(addr, "GET", "/v1/chat/completions", None).await;
    assert_eq!(response.status, 405);
    let response = client::request(addr, "POST", "/v1/chat/completions", Some("{not json")).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["type"], "invalid_request_error");
    assert!(fake.requests().is_empty());

    let mut conn = Conn::connect(addr).await;
    tokio::io::AsyncWriteExt::write_all(&mut conn.stream, b"NONSENSE\r\n\r\n").await.unwrap();
    assert_eq!(conn.read_response().await.status, 400);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let fake = fake_with_reply("kept alive", 3).await;
    let mut conn = Conn::connect(fake.addr()).await;
    for stream in [true, false, true] {
        conn.send("POST", "/v1/chat/completions", Some(&chat_body("x", stream)), &[]).await;
        let response = conn.read_response().await;
        assert!(response.complete);
        if stream {
            assert_eq!(response.streamed_content(), "kept alive");
        } else {
            assert_eq!(response.json()["choices"][0]["message"]["content"], "kept alive");
        }
    }
    conn.send("GET", "/v1/models", None, &[]).await;
    assert_eq!(conn.read_response().await.status, 200);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|request| request.outcome == Outcome::Completed));
}

#[tokio::test]
async fn chunked_request_body_and_expect_continue() {
    let fake = fake_with_reply("ok", 8).await;
    let mut conn = Conn::connect(fake.addr()).await;
    let body = chat_body("chunked", false);
    let (first, second) = body.split_at(10);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: fake\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x};ext=1\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    conn.send_raw(request.as_bytes()).await;
    let interim = conn.read_response().await;
    assert_eq!(interim.status, 100);
    let response = conn.read_response().await;
    assert_eq!(response.json()["choices"][0]["message"]["content"], "ok");
    assert_eq!(fake.requests()[0].messages[0].content, "chunked");
}

#[tokio::test]
async fn zero_delay_streams_are_fast_and_many_run_at_once() {
    let fake = fake_with_reply(&"x".repeat(4000), 8).await;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let addr = fake.addr();
        tasks.spawn(async move {
            client::request(addr, "POST", "/v1/chat/completions", Some(&chat_body("go", true))).await
        });
    }
    while let Some(response) = tasks.join_next().await {
        let response = response.unwrap();
        assert!(response.complete);
        assert_eq!(response.streamed_content().len(), 4000);
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 64);
    assert!(requests.iter().all(|request| request.outcome == Outcome::Completed && request.chunks_sent == 500));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn fault_http500() {
    let fake = FakeLlm::start(FakeLlmConfig { fault: Fault::Http500, ..FakeLlmConfig::default() }).await.unwrap();
    for stream in [true, false] {
        let response =
            client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("x", stream))).await;
        assert_eq!(response.status, 500);
        assert_eq!(response.json()["error"]["type"], "server_error");
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|request| request.outcome == Outcome::Faulted));
    assert!(requests[0].ended_at_ms.is_some());
}

#[tokio::test]
async fn fault_http429_sends_retry_after() {
    let fake = FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    fake.set_fault(Fault::Http429 { retry_after_secs: 3 });
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("x", true))).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("3"));
    assert_eq!(response.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(fake.requests()[0].outcome, Outcome::Faulted);

    // Faults stay until replaced.
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("x", false))).await;
    assert_eq!(response.status, 429);
    fake.update_config(|config| config.fault = Fault::None);
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("x", false))).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn fault_disconnect_leaves_the_body_incomplete() {
    let fake = fake_with_reply("0123456789abcdef", 2).await;
    fake.set_fault(Fault::DisconnectAfterChunks { chunks: 3 });
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("x", true))).await;
    assert_eq!(response.status, 200);
    assert!(!response.complete, "the chunked body must not end cleanly");
    assert_eq!(response.streamed_content(), "012345");
    assert!(!response.events().iter().any(|event| event == b"[DONE]"));
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.outcome, Outcome::Faulted);
    assert_eq!(recorded.chunks_sent, 3);
}

#[tokio::test]
async fn fault_garbage_sends_a_broken_event_then_done() {
    let fake = fake_with_reply("0123456789", 5).await;
    fake.set_fault(Fault::GarbageAfterChunks { chunks: 1 });
    let response = client::request(fake.addr(), "POST", "/v1/chat/completions", Some(&chat_body("x", true))).await;
    assert!(response.complete);
    let events = response.events();
    assert_eq!(events.len(), 4, "role, one content chunk, garbage, done");
    assert!(events[2].starts_with(b"{not json"));
    assert!(std::str::from_utf8(&events[2]).is_err(), "garbage contains invalid UTF-8");
    assert_eq!(events[3], b"[DONE]");
    let content: serde_json::Value = serde_json::from_slice(&events[1]).unwrap();
    assert_eq!(content["choices"][0]["delta"]["content"], "01234");
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.outcome, Outcome::Faulted);
    assert_eq!(recorded.chunks_sent, 1);
}

#[tokio::test]
async fn fault_stall_before_first_byte_sends_nothing() {
    let fake =
        FakeLlm::start(FakeLlmConfig { fault: Fault::StallBeforeFirstByte, ..FakeLlmConfig::default() }).await.unwrap();
    for stream in [true, false] {
        let mut conn = Conn::connect(fake.addr()).await;
        conn.send("POST", "/v1/chat/completions", Some(&chat_body("x", stream)), &[]).await;
        let read = tokio::time::timeout(Duration::from_millis(150), conn.read_more()).await;
        assert!(read.is_err(), "no byte may arrive, got {:?}", String::from_utf8_lossy(&conn.buf));
    }
    let (_, held) = fake
        .wait_until(Duration::from_secs(2), |requests| {
            requests.len() == 2 && requests.iter().all(|request| request.outcome == Outcome::Cancelled)
        })
        .await;
    assert!(held, "dropped clients are recorded as cancelled");
}

#[tokio::test]
async fn config_serde_shapes() {
    let config: FakeLlmConfig = toml::from_str(
        "chunk_delay_ms = 5\nfault = { kind = \"disconnect_after_chunks\", chunks = 2 }\n[[rules]]\nwhen_contains = \"a\"\nreply = \"b\"\n",
    )
    .unwrap();
    assert_eq!(config.fault, Fault::DisconnectAfterChunks { chunks: 2 });
    assert_eq!(config.chunk_delay_ms, 5);
    assert_eq!(config.chunk_chars, 8);
    for (fault, expected) in [
        (Fault::None, json!({"kind": "none"})),
        (Fault::Http500, json!({"kind": "http500"})),
        (Fault::Http429 { retry_after_secs: 2 }, json!({"kind": "http429", "retry_after_secs": 2})),
        (Fault::StallBeforeFirstByte, json!({"kind": "stall_before_first_byte"})),
        (Fault::StallAfterChunks { chunks: 1 }, json!({"kind": "stall_after_chunks", "chunks": 1})),
        (Fault::DisconnectAfterChunks { chunks: 1 }, json!({"kind": "disconnect_after_chunks", "chunks": 1})),
        (Fault::GarbageAfterChunks { chunks: 1 }, json!({"kind": "garbage_after_chunks", "chunks": 1})),
    ] {
        assert_eq!(serde_json::to_value(&fault).unwrap(), expected);
        assert_eq!(serde_json::from_value::<Fault>(expected).unwrap(), fault);
    }
    let default: FakeLlmConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(default, FakeLlmConfig::default());
}

#[tokio::test]
async fn http_1_0_streams_end_by_closing() {
    let fake = fake_with_reply("old client", 4).await;
    let mut conn = Conn::connect(fake.addr()).await;
    let body = chat_body("x", true);
    let request = format!("POST /v1/chat/completions HTTP/1.0\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    conn.send_raw(request.as_bytes()).await;
    let response = conn.read_response().await;
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(response.body.starts_with(b"data: "), "no chunk framing");
    assert_eq!(response.streamed_content(), "old client");
    assert!(response.body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(fake.requests()[0].outcome, Outcome::Completed);
}
