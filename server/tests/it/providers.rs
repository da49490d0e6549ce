//! The provider catalogue (`ANIATE_PROVIDERS`): fallbacks before the first token, cooldowns,
//! prices and cost, and plans that limit brews' models. Two or three fake providers on
//! loopback; a refused connection is a port nobody listens on.

use std::time::Duration;

use aniate_proto::event::StreamEvent;
use aniate_testkit::{FakeLlm, FakeLlmConfig, Fault};
use serde_json::{Value, json};

use crate::harness::{Backend, Harness, SERVER_BIN, ServerOptions, assert_error, db_tests, delta_text, sse_events};

db_tests!(
    faults_before_the_first_token_fall_back,
    a_fault_after_the_first_token_does_not_fall_back,
    cooldown_opens_after_failures_and_closes_after_a_probe,
    every_provider_failing_gives_the_first_error_class,
    cost_is_computed_from_the_catalogue_and_shown_in_usage,
    a_brew_with_a_disallowed_model_is_refused,
    a_plans_cost_limit_is_reached_exactly_under_parallel_runs,
);

const FIRST_REPLY: &str = "answered by the first provider";
const SECOND_REPLY: &str = "answered by the second provider";

/// Prices of `second/m2`, in dollars per million tokens.
const M2_INPUT: f64 = 150.0;
const M2_OUTPUT: f64 = 600.0;

/// Two fakes (`first`, `second`), a `dead` provider on a port nobody listens on, and a server
/// whose catalogue names them.
struct Providers {
    h: Harness,
    first: FakeLlm,
    second: FakeLlm,
    admin: String,
}

fn fake(reply: &str) -> FakeLlmConfig {
    FakeLlmConfig { default_reply: Some(reply.to_owned()), chunk_chars: 6, ..Default::default() }
}

/// A loopback port with no listener: connections to it are refused.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn start(backend: Backend, first_extra: &str) -> Option<Providers> {
    let first = FakeLlm::start(fake(FIRST_REPLY)).await.unwrap();
    let second = FakeLlm::start(fake(SECOND_REPLY)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalogue = format!(
        r#"default = "first"

[providers.first]
base_url = "{first}"
api_key_env = "ANIATE_TEST_FIRST_KEY"
first_token_timeout_ms = 400
{first_extra}

[providers.second]
base_url = "{second}"
[providers.second.models."m2"]
input_usd_per_mtok = {M2_INPUT:.1}
output_usd_per_mtok = {M2_OUTPUT:.1}

[providers.second.models."long"]
input_usd_per_mtok = 0.0
output_usd_per_mtok = 1000.0

[providers.dead]
base_url = "http://127.0.0.1:{dead}/v1"
"#,
        first = first.base_url(),
        second = second.base_url(),
        dead = refused_port(),
    );
    let path = dir.path().join("providers.toml");
    std::fs::write(&path, catalogue).unwrap();
    let options = ServerOptions::default()
        .env("ANIATE_PROVIDERS", path.to_str().unwrap())
        .env("ANIATE_TEST_FIRST_KEY", "first-key");
    let h = Harness::start_with(backend, options).await?;
    // The catalogue was read at start; the file may go.
    drop(dir);
    let admin = h.admin_token().await;
    Some(Providers { h, first, second, admin })
}

impl Providers {
    async fn push_tool(&self, slug: &str, model: &str, fallbacks: &[&str]) {
        let tool = json!({
            "slug": slug, "name": slug, "description": "a tool", "system_prompt": "Answer briefly.",
            "model": model, "fallbacks": fallbacks,
        });
        let response = self.h.push_tool(&self.admin, tool).await;
        assert!(response.status().is_success(), "push {slug}: {}", response.text().await.unwrap());
    }

    /// Runs `slug` with SSE; the status, the events and the request id.
    async fn run(&self, token: &str, slug: &str) -> (u16, Vec<StreamEvent>, String) {
        let response = self.h.run(token, slug, json!({"instructions": "hello"}), true).await;
        let status = response.status().as_u16();
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let events = if status == 200 { sse_events(response).await } else { Vec::new() };
        (status, events, request_id)
    }

    /// The settled usage row of a request: provider, model, status, cost, priced.
    async fn usage_row(&self, request_id: &str) -> Vec<Option<String>> {
        self.h.usage_status(request_id).await;
        let rows = self
            .h
            .query_strings(&format!(
                "SELECT provider, model, status, cost_micro_usd, priced, prompt_tokens, completion_tokens \
                 FROM usage WHERE request_id = '{request_id}'"
            ))
            .await;
        assert_eq!(rows.len(), 1, "one usage row for {request_id}");
        rows.into_iter().next().unwrap()
    }

