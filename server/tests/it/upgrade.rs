//! Upgrades: a database made by the previous release (server/tests/fixtures, made by
//! `make-previous-release.sh`) opens in this one with nothing lost, on SQLite and PostgreSQL.
//! A schema change adds its checks here.

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, ServerOptions, db_tests, delta_text, sse_events};

async fn previous_release_database_upgrades_with_nothing_lost(backend: Backend) {
    let options = ServerOptions { previous_release: true, ..ServerOptions::default() };
    let Some(harness) = Harness::start_with(backend, options).await else { return };
    // Accounts: both users log in with the passwords they had; the admin is still an admin.
    let login = |email: &str, password: &str| {
        harness.http.post(harness.url("/auth/login")).json(&json!({"email": email, "password": password})).send()
    };
    let response = login("admin@fixture.test", "fixture-admin-password").await.unwrap();
    assert_eq!(response.status(), 200);
    let admin = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let response = login("user@fixture.test", "fixture-user-password").await.unwrap();
    assert_eq!(response.status(), 200);
    let user = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let me: Value =
        harness.http.get(harness.url("/me")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "admin");

    // Tools: the seeds and the pushed tool, at the versions they had.
    let tools: Value = harness.http.get(harness.url("/tools")).send().await.unwrap().json().await.unwrap();
    let slugs: Vec<&str> = tools.as_array().unwrap().iter().map(|tool| tool["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["explain-sql", "fix", "review", "shell", "what"]);
    assert!(tools.as_array().unwrap().iter().all(|tool| tool["version"] == 1));

    // The brew, the stored file's record and the usage row.
    let brews: Value =
        harness.http.get(harness.url("/assistants")).bearer_auth(&user).send().await.unwrap().json().await.unwrap();
    assert!(brews.to_string().contains("\"pirate\""), "{brews}");
    let files: Value =
        harness.http.get(harness.url("/files")).bearer_auth(&user).send().await.unwrap().json().await.unwrap();
    assert!(files.to_string().contains("calc.py"), "{files}");
    let usage = harness.query_strings("SELECT tool, status FROM usage").await;
    assert_eq!(usage, [[Some("what".to_owned()), Some("ok".to_owned())]]);

    // 0003 (prompt guard): every existing tool guards by default and has a canary of its own,
    // which reaches the model with the prompt.
    let guards = harness.query_strings("SELECT slug, guard, canary FROM global_tools ORDER BY slug").await;
    assert_eq!(guards.len(), 5);
    let mut canaries: Vec<String> = guards
        .iter()
        .map(|row| {
            assert_eq!(row[1].as_deref(), Some("block"), "{row:?}");
            let canary = row[2].clone().expect("a canary");
            assert_eq!(canary.len(), 16, "{canary}");
            canary
        })
        .collect();
    canaries.sort();
    canaries.dedup();
    assert_eq!(canaries.len(), 5, "one canary per tool");
    let response = harness.run(&user, "explain-sql", json!({"instructions": "SELECT 1"}), true).await;
    assert_eq!(response.status(), 200);
    assert!(!delta_text(&sse_events(response).await).is_empty());
    let sent = harness.fake.requests().last().unwrap().messages[0].content.clone();
    assert!(sent.starts_with("FIXTURE-PROMPT: you explain SQL queries"), "{sent}");
    let explain_canary = &guards[0][2].clone().unwrap();
    assert!(sent.contains(explain_canary.as_str()), "the canary reaches the model");
}

db_tests!(previous_release_database_upgrades_with_nothing_lost);
