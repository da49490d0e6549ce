//! The tool registry: listing, ETags, admin pushes and deactivation, the admin CLI.

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, assert_error, db_tests};

db_tests!(listing_and_etag, admin_push_update_deactivate, non_admins_are_refused, admin_cli_manages_tools_and_users);

async fn listing_and_etag(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let response = h.http.get(h.url("/tools")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let tools: Vec<Value> = response.json().await.unwrap();
    let slugs: Vec<&str> = tools.iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["fix", "review", "shell", "what"]);
    let kinds: Vec<&str> = tools.iter().map(|t| t["output"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["code", "findings", "command", "text"]);
    for tool in &tools {
        let keys: Vec<&String> = tool.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["description", "model", "name", "output", "requires_file", "slug", "updated_at", "version"]);
        assert_eq!(tool["model"], "llama-3.1-8b-instant");
    }

    let not_modified = h.http.get(h.url("/tools")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"].to_str().unwrap(), etag);
    assert!(not_modified.bytes().await.unwrap().is_empty());

    let one: Value = h.http.get(h.url("/tools/fix")).send().await.unwrap().json().await.unwrap();
    assert_eq!(one, tools[0]);
    for missing in ["/tools/nope", "/tools/..%2F..%2Fetc", "/tools/FIX"] {
        assert_error(h.http.get(h.url(missing)).send().await.unwrap(), 404, "not_found").await;
    }

    // A change to the registry changes the ETag.
    let admin = h.admin_token().await;
    let pushed = h
        .push_tool(&admin, json!({"slug": "sql", "name": "SQL", "description": "Explain SQL", "system_prompt": "p"}))
        .await;
    assert_eq!(pushed.status(), 201);
    let after = h.http.get(h.url("/tools")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_ne!(after.headers()["etag"].to_str().unwrap(), etag);
}

async fn admin_push_update_deactivate(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let user = h.signup("user@example.test").await;
    let tool = json!({
        "slug": "haiku", "name": "Haiku", "description": "Answers in a haiku",
        "system_prompt": "Answer as a haiku.", "output": "text", "model": "test-model-x"
    });

    let created = h.push_tool(&admin, tool.clone()).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["outcome"], "created");
    assert_eq!(created["tool"]["version"], 1);
    assert!(created["tool"].get("system_prompt").is_none());

    let listed: Vec<Value> = h.http.get(h.url("/tools")).send().await.unwrap().json().await.unwrap();
    assert!(listed.iter().any(|t| t["slug"] == "haiku" && t["model"] == "test-model-x"));
    let run = h.run(&user, "haiku", json!({"instructions": "autumn"}), false).await;
    assert_eq!(run.status(), 200);
    assert!(!run.text().await.unwrap().is_empty());

    // Pushing the same tool again changes nothing, not even the version.
    let same: Value = h.push_tool(&admin, tool.clone()).await.json().await.unwrap();
    assert_eq!((same["outcome"].as_str(), same["tool"]["version"].as_i64()), (Some("unchanged"), Some(1)));

    // A real change bumps the version; fields left out keep their values.
    let mut changed = tool.clone();
    changed["description"] = json!("Answers in a haiku, 5-7-5");
    changed.as_object_mut().unwrap().remove("model");
    let updated = h.push_tool(&admin, changed).await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["outcome"], "updated");
    assert_eq!(updated["tool"]["version"], 2);
    assert_eq!(updated["tool"]["model"], "test-model-x");

    let deleted = h.http.delete(h.url("/admin/tools/haiku")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let listed: Vec<Value> = h.http.get(h.url("/tools")).send().await.unwrap().json().await.unwrap();
    assert!(!listed.iter().any(|t| t["slug"] == "haiku"));
    assert_error(h.http.get(h.url("/tools/haiku")).send().await.unwrap(), 404, "not_found").await;
    assert_error(h.run(&user, "haiku", json!({"instructions": "x"}), false).await, 404, "not_found").await;
    let again = h.http.delete(h.url("/admin/tools/nope")).bearer_auth(&admin).send().await.unwrap();
    assert_error(again, 404, "not_found").await;

    // The admin listing still shows it, inactive, with the bumped version.
    let all: Vec<Value> =
        h.http.get(h.url("/admin/tools")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let haiku = all.iter().find(|t| t["slug"] == "haiku").unwrap();
    assert_eq!((haiku["active"].as_bool(), haiku["version"].as_i64()), (Some(false), Some(3)));

    // Reactivating through a push brings it back.
    let mut revived = tool.clone();
    revived["active"] = json!(true);
    let revived: Value = h.push_tool(&admin, revived).await.json().await.unwrap();
    assert_eq!(revived["tool"]["version"], 4);
    assert_eq!(h.http.get(h.url("/tools/haiku")).send().await.unwrap().status(), 200);

    // Invalid pushes are 422 and name the field.
    for (bad, needle) in [
        (json!({"slug": "Bad Slug", "name": "n", "description": "d", "system_prompt": "p"}), "slug"),
        (json!({"slug": "../x", "name": "n", "description": "d", "system_prompt": "p"}), "slug"),
        (json!({"slug": "ok", "name": "", "description": "d", "system_prompt": "p"}), "name"),
        (json!({"slug": "ok", "name": "n", "description": "d", "system_prompt": "  "}), "system_prompt"),
        (json!({"slug": "ok", "name": "n", "description": "d"}), "system_prompt"),
        (json!({"slug": "ok", "name": "n", "description": "d", "system_prompt": "p", "output": "xml"}), "variant"),
    ] {
        let message = assert_error(h.push_tool(&admin, bad).await, 422, "invalid_field").await;
        assert!(message.contains(needle), "{message}");
    }
}

async fn non_admins_are_refused(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let user = h.signup("plain@example.test").await;
    let tool = json!({"slug": "x", "name": "X", "description": "d", "system_prompt": "p"});
    assert_error(h.push_tool(&user, tool.clone()).await, 403, "forbidden").await;
    let response = h.http.post(h.url("/admin/tools")).json(&tool).send().await.unwrap();
    assert_error(response, 401, "unauthorized").await;
    let response = h.http.delete(h.url("/admin/tools/fix")).bearer_auth(&user).send().await.unwrap();
    assert_error(response, 403, "forbidden").await;
    let response = h.http.get(h.url("/admin/tools")).bearer_auth(&user).send().await.unwrap();
    assert_error(response, 403, "forbidden").await;
    assert_eq!(h.http.get(h.url("/tools/fix")).send().await.unwrap().status(), 200, "fix is still there");
}

async fn admin_cli_manages_tools_and_users(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let file = h.dir.path().join("sql.toml");
    std::fs::write(
        &file,
        "slug = \"sql\"\nname = \"SQL\"\ndescription = \"Explain a SQL query\"\noutput = \"text\"\nsystem_prompt = \"\"\"\nExplain SQL.\n\"\"\"\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let push = h.admin(&["tools", "push", file_arg], "");
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    assert_eq!(String::from_utf8_lossy(&push.stdout).trim(), "created sql (version 1)");
    let again = h.admin(&["tools", "push", file_arg], "");
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "unchanged sql (version 1)");

    // The running server sees what the CLI wrote.
    let tool: Value = h.http.get(h.url("/tools/sql")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tool["description"], "Explain a SQL query");

    let list = h.admin(&["tools", "list", "--json"], "");
    let rows: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|row| row.get("system_prompt").is_none() && row.get("canary").is_none()));
    assert!(rows.iter().all(|row| row["guard"] == "block"), "the guard is on by default");

    // The prompt guard is set in the tool file, like everything else about a tool.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("guard = \"log\"\n{text}")).unwrap();
    let push = h.admin(&["tools", "push", file_arg], "");
    assert_eq!(String::from_utf8_lossy(&push.stdout).trim(), "updated sql (version 2)");
    let list = String::from_utf8(h.admin(&["tools", "list"], "").stdout).unwrap();
    let line = list.lines().find(|line| line.starts_with("sql ")).unwrap();
    assert!(line.split_whitespace().any(|cell| cell == "log"), "{list}");
    std::fs::write(&file, format!("guard = \"maybe\"\n{text}")).unwrap();
    let push = h.admin(&["tools", "push", file_arg], "");
    assert_eq!(push.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&push.stderr).contains("guard"), "{}", String::from_utf8_lossy(&push.stderr));
    std::fs::write(&file, text).unwrap();

    let deactivate = h.admin(&["tools", "deactivate", "sql"], "");
    assert!(deactivate.status.success());
    // `ant-server admin` is a process of its own: the server sees its changes within a second.
    crate::harness::within_a_second("deactivate", async || {
        h.http.get(h.url("/tools/sql")).send().await.unwrap().status() == 404
    })
    .await;

    // Errors: a clear message and exit 1, never a panic.
    std::fs::write(&file, "slug = \"Bad\"\nname = \"n\"\ndescription = \"d\"\nsystem_prompt = \"p\"\n").unwrap();
    for (args, stdin, needle) in [
        (vec!["tools", "push", file_arg], "", "invalid slug"),
        (vec!["tools", "push", "/nonexistent/t.toml"], "", "cannot read"),
        (vec!["tools", "deactivate", "nope"], "", "no tool `nope`"),
        (vec!["create-user", "--email", "x@y.z", "--password-stdin"], "short\n", "at least 10"),
        (vec!["create-user", "--email", "not-an-email", "--password-stdin"], "long-enough-1\n", "not a valid email"),
        (vec!["create-token", "--email", "ghost@y.z"], "", "no user"),
    ] {
        let output = h.admin(&args, stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    let created = h.admin(&["create-user", "--email", "Ops@Example.test", "--password-stdin"], "long-enough-1\n");
    assert!(created.status.success());
    let duplicate = h.admin(&["create-user", "--email", "ops@example.test", "--password-stdin"], "long-enough-1\n");
    assert_eq!(duplicate.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("exists already"));

    let token = h.admin(&["create-token", "--email", "ops@example.test", "--name", "ci"], "");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let me: Value = h.http.get(h.url("/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me, json!({"email": "ops@example.test", "role": "user", "plan": "free"}));
    let promoted = h.admin(&["set-role", "--email", "ops@example.test", "--role", "admin"], "");
    assert!(promoted.status.success());
    crate::harness::within_a_second("set-role", async || {
        let me: Value = h.http.get(h.url("/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        me["role"] == "admin"
    })
    .await;
}
