//! Usage reports, plans, per-minute limits and monthly quotas; Redis-shared limits across two
//! replicas on one PostgreSQL database; failing open when Redis goes away.

use std::{path::Path, time::Duration};

use aniate_testkit::TestProcess;
use serde_json::{Value, json};

use crate::harness::{Backend, Harness, ServerOptions, assert_error, db_tests, postgres_url, redis_url, unique_prefix};

db_tests!(
    usage_is_reported_by_tool_and_day,
    per_minute_limit_and_monthly_quota,
    admin_usage_and_plans,
    admin_usage_csv_carries_no_formulas,
    parallel_runs_cannot_overshoot_the_monthly_quota,
    a_user_over_quota_costs_the_provider_at_most_one_cancelled_call
);

async fn run_ok(h: &Harness, token: &str, base: &str, slug: &str) {
    let response = h
        .http
        .post(format!("{base}/tool/{slug}"))
        .bearer_auth(token)
        .json(&json!({"instructions": "hi", "content": "x = 1\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.text().await.unwrap();
}

/// `POST {base}/tool/what` as `token`, for any replica.
async fn post_what(h: &Harness, base: &str, token: &str, instructions: &str) -> reqwest::Response {
    h.http
        .post(format!("{base}/tool/what"))
        .bearer_auth(token)
        .json(&json!({"instructions": instructions}))
        .send()
        .await
        .unwrap()
}

async fn usage_of(h: &Harness, base: &str, token: &str) -> Value {
    // Usage rows are written just after the answer; give them a moment.
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.http.get(format!("{base}/usage")).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

async fn usage_is_reported_by_tool_and_day(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("usage@example.test").await;
    for slug in ["what", "what", "fix"] {
        run_ok(&h, &token, &h.base, slug).await;
    }
    let chat = h
        .http
        .post(h.url("/chat"))
        .bearer_auth(&token)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    chat.text().await.unwrap();
    let usage = usage_of(&h, &h.base, &token).await;
    assert_eq!(usage["plan"], "free");
    assert_eq!(usage["totals"]["requests"], 4);
    let by_tool: Vec<(String, u64)> = usage["by_tool"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tool"].as_str().unwrap().to_owned(), t["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!(by_tool, [("chat".to_owned(), 1), ("fix".to_owned(), 1), ("what".to_owned(), 2)]);
    assert_eq!(usage["by_day"].as_array().unwrap().len(), 1);
    assert_eq!(usage["by_day"][0]["day"].as_str().unwrap().len(), 10);
    let used = usage["tokens_used"].as_u64().unwrap();
    assert!(used > 0);
    assert_eq!(usage["tokens_left"].as_u64().unwrap(), usage["tokens_per_month"].as_u64().unwrap() - used);
    assert!(usage["resets_at"].as_str().unwrap().ends_with("-01T00:00:00Z"));
}

async fn per_minute_limit_and_monthly_quota(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_RATE_LIMIT_PER_MIN", "3");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let token = h.signup("limited@example.test").await;
    for _ in 0..3 {
        run_ok(&h, &token, &h.base, "what").await;
    }
    let limited = h.run(&token, "what", json!({"instructions": "again"}), false).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let message = assert_error(limited, 429, "rate_limited").await;
    assert!(message.contains("3 requests a minute"), "{message}");
    let other = h.signup("free-rider@example.test").await;
    run_ok(&h, &other, &h.base, "what").await;

    // A plan with a tiny monthly quota: the first answer uses it up.
    let defined =
        h.admin(&["define-plan", "--name", "tiny", "--requests-per-minute", "100", "--tokens-per-month", "10"], "");
    assert!(defined.status.success(), "{}", String::from_utf8_lossy(&defined.stderr));
    let plans = h.query_strings("SELECT requests_per_minute, tokens_per_month FROM plans WHERE name = 'tiny'").await;
    assert_eq!(plans, vec![vec![Some("100".to_owned()), Some("10".to_owned())]]);
    let bad = h.admin(
        &["define-plan", "--name", "x'; DROP TABLE plans; --", "--requests-per-minute", "1", "--tokens-per-month", "1"],
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a plan name"));
    let output = h.admin(&["set-plan", "--email", "free-rider@example.test", "--plan", "tiny"], "");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let unknown = h.admin(&["set-plan", "--email", "free-rider@example.test", "--plan", "platinum"], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown plan `platinum`"));
    // The plan cache lives 10 s; a fresh replica sees the new plan at once, and the tokens the
    // user already spent this month are over the tiny quota.
    let (_replica, base) = h.extra_server("replica", &[]);
    let over = post_what(&h, &base, &other, "x").await;
    assert!(over.headers().contains_key("retry-after"));
    let message = assert_error(over, 429, "rate_limited").await;
    assert!(message.contains("tiny") && message.contains("resets at"), "{message}");
    let metrics = h.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aniate_rate_limited_total{tool=\"what\",status=\"monthly_tokens\"} 1"), "{metrics}");
}

async fn admin_usage_and_plans(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let user = h.signup("billed@example.test").await;
    run_ok(&h, &user, &h.base, "what").await;
    run_ok(&h, &user, &h.base, "fix").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let rows: Vec<Value> =
        h.http.get(h.url("/admin/usage")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["email"] == "billed@example.test" && r["requests"] == 1));
    assert_error(h.http.get(h.url("/admin/usage")).bearer_auth(&user).send().await.unwrap(), 403, "forbidden").await;
    let bad = h.http.get(h.url("/admin/usage?from=yesterday")).bearer_auth(&admin).send().await.unwrap();
    assert_error(bad, 422, "invalid_field").await;
    let csv = h.admin(&["usage", "--csv"], "");
    let csv = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "email,plan,tool,requests,prompt_tokens,completion_tokens,blocked,provider,model,cost_usd,unpriced,via"
    );
    assert!(lines[1..].iter().all(|line| line.ends_with(",aniate")), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("billed@example.test,free,fix,1,"), "{csv}");
    let future = h.admin(&["usage", "--from", "2999-01-01"], "");
    assert_eq!(String::from_utf8(future.stdout).unwrap().lines().count(), 1, "only the header");
    let plans = String::from_utf8(h.admin(&["plans"], "").stdout).unwrap();
    assert!(plans.contains("free") && plans.contains("pro"), "{plans}");
}

/// Issue 13, item 11: an email is chosen by whoever signs up, and a spreadsheet runs a cell
/// that starts with `=`, `+`, `-` or `@`; `admin usage --csv` shows such cells as text.
async fn admin_usage_csv_carries_no_formulas(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let emails = ["=hyperlink(evil)@x.test", "+sum@x.test", "-cmd@x.test", "plain@x.test"];
    for email in emails {
        let token = h.signup(email).await;
        run_ok(&h, &token, &h.base, "what").await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let csv = h.admin(&["usage", "--csv"], "");
    assert!(csv.status.success(), "{}", String::from_utf8_lossy(&csv.stderr));
    let csv = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), emails.len(), "{csv}");
    for line in &lines {
        assert!(!line.starts_with(['=', '+', '-', '@', '\t', '\r']), "a formula cell: {line}");
    }
    for email in &emails[..3] {
        assert!(lines.iter().any(|line| line.starts_with(&format!("'{email},free,what,1,"))), "{email} in\n{csv}");
    }
    assert!(lines.iter().any(|line| line.starts_with("plain@x.test,free,what,1,")), "{csv}");
}

/// Issue 13, item 2: 20 parallel runs on two server processes sharing one database, on a
/// 5,000-token plan, each costing about 2,000 tokens. Before runs reserved their tokens, all 20
/// ran (the quota was checked as `used >= limit`). Now the monthly total stays within the plan
/// plus one request's cap (the documented largest overshoot), and the rest are refused with 429.
async fn parallel_runs_cannot_overshoot_the_monthly_quota(backend: Backend) {
    const PLAN_TOKENS: u64 = 5_000;
    // `what` answers text: `max_tokens` 2,048; the content is about 2,000 tokens at 4 chars each.
    const ONE_REQUEST_CAP: u64 = 2_048 + 2_500;
    let Some(h) = Harness::start(backend).await else { return };
    let (_replica, replica) = h.extra_server("replica", &[]);
    let token = h.signup("parallel@example.test").await;
    let defined = h.admin(
        &["define-plan", "--name", "parallel", "--requests-per-minute", "1000", "--tokens-per-month", "5000"],
        "",
    );
    assert!(defined.status.success(), "{}", String::from_utf8_lossy(&defined.stderr));
    let set = h.admin(&["set-plan", "--email", "parallel@example.test", "--plan", "parallel"], "");
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let content = "x = 1\n".repeat(1_350);
    let runs = (0..20).map(|n| {
        let base = if n % 2 == 0 { h.base.clone() } else { replica.clone() };
        let request = h
            .http
            .post(format!("{base}/tool/what"))
            .bearer_auth(&token)
            .json(&json!({"instructions": "explain", "content": content}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            (status, body)
        }
    });
    let outcomes = futures_util::future::join_all(runs).await;
    let served = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<&String> = outcomes.iter().filter(|(status, _)| *status == 429).map(|(_, body)| body).collect();
    assert_eq!(served + refused.len(), 20, "{outcomes:?}");
    assert!(served >= 1, "the first run fits the plan: {outcomes:?}");
    assert!(refused.len() >= 15, "most runs must be refused: {outcomes:?}");
    assert!(
        refused[0].contains("parallel plan has") && refused[0].contains("of its 5000 tokens left"),
        "{}",
        refused[0]
    );
    // Every run's usage row is settled (none left `running`), and the month's total is within
    // the documented overshoot.
    let mut total = 0;
    for _ in 0..200 {
        let rows = h
            .query_strings(
                "SELECT status, prompt_tokens + completion_tokens FROM usage WHERE user_id = \
                 (SELECT id FROM users WHERE email = 'parallel@example.test')",
            )
            .await;
        if rows.iter().all(|row| row[0].as_deref() != Some("running")) {
            assert_eq!(rows.len(), served, "one usage row per run served: {rows:?}");
            total = rows.iter().map(|row| row[1].as_deref().unwrap().parse::<u64>().unwrap()).sum::<u64>();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(total > 0, "the served runs were recorded");
    assert!(total <= PLAN_TOKENS + ONE_REQUEST_CAP, "{total} tokens on a {PLAN_TOKENS}-token plan");
    // The provider was told each answer's cap, and only the runs served reached it, but for at
    // most one per replica whose reservation overlapped its provider call and was refused (its
    // call cancelled; `Limiter::overlap_reservation`).
    let sent = h.fake.requests();
    assert!((served..=served + 2).contains(&sent.len()), "{} provider calls for {served} runs served", sent.len());
    assert!(sent.iter().all(|request| request.max_tokens == Some(2_048)), "{sent:?}");
    // `/usage` reports the same total.
    let usage: Value = h.http.get(h.url("/usage")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["tokens_used"].as_u64().unwrap(), total);
}

/// Two replicas on one PostgreSQL database and one Redis: the registry, the rate limit and the
/// usage are shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_registry_limits_and_usage() {
    let (Some(_), Some(redis)) = (postgres_url(), redis_url()) else { return };
    let prefix = unique_prefix();
    let options = ServerOptions::default()
        .env("ANIATE_REDIS_URL", &redis)
        .env("ANIATE_REDIS_PREFIX", &prefix)
        .env("ANIATE_RATE_LIMIT_PER_MIN", "3");
    let h = Harness::start_with(Backend::Postgres, options).await.unwrap();
    let (_b, b) = h.extra_server(
        "b",
        &[("ANIATE_REDIS_URL", &redis), ("ANIATE_REDIS_PREFIX", &prefix), ("ANIATE_RATE_LIMIT_PER_MIN", "3")],
    );
    let a = h.base.clone();

    let admin = h.admin_token().await;
    let pushed = h
        .push_tool(&admin, json!({"slug": "shared", "name": "Shared", "description": "d", "system_prompt": "p"}))
        .await;
    assert_eq!(pushed.status(), 201);
    let on_b: Value = h.http.get(format!("{b}/tools/shared")).send().await.unwrap().json().await.unwrap();
    assert_eq!(on_b["slug"], "shared", "a tool pushed through A is listed by B");

    let token = h.signup("shared@example.test").await;
    run_ok(&h, &token, &a, "what").await;
    run_ok(&h, &token, &b, "what").await;
    run_ok(&h, &token, &a, "shared").await;
    let fourth = post_what(&h, &b, &token, "x").await;
    assert_error(fourth, 429, "rate_limited").await;

    let from_a = usage_of(&h, &a, &token).await;
    let from_b = usage_of(&h, &b, &token).await;
    assert_eq!(from_a["totals"]["requests"], 3, "usage from both replicas adds up");
    assert_eq!(from_a["totals"], from_b["totals"]);
    let metrics = h.http.get(format!("{b}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aniate_rate_limiter_redis_up 1"), "{metrics}");
}

/// Redis going away mid-run: requests are still served (each replica limits on its own), and
/// the log and metrics say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let port_arg = port.to_string();
    let mut redis = TestProcess::spawn(
        Path::new("redis-server"),
        &["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        &[],
        &dir.path().join("redis.log"),
    )
    .expect("redis-server is installed (Debian's redis-server package)");
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let options = ServerOptions::default().env("ANIATE_REDIS_URL", &url).env("ANIATE_RATE_LIMIT_PER_MIN", "1000");
    let h = Harness::start_with(Backend::Sqlite, options).await.unwrap();
    let token = h.signup("failopen@example.test").await;
    run_ok(&h, &token, &h.base, "what").await;
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aniate_rate_limiter_redis_up 1"), "{metrics}");

    redis.kill();
    for _ in 0..3 {
        run_ok(&h, &token, &h.base, "what").await;
    }
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aniate_rate_limiter_redis_up 0"), "{metrics}");
    assert!(!metrics.contains("aniate_rate_limiter_fallbacks_total 0"), "{metrics}");
    assert!(h.server_log().contains("failing open"), "the log says so");
}

/// Issue 15: a run's quota reservation overlaps its provider call (the first token waits for
/// the slower of the two), and a refused reservation cancels the call. A user over their quota
/// who keeps sending, one after another or many at once, reaches the provider at most once per
/// replica and minute; nothing of an answer reaches them, and no usage row is left.
async fn a_user_over_quota_costs_the_provider_at_most_one_cancelled_call(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("over@example.test").await;
    let defined =
        h.admin(&["define-plan", "--name", "spent", "--requests-per-minute", "1000", "--tokens-per-month", "10"], "");
    assert!(defined.status.success(), "{}", String::from_utf8_lossy(&defined.stderr));
    let set = h.admin(&["set-plan", "--email", "over@example.test", "--plan", "spent"], "");
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    // A fresh process, so that no plan is cached from before the change.
    let (_replica, base) = h.extra_server("replica", &[]);
    let before = h.fake.requests().len();
    for _ in 0..3 {
        let response = post_what(&h, &base, &token, "again").await;
        assert_error(response, 429, "rate_limited").await;
    }
    let burst = (0..8).map(|_| post_what(&h, &base, &token, "at once"));
    for response in futures_util::future::join_all(burst).await {
        assert_error(response, 429, "rate_limited").await;
    }
    let calls = h.fake.requests().len() - before;
    assert!(calls <= 1, "{calls} provider calls for 11 refused runs");
    let rows = h
        .query_strings(
            "SELECT status FROM usage WHERE user_id = (SELECT id FROM users WHERE email = 'over@example.test')",
        )
        .await;
    assert!(rows.is_empty(), "a refused run leaves no usage row: {rows:?}");
}
