//! Issue 15: the run path serves tokens and tools from memory and settles usage in batches.
//! These tests hold what that must not cost: a change made by another replica or by
//! `ant-server admin` reaches a running server within a second, and a killed server loses no
//! run's row.

use aniate_proto::event::StreamEvent;
use serde_json::json;

use crate::harness::{Backend, Harness, db_tests, sse_events, within_a_second};

db_tests!(changes_made_elsewhere_reach_a_running_server_within_a_second, a_killed_server_loses_no_run);

async fn me_status(h: &Harness, base: &str, token: &str) -> u16 {
    h.http.get(format!("{base}/me")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

async fn what_version(h: &Harness, token: &str) -> i64 {
    let events = sse_events(h.run(token, "what", json!({"instructions": "hi"}), true).await).await;
    match events.first() {
        Some(StreamEvent::Meta(meta)) => meta.version,
        other => panic!("no meta event first: {other:?}"),
    }
}

async fn changes_made_elsewhere_reach_a_running_server_within_a_second(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let (_replica, replica) = h.extra_server("replica", &[]);
    let admin = h.admin_token().await;
    let user = h.signup("cached@example.test").await;
    let other = h.signup("other@example.test").await;
    // Each token is used once on the main server first, so that it is cached there.
    assert_eq!(me_status(&h, &h.base, &user).await, 200);
    assert_eq!(me_status(&h, &h.base, &other).await, 200);
    let version = what_version(&h, &user).await;

    // A logout on the replica.
    let logout = h.http.post(format!("{replica}/auth/logout")).bearer_auth(&other).send().await.unwrap();
    assert!(logout.status().is_success(), "{}", logout.status());
    within_a_second("a logout on a replica", async || me_status(&h, &h.base, &other).await == 401).await;

    // A tool pushed on the replica: the main server runs the new version.
    let tool = json!({"slug": "what", "name": "What", "description": "Answers questions, changed",
        "system_prompt": "You answer questions about code in one short paragraph, changed.", "output": "text"});
    let pushed = h.http.post(format!("{replica}/admin/tools")).bearer_auth(&admin).json(&tool).send().await.unwrap();
    assert_eq!(pushed.status(), 200, "{}", pushed.text().await.unwrap());
    within_a_second("a tool pushed on a replica", async || what_version(&h, &user).await == version + 1).await;

    // `ant-server admin` in a process of its own: disabling an account, demoting an admin.
    let disabled = h.admin(&["disable-user", "--email", "cached@example.test"], "");
    assert!(disabled.status.success(), "{}", String::from_utf8_lossy(&disabled.stderr));
    within_a_second("disable-user", async || me_status(&h, &h.base, &user).await == 403).await;
    let enabled = h.admin(&["enable-user", "--email", "cached@example.test"], "");
    assert!(enabled.status.success());
    within_a_second("enable-user", async || me_status(&h, &h.base, &user).await == 200).await;

    let admin_tools =
        async || h.http.get(h.url("/admin/tools")).bearer_auth(&admin).send().await.unwrap().status().as_u16();
    assert_eq!(admin_tools().await, 200);
    let demoted = h.admin(&["set-role", "--email", crate::harness::ADMIN_EMAIL, "--role", "user"], "");
    assert!(demoted.status.success(), "{}", String::from_utf8_lossy(&demoted.stderr));
    within_a_second("set-role", async || admin_tools().await == 403).await;
}

/// A SIGKILL loses no run: every run served has its usage row, settled or still `running` at
/// its reservation (the runs whose batch was not written when the server died).
async fn a_killed_server_loses_no_run(backend: Backend) {
    const RUNS: usize = 60;
    let Some(mut h) = Harness::start(backend).await else { return };
    let token = h.signup("killed@example.test").await;
    let defined = h.admin(
        &["define-plan", "--name", "busy", "--requests-per-minute", "1000", "--tokens-per-month", "10000000"],
        "",
    );
    assert!(defined.status.success(), "{}", String::from_utf8_lossy(&defined.stderr));
    let set = h.admin(&["set-plan", "--email", "killed@example.test", "--plan", "busy"], "");
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let runs = (0..RUNS).map(|_| {
        let response = h.run(&token, "what", json!({"instructions": "hi"}), false);
        async move {
            let response = response.await;
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(status, 200, "{body}");
            body
        }
    });
    futures_util::future::join_all(runs).await;
    h.server_mut().kill();

    let rows = h
        .query_strings(
            "SELECT status, prompt_tokens FROM usage WHERE user_id = (SELECT id FROM users WHERE email = 'killed@example.test')",
        )
        .await;
    assert_eq!(rows.len(), RUNS, "one row per run served: {rows:?}");
    for row in &rows {
        match row[0].as_deref() {
            Some("ok") => {}
            Some("running") => {
                let reserved: u64 = row[1].as_deref().unwrap().parse().unwrap();
                assert!(reserved > 2_000, "a running row holds its reservation (prompt + max_tokens): {row:?}");
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    let running = rows.iter().filter(|row| row[0].as_deref() == Some("running")).count();
    eprintln!("{running} of {RUNS} runs unsettled at the SIGKILL");
}