    async fn metrics(&self) -> String {
        self.h.http.get(self.h.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

fn meta(events: &[StreamEvent]) -> (String, String) {
    let StreamEvent::Meta(meta) = &events[0] else { panic!("first event is meta: {events:?}") };
    (meta.provider.clone().unwrap_or_default(), meta.model.clone())
}

async fn faults_before_the_first_token_fall_back(backend: Backend) {
    // High enough that these few faults never open a cooldown (that has its own test), except
    // the 429, whose Retry-After the router believes at once: it comes last.
    let Some(p) = start(backend, "cooldown_failures = 100").await else { return };
    let token = p.h.signup("ada@example.test").await;
    p.push_tool("ask", "first/m1", &["second/m2"]).await;
    p.push_tool("ask-dead", "dead/m0", &["second/m2"]).await;

    let faults = [
        ("500", "ask", Some(Fault::Http500)),
        ("stall before the first token", "ask", Some(Fault::StallBeforeFirstByte)),
        ("refused connection", "ask-dead", None),
        ("429 with Retry-After", "ask", Some(Fault::Http429 { retry_after_secs: 30 })),
    ];
    for (what, slug, fault) in faults {
        let before = p.first.requests().len();
        if let Some(fault) = fault.clone() {
            p.first.set_fault(fault);
        }
        let started = std::time::Instant::now();
        let (status, events, request_id) = p.run(&token, slug).await;
        assert_eq!(status, 200, "{what}: the run is answered");
        assert_eq!(meta(&events), ("second".to_owned(), "m2".to_owned()), "{what}: meta names the second");
        assert_eq!(delta_text(&events), SECOND_REPLY, "{what}");
        assert!(matches!(events.last(), Some(StreamEvent::Done(_))), "{what}: {events:?}");
        let row = p.usage_row(&request_id).await;
        assert_eq!(row[..3], [Some("second".into()), Some("m2".into()), Some("ok".into())], "{what}");
        if fault.is_some() {
            assert_eq!(p.first.requests().len(), before + 1, "{what}: the first provider was tried");
        }
        if matches!(fault, Some(Fault::StallBeforeFirstByte)) {
            // The first provider's own first-token timeout (400 ms), not the run's (30 s).
            assert!(started.elapsed() < Duration::from_secs(5), "{what}: took {:?}", started.elapsed());
        }
        p.first.set_fault(Fault::None);
    }
    // Every answer came from the second, with the model it was asked for.
    let models: Vec<String> = p.second.requests().iter().map(|r| r.model.clone()).collect();
    assert_eq!(models, ["m2"; 4]);

    let metrics = p.metrics().await;
    assert!(metrics.contains("aniate_provider_fallbacks_total{provider=\"first\",model=\"other\"} 3"), "{metrics}");
    assert!(metrics.contains("aniate_provider_fallbacks_total{provider=\"dead\",model=\"other\"} 1"), "{metrics}");
    assert!(metrics.contains("aniate_provider_requests_total{provider=\"second\",model=\"m2\"} 4"), "{metrics}");
    assert!(metrics.contains("aniate_provider_time_to_first_token_seconds_count{provider=\"second\"} 4"), "{metrics}");
}

async fn a_fault_after_the_first_token_does_not_fall_back(backend: Backend) {
    let Some(p) = start(backend, "").await else { return };
    let token = p.h.signup("ada@example.test").await;
    p.push_tool("ask", "first/m1", &["second/m2"]).await;
    p.first.set_fault(Fault::ErrorAfterChunks { chunks: 2 });

    let (status, events, request_id) = p.run(&token, "ask").await;
    assert_eq!(status, 200);
    assert_eq!(meta(&events), ("first".to_owned(), "m1".to_owned()));
    assert!(FIRST_REPLY.starts_with(&delta_text(&events)) && !delta_text(&events).is_empty(), "{events:?}");
    let Some(StreamEvent::Error(error)) = events.last() else { panic!("ends with an error event: {events:?}") };
    assert_eq!(error.code.to_string(), "provider_error");
    assert!(p.second.requests().is_empty(), "no switch once text went out");
    let row = p.usage_row(&request_id).await;
    assert_eq!(row[..3], [Some("first".into()), Some("m1".into()), Some("provider_error".into())]);
}

async fn cooldown_opens_after_failures_and_closes_after_a_probe(backend: Backend) {
    let Some(p) = start(backend, "cooldown_failures = 2\ncooldown_window_ms = 60000\ncooldown_ms = 700").await else {
        return;
    };
    let token = p.h.signup("ada@example.test").await;
    p.push_tool("ask", "first/m1", &["second/m2"]).await;
    p.first.set_fault(Fault::Http500);

    // Two failures within the window open the cooldown; both runs still get answers.
    for _ in 0..2 {
        let (status, events, _) = p.run(&token, "ask").await;
        assert_eq!(status, 200);
        assert_eq!(meta(&events).0, "second");
    }
    assert_eq!(p.first.requests().len(), 2);
    // Cooling down: skipped without a request.
    let (status, events, _) = p.run(&token, "ask").await;
    assert_eq!((status, meta(&events).0.as_str()), (200, "second"));
    assert_eq!(p.first.requests().len(), 2, "a cooling provider gets no request");
    assert!(p.metrics().await.contains("aniate_provider_cooldowns_total{provider=\"first\"} 1"));

    // After the cooldown one probe goes to the first; it succeeds, and the cooldown closes.
    p.first.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, events, request_id) = p.run(&token, "ask").await;
    assert_eq!((status, meta(&events).0.as_str()), (200, "first"), "the probe answers");
    assert_eq!(delta_text(&events), FIRST_REPLY);
    assert_eq!(p.usage_row(&request_id).await[0].as_deref(), Some("first"));
    let (_, events, _) = p.run(&token, "ask").await;
    assert_eq!(meta(&events).0, "first", "closed: the first answers again");
    assert_eq!(p.first.requests().len(), 4);

    // A failed probe opens the cooldown again at once.
    p.first.set_fault(Fault::Http500);
    for _ in 0..2 {
        p.run(&token, "ask").await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = p.first.requests().len();
    let (_, events, _) = p.run(&token, "ask").await;
    assert_eq!(meta(&events).0, "second");
    assert_eq!(p.first.requests().len(), before + 1, "the probe was sent");
    let (_, events, _) = p.run(&token, "ask").await;
    assert_eq!(meta(&events).0, "second");
    assert_eq!(p.first.requests().len(), before + 1, "one failed probe re-opened the cooldown");
}

async fn every_provider_failing_gives_the_first_error_class(backend: Backend) {
    let Some(p) = start(backend, "cooldown_failures = 100").await else { return };
    let token = p.h.signup("ada@example.test").await;
    p.push_tool("ask", "first/m1", &["second/m2", "dead/m0"]).await;

    // The first answers 500, the second 429, the third refuses: the first's class, 502.
    p.first.set_fault(Fault::Http500);
    p.second.set_fault(Fault::Http429 { retry_after_secs: 1 });
    let response = p.h.run(&token, "ask", json!({"instructions": "hello"}), true).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let message = assert_error(response, 502, "provider_error").await;
    for tried in ["first/m1", "second/m2", "dead/m0"] {
        assert!(message.contains(tried), "{message}");
    }
    let row = p.usage_row(&request_id).await;
    assert_eq!(row[..3], [Some("first".into()), Some("m1".into()), Some("provider_status".into())]);

    // The first stalls past its first-token timeout: 504, whatever the others said.
    p.first.set_fault(Fault::StallBeforeFirstByte);
    p.second.set_fault(Fault::Http500);
    let response = p.h.run(&token, "ask", json!({"instructions": "hello"}), true).await;
    let message = assert_error(response, 504, "provider_timeout").await;
    assert!(message.contains("dead/m0"), "{message}");

    // The first rate-limits: 429 with its Retry-After.
    p.first.set_fault(Fault::Http429 { retry_after_secs: 9 });
    let response = p.h.run(&token, "ask", json!({"instructions": "hello"}), true).await;
    assert_eq!(response.headers()["retry-after"], "9");
    let message = assert_error(response, 429, "rate_limited").await;
    assert!(message.contains("first/m1") && message.contains("second/m2"), "{message}");
}

async fn cost_is_computed_from_the_catalogue_and_shown_in_usage(backend: Backend) {
    let Some(p) = start(backend, "").await else { return };
    let token = p.h.signup("ada@example.test").await;
    p.push_tool("priced", "second/m2", &[]).await;
    p.push_tool("unpriced", "first/m1", &[]).await;

    let mut expected_cost = 0u64;
    for _ in 0..2 {
        let (status, events, request_id) = p.run(&token, "priced").await;
        assert_eq!(status, 200);
        let StreamEvent::Done(done) = events.last().unwrap() else { panic!("done: {events:?}") };
        let cost = (done.usage.prompt_tokens as f64 * M2_INPUT + done.usage.completion_tokens as f64 * M2_OUTPUT)
            .round() as u64;
        assert!(cost > 0);
        let row = p.usage_row(&request_id).await;
        assert_eq!(row[3], Some(cost.to_string()), "cost in micro-dollars from the catalogue");
        assert_eq!(row[4].as_deref(), Some("1"), "priced");
        expected_cost += cost;
    }
    let (_, _, request_id) = p.run(&token, "unpriced").await;
    let row = p.usage_row(&request_id).await;
    assert_eq!((row[3].as_deref(), row[4].as_deref()), (Some("0"), Some("0")), "unpriced: 0 and flagged");

    let usage: Value = p.h.http.get(p.h.url("/usage")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["totals"]["cost_micro_usd"], expected_cost, "{usage}");
    assert_eq!(usage["totals"]["unpriced"], 1, "{usage}");
    let by_tool = usage["by_tool"].as_array().unwrap();
    let priced = by_tool.iter().find(|t| t["tool"] == "priced").unwrap();
    assert_eq!(priced["cost_micro_usd"], expected_cost);
    let by_model = usage["by_model"].as_array().unwrap();
    let m2 = by_model.iter().find(|m| m["model"] == "m2").unwrap();
    assert_eq!((m2["provider"].as_str(), m2["requests"].as_u64()), (Some("second"), Some(2)));
    assert_eq!(m2["cost_micro_usd"], expected_cost);
    assert_eq!(usage["by_day"][0]["cost_micro_usd"], expected_cost, "{usage}");

    let rows: Value =
        p.h.http.get(p.h.url("/admin/usage")).bearer_auth(&p.admin).send().await.unwrap().json().await.unwrap();
    let rows = rows.as_array().unwrap();
    let priced = rows.iter().find(|r| r["tool"] == "priced").unwrap();
    assert_eq!((priced["provider"].as_str(), priced["model"].as_str()), (Some("second"), Some("m2")));
    assert_eq!((priced["cost_micro_usd"].as_u64(), priced["unpriced"].as_u64()), (Some(expected_cost), Some(0)));
    let unpriced = rows.iter().find(|r| r["tool"] == "unpriced").unwrap();
    assert_eq!(unpriced["unpriced"], 1, "unpriced runs are flagged: {unpriced}");

    let output = p.h.admin(&["usage", "--csv"], "");
    assert!(output.status.success());
    let csv = String::from_utf8(output.stdout).unwrap();
    assert!(
        csv.starts_with(
            "email,plan,tool,requests,prompt_tokens,completion_tokens,blocked,provider,model,cost_usd,unpriced,via\n"
        ),
        "{csv}"
    );
    let dollars = format!("{}.{:06}", expected_cost / 1_000_000, expected_cost % 1_000_000);
    let priced_line = csv.lines().find(|line| line.starts_with("ada@example.test,free,priced,2,")).expect(&csv);
    assert!(priced_line.ends_with(&format!(",0,second,m2,{dollars},0,aniate")), "{csv}");
    assert!(
        csv.lines().any(|line| line.contains(",unpriced,") && line.ends_with(",first,m1,0.000000,1,aniate")),
        "{csv}"
    );
    let table = String::from_utf8(p.h.admin(&["usage"], "").stdout).unwrap();
    assert!(table.contains("(unpriced)") && table.contains(&format!("${dollars}")), "{table}");
}

async fn a_brew_with_a_disallowed_model_is_refused(backend: Backend) {
    let Some(p) = start(backend, "").await else { return };
    let token = p.h.signup("ada@example.test").await;
    let output = p.h.admin(
        &[
            "define-plan",
            "--name",
            "small",
            "--requests-per-minute",
            "60",
            "--tokens-per-month",
            "100000",
            "--allowed-models",
            "second/*,llama-3.1-*",
        ],
        "",
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(p.h.admin(&["set-plan", "--email", "ada@example.test", "--plan", "small"], "").status.success());
    // A plan name the server's cache lacks is looked up at once.

    let create = |model: &str, fallbacks: &[&str]| {
        p.h.http
            .post(p.h.url("/assistants"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("brew {model}"), "system_prompt": "Be brief.", "model": model, "fallbacks": fallbacks}))
            .send()
    };
    let message = assert_error(create("gpt-4.5-preview", &[]).await.unwrap(), 422, "invalid_field").await;
    assert!(message.contains("gpt-4.5-preview") && message.contains("second/*, llama-3.1-*"), "{message}");
    let message = assert_error(create("second/m2", &["dead/m0"]).await.unwrap(), 422, "invalid_field").await;
    assert!(message.contains("dead/m0"), "{message}");

    // Allowed: by the provider's pattern, and a bare name by its own.
    let response = create("second/m2", &[]).await.unwrap();
    assert_eq!(response.status(), 201);
    let brew: Value = response.json().await.unwrap();
    let response = create("llama-3.1-8b-instant", &["second/m2"]).await.unwrap();
    assert_eq!(response.status(), 201);

    // The brew answers from its provider, named in meta.
    let response =
        p.h.http
            .post(p.h.url("/chat"))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .json(&json!({"assistant": brew["slug"], "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    assert_eq!(meta(&events), ("second".to_owned(), "m2".to_owned()));
}

#[test]
fn a_missing_api_key_variable_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("providers.toml");
    std::fs::write(
        &path,
        "[providers.groq]\nbase_url = \"https://api.groq.com/openai/v1\"\napi_key_env = \"ANIATE_TEST_NO_SUCH_KEY\"\n",
    )
    .unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let output = std::process::Command::new(SERVER_BIN)
        .args(["serve"])
        .env_clear()
        .env("ANIATE_PROVIDERS", &path)
        .env("ANIATE_DATABASE_URL", &db)
        .env("ANIATE_DATA_DIR", dir.path())
        .env("ANIATE_BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ANIATE_TEST_NO_SUCH_KEY") && stderr.contains("line 3"), "{stderr}");
    assert!(!dir.path().join("x.db").exists(), "stopped before touching the database");
}

/// 20 runs at once on a plan whose cost limit pays for exactly 5: each run reserves its most
/// possible cost (2,048 answer tokens at $1,000 a million = $2.048) and, with the fake answering
/// exactly 2,048 tokens, costs just that; so exactly 5 run, the rest are 429, and the month's
/// cost is the limit to the micro-dollar.
async fn a_plans_cost_limit_is_reached_exactly_under_parallel_runs(backend: Backend) {
    let Some(p) = start(backend, "").await else { return };
    let token = p.h.signup("ada@example.test").await;
    let output = p.h.admin(
        &[
            "define-plan",
            "--name",
            "capped",
            "--requests-per-minute",
            "1000",
            "--tokens-per-month",
            "100000000",
            "--cost-limit-usd",
            "10.24",
        ],
        "",
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(p.h.admin(&["set-plan", "--email", "ada@example.test", "--plan", "capped"], "").status.success());
    p.push_tool("long", "second/long", &[]).await;
    p.second.set_config(FakeLlmConfig { default_reply: Some("x".repeat(2048)), chunk_chars: 1, ..Default::default() });

    let runs = (0..20).map(|_| {
        let (h, token) = (&p.h, token.clone());
        async move {
            let response = h.run(&token, "long", json!({"instructions": "hi"}), false).await;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            (status, body)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let n_ok = results.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<&String> = results.iter().filter(|(status, _)| *status == 429).map(|(_, body)| body).collect();
    assert_eq!((n_ok, refused.len()), (5, 15), "{results:?}");
    assert!(refused.iter().all(|body| body.contains("cost limit")), "{refused:?}");

    // Settled: the month's cost is exactly the limit.
    let mut cost = 0;
    for _ in 0..100 {
        let usage: Value =
            p.h.http.get(p.h.url("/usage")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        cost = usage["totals"]["cost_micro_usd"].as_u64().unwrap();
        assert_eq!(usage["cost_limit_micro_usd"], 10_240_000);
        if usage["totals"]["requests"] == 5
            && !p.h.query_strings("SELECT id FROM usage WHERE status = 'running'").await.iter().any(|_| true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cost, 10_240_000);
    let response = p.h.run(&token, "long", json!({"instructions": "hi"}), true).await;
    let message = assert_error(response, 429, "rate_limited").await;
    assert!(message.contains("$10.240000") && message.contains("capped"), "{message}");
}
