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
    let files: Vec<Value> =
        harness.http.get(harness.url("/files")).bearer_auth(&user).send().await.unwrap().json().await.unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["name"], "calc.py");
    let usage = harness.query_strings("SELECT tool, status FROM usage").await;
    assert_eq!(usage, [[Some("what".to_owned()), Some("ok".to_owned())]]);
    // 0008 (usage.via): the runs before it came in by Aniate's own API.
    assert_eq!(harness.query_strings("SELECT via FROM usage").await, [[Some("aniate".to_owned())]]);

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

    // 0005 (private blobs): the stored file keeps naming the blob every account shared before,
    // at its old path, counted once; a new upload of the same content gets a blob of the
    // account's own, and deleting the old row removes the old blob and leaves the new one.
    const CALC: &str = "def add(a, b):\n    return a - b\n";
    let sha256 = "e1a894022d1a082987b87adecb623438c9e386d86b2b621cff4a5fe7fdf7edc8";
    let shared = harness.dir.path().join("data/files/e1").join(sha256);
    std::fs::create_dir_all(shared.parent().unwrap()).unwrap();
    std::fs::write(&shared, CALC).unwrap();
    assert_eq!(
        harness.query_strings("SELECT shared_blob, sha256 FROM files").await,
        [[Some("1".to_owned()), Some(sha256.to_owned())]]
    );
    assert_eq!(
        harness.query_strings("SELECT owner_id, sha256, refs FROM blobs").await,
        [[Some("0".to_owned()), Some(sha256.to_owned()), Some("1".to_owned())]]
    );
    let old_id = files[0]["id"].as_i64().unwrap();
    let content_of = |id: i64| harness.http.get(harness.url(&format!("/files/{id}/content"))).bearer_auth(&user).send();
    assert_eq!(content_of(old_id).await.unwrap().text().await.unwrap(), CALC);
    let uploaded: Value = harness
        .http
        .post(harness.url("/files?name=calc-again.py"))
        .bearer_auth(&user)
        .body(CALC)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_id = uploaded["id"].as_i64().unwrap();
    let owner =
        harness.query_strings("SELECT id FROM users WHERE email = 'user@fixture.test'").await[0][0].clone().unwrap();
    let own = harness.dir.path().join("data/files/e1").join(format!("{owner}-{sha256}"));
    assert!(own.is_file() && shared.is_file(), "a blob of the account's own, next to the shared one");
    let deleted =
        harness.http.delete(harness.url(&format!("/files/{old_id}"))).bearer_auth(&user).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!shared.exists() && own.is_file(), "the old shared blob goes with its last row");
    assert_eq!(content_of(new_id).await.unwrap().text().await.unwrap(), CALC);

    // 0006 (storage quota): the existing plans get their storage limits, and the file stored
    // before the upgrade counts against them.
    let plans = harness
        .query_strings(
            "SELECT name, max_stored_bytes, max_stored_files FROM plans WHERE name IN ('free', 'pro') ORDER BY name",
        )
        .await;
    let row = |name: &str, bytes: &str, files: &str| {
        vec![Some(name.to_owned()), Some(bytes.to_owned()), Some(files.to_owned())]
    };
    assert_eq!(plans, [row("free", "104857600", "1000"), row("pro", "1073741824", "10000")]);

    // 0009 (tool versions): every existing tool has its state as the first entry of its history,
    // prompt included, so a later change can be rolled back to it.
    let history =
        harness.query_strings("SELECT slug, version, author, system_prompt FROM tool_versions ORDER BY slug").await;
    assert_eq!(history.len(), 5, "{history:?}");
    assert!(history.iter().all(|row| row[1].as_deref() == Some("1") && row[2].as_deref() == Some("upgrade")));
    assert!(history[0][3].as_deref().unwrap().starts_with("FIXTURE-PROMPT: you explain SQL queries"));
    // 0011: a tool's newest version records the fallbacks the tool has (none, before 0010).
    let fallbacks = harness.query_strings("SELECT fallbacks FROM tool_versions").await;
    assert!(fallbacks.iter().all(|row| row[0].as_deref() == Some("[]")), "{fallbacks:?}");
    let changed = json!({"slug": "explain-sql", "name": "Explain SQL", "description": "d", "system_prompt": "new"});
    let response = harness.http.post(harness.url("/admin/tools")).bearer_auth(&admin).json(&changed).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let rolled = harness
        .http
        .post(harness.url("/admin/tools/explain-sql/rollback"))
        .bearer_auth(&admin)
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(rolled.json::<Value>().await.unwrap()["tool"]["version"], 3);
    let response = harness.run(&user, "explain-sql", json!({"instructions": "SELECT 2"}), true).await;
    sse_events(response).await;
    let sent = harness.fake.requests().last().unwrap().messages[0].content.clone();
    assert!(sent.starts_with("FIXTURE-PROMPT: you explain SQL queries"), "the pre-upgrade prompt is back: {sent}");
}

db_tests!(previous_release_database_upgrades_with_nothing_lost);
