//! Tool versions: every change is kept with who, when and why; admins list, read, diff and roll
//! back versions over the API and the admin CLI; a rollback is a new, higher version.

use serde_json::{Value, json};

use crate::harness::{ADMIN_EMAIL, Backend, Harness, assert_error, db_tests};

db_tests!(every_change_is_a_version_and_rollback_is_a_new_one, admin_cli_shows_history_diffs_and_rolls_back);

async fn versions(h: &Harness, token: &str, slug: &str) -> Vec<Value> {
    let response = h.http.get(h.url(&format!("/admin/tools/{slug}/versions"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn every_change_is_a_version_and_rollback_is_a_new_one(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let user = h.signup("user@example.test").await;
    let tool = json!({
        "slug": "haiku", "name": "Haiku", "description": "Answers in a haiku",
        "system_prompt": "PROMPT-ONE: answer as a haiku.", "message": "first cut",
        "fallbacks": ["backup/model-a"]
    });
    assert_eq!(h.push_tool(&admin, tool.clone()).await.status(), 201);
    let mut second = tool.clone();
    second["system_prompt"] = json!("PROMPT-TWO: answer as a limerick.");
    second["model"] = json!("test-model-2");
    second["fallbacks"] = json!(["backup/model-b", "backup/model-c"]);
    second.as_object_mut().unwrap().remove("message");
    let updated: Value = h.push_tool(&admin, second.clone()).await.json().await.unwrap();
    assert_eq!(updated["tool"]["version"], 2);
    // An unchanged push makes no version.
    assert_eq!(h.push_tool(&admin, second.clone()).await.json::<Value>().await.unwrap()["outcome"], "unchanged");

    let listed = versions(&h, &admin, "haiku").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!((listed[0]["version"].as_i64(), listed[1]["version"].as_i64()), (Some(2), Some(1)), "newest first");
    assert_eq!(listed[1]["message"], "first cut");
    assert_eq!(listed[0]["message"], "");
    assert_eq!(listed[0]["author"], ADMIN_EMAIL);
    assert_eq!(listed[0]["model"], "test-model-2");
    assert_eq!(listed[0]["fallbacks"], json!(["backup/model-b", "backup/model-c"]));
    assert_eq!(listed[1]["fallbacks"], json!(["backup/model-a"]));
    assert!(listed.iter().all(|v| v.get("system_prompt").is_none()), "the list has no prompts");
    assert!(!serde_json::to_string(&listed).unwrap().contains("PROMPT-"));

    // One version has its prompt, for admins only.
    let one: Value = h
        .http
        .get(h.url("/admin/tools/haiku/versions/1"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["system_prompt"], "PROMPT-ONE: answer as a haiku.");
    assert_eq!(one["version"], 1);
    for path in ["/admin/tools/haiku/versions", "/admin/tools/haiku/versions/1"] {
        let response = h.http.get(h.url(path)).bearer_auth(&user).send().await.unwrap();
        assert_error(response, 403, "forbidden").await;
    }
    let response =
        h.http.post(h.url("/admin/tools/haiku/rollback")).bearer_auth(&user).json(&json!({"version": 1})).send().await;
    assert_error(response.unwrap(), 403, "forbidden").await;

    // Roll back to 1: a new version 3 equal to 1, which runs with the first prompt.
    let rollback = |version: Value| {
        h.http.post(h.url("/admin/tools/haiku/rollback")).bearer_auth(&admin).json(&json!({"version": version})).send()
    };
    let rolled = rollback(json!(1)).await.unwrap();
    assert_eq!(rolled.status(), 200);
    let rolled: Value = rolled.json().await.unwrap();
    assert_eq!((rolled["outcome"].as_str(), rolled["tool"]["version"].as_i64()), (Some("updated"), Some(3)));
    assert!(rolled["tool"].get("system_prompt").is_none());
    let public: Value = h.http.get(h.url("/tools/haiku")).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["version"], 3, "clients see a newer version, never an older one");
    assert_ne!(public["model"], "test-model-2", "the model went back too");
    let tools: Value =
        h.http.get(h.url("/admin/tools")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let haiku = tools.as_array().unwrap().iter().find(|tool| tool["slug"] == "haiku").unwrap();
    assert_eq!(haiku["fallbacks"], json!(["backup/model-a"]), "the fallbacks went back too: {haiku}");
    let run = h.run(&user, "haiku", json!({"instructions": "autumn"}), false).await;
    assert_eq!(run.status(), 200);
    run.text().await.unwrap();
    let sent = h.fake.requests().last().unwrap().messages[0].content.clone();
    assert!(sent.starts_with("PROMPT-ONE"), "{sent}");
    let listed = versions(&h, &admin, "haiku").await;
    assert_eq!(listed[0]["version"], 3);
    assert_eq!(listed[0]["message"], "rollback to version 1");

    // Rolling back to the state the tool is in changes nothing.
    let same: Value = rollback(json!(3)).await.unwrap().json().await.unwrap();
    assert_eq!((same["outcome"].as_str(), same["tool"]["version"].as_i64()), (Some("unchanged"), Some(3)));

    // Deactivating is a version too, and a rollback past it reactivates.
    assert_eq!(h.http.delete(h.url("/admin/tools/haiku")).bearer_auth(&admin).send().await.unwrap().status(), 204);
    let listed = versions(&h, &admin, "haiku").await;
    assert_eq!((listed[0]["version"].as_i64(), listed[0]["active"].as_bool()), (Some(4), Some(false)));
    let revived = h
        .http
        .post(h.url("/admin/tools/haiku/rollback"))
        .bearer_auth(&admin)
        .json(&json!({"version": 2, "message": "back to the limerick"}))
        .send()
        .await
        .unwrap();
    let revived: Value = revived.json().await.unwrap();
    assert_eq!(revived["tool"]["version"], 5);
    assert_eq!(versions(&h, &admin, "haiku").await[0]["message"], "back to the limerick");
    assert_eq!(h.http.get(h.url("/tools/haiku")).send().await.unwrap().status(), 200);

    // Unknown tools and versions are 404; a bad body is 422; a multi-line message is refused.
    assert_error(rollback(json!(99)).await.unwrap(), 404, "not_found").await;
    assert_error(rollback(json!("one")).await.unwrap(), 422, "invalid_field").await;
    let response = h.http.get(h.url("/admin/tools/nope/versions")).bearer_auth(&admin).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    let response = h.http.get(h.url("/admin/tools/haiku/versions/99")).bearer_auth(&admin).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    let response = h.http.get(h.url("/admin/tools/haiku/versions/x")).bearer_auth(&admin).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    let mut bad = second.clone();
    bad["message"] = json!("two\nlines");
    let message = assert_error(h.push_tool(&admin, bad).await, 422, "invalid_field").await;
    assert!(message.contains("message"), "{message}");

    // The seed tools have their first version from the seed.
    let fix = versions(&h, &admin, "fix").await;
    assert_eq!((fix.len(), fix[0]["author"].as_str()), (1, Some("seed")));

    // Every stored version is in the database, with its prompt.
    let rows =
        h.query_strings("SELECT version, system_prompt FROM tool_versions WHERE slug = 'haiku' ORDER BY version").await;
    let prompts: Vec<&str> = rows.iter().map(|row| row[1].as_deref().unwrap()).collect();
    assert_eq!(prompts.len(), 5);
    assert_eq!(prompts[0], prompts[2]);
    assert_eq!(prompts[1], prompts[4]);
}

async fn admin_cli_shows_history_diffs_and_rolls_back(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let file = h.dir.path().join("sql.toml");
    let write = |prompt: &str| {
        std::fs::write(
            &file,
            format!("slug = \"sql\"\nname = \"SQL\"\ndescription = \"Explain SQL\"\nsystem_prompt = \"\"\"\n{prompt}\"\"\"\n"),
        )
        .unwrap()
    };
    let file_arg = file.to_str().unwrap();
    let stdout = |output: std::process::Output| {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    write("Explain SQL.\nBe brief.\n");
    assert_eq!(
        stdout(h.admin(&["tools", "push", file_arg, "--message", "first"], "")).trim(),
        "created sql (version 1)"
    );
    write("Explain SQL.\nBe thorough.\n");
    assert_eq!(
        stdout(h.admin(&["tools", "push", file_arg, "--message", "more detail"], "")).trim(),
        "updated sql (version 2)"
    );

    let history = stdout(h.admin(&["tools", "history", "sql"], ""));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(
        lines[1].trim_start().starts_with("2 ") && lines[1].contains("admin-cli") && lines[1].ends_with("more detail")
    );
    assert!(lines[2].trim_start().starts_with("1 ") && lines[2].ends_with("first"), "{history}");
    let json: Vec<Value> = serde_json::from_str(&stdout(h.admin(&["tools", "history", "sql", "--json"], ""))).unwrap();
    assert_eq!(json.len(), 2);
    assert!(json.iter().all(|v| v.get("system_prompt").is_none()));

    let diff = stdout(h.admin(&["tools", "diff", "sql", "1", "2"], ""));
    assert!(diff.starts_with("--- sql version 1 (admin-cli, "), "{diff}");
    assert!(diff.contains("-Be brief.\n+Be thorough.\n"), "{diff}");
    assert!(diff.contains(" Explain SQL.\n"), "{diff}");

    assert_eq!(
        stdout(h.admin(&["tools", "rollback", "sql", "1"], "")).trim(),
        "rolled back sql to version 1 as version 3"
    );
    let tool: Value = h.http.get(h.url("/tools/sql")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tool["version"], 3);
    assert!(stdout(h.admin(&["tools", "diff", "sql", "1", "3"], "")).ends_with("no difference\n"));
    assert!(stdout(h.admin(&["tools", "rollback", "sql", "3"], "")).starts_with("unchanged sql"));

    for (args, needle) in [
        (vec!["tools", "history", "nope"], "no tool `nope`"),
        (vec!["tools", "diff", "sql", "1", "9"], "no version 9 of tool `sql`"),
        (vec!["tools", "rollback", "sql", "9"], "no version 9 of tool `sql`"),
        (vec!["tools", "rollback", "nope", "1"], "no version 1 of tool `nope`"),
        (vec!["tools", "push", file_arg, "--message", "a\nb"], "--message"),
    ] {
        let output = h.admin(&args, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
