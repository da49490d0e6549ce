//! Hostile input, field by field: SQL metacharacters in every string the API stores (stored and
//! served back verbatim, every table intact afterwards), path traversal in slugs and file
//! names (refused, nothing written outside the data dir), a very long single line, and bodies
//! that are not UTF-8 or not JSON (a 4xx JSON error, never a 5xx).

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, assert_error, db_tests};

db_tests!(sql_metacharacters_are_data_in_every_field, traversal_long_lines_and_bad_bytes_are_refused_cleanly);

/// Strings that break naively built SQL (quotes, comments, placeholders, NULs are refused
/// elsewhere), plus some non-ASCII.
const NASTY: &[&str] = &[
    "'; DROP TABLE users; --",
    "\" OR \"1\"=\"1",
    "Robert'); DELETE FROM api_tokens; --",
    "%' OR 1=1 --",
    "\\' \\\" $1 ?1 :name @p1",
    "x' UNION SELECT password_hash FROM users --",
    "ünïcödé 🦀 \u{202e}",
];

async fn count(h: &Harness, table: &str) -> i64 {
    let rows = h.query_strings(&format!("SELECT COUNT(*) FROM {table}")).await;
    rows[0][0].as_deref().unwrap().parse().unwrap()
}

async fn sql_metacharacters_are_data_in_every_field(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;

    // Accounts: an email with a quote is valid; a password can hold anything.
    let email = "o'brien+test@example.test";
    for password in NASTY {
        let email = format!("{}{email}", password.len());
        let signup = h.http.post(h.url("/auth/signup")).json(&json!({"email": email, "password": password})).send();
        assert_eq!(signup.await.unwrap().status(), 201, "{password}");
        let login = h.http.post(h.url("/auth/login")).json(&json!({"email": email, "password": password})).send();
        assert_eq!(login.await.unwrap().status(), 200, "{password}");
        let wrong = h.http.post(h.url("/auth/login")).json(&json!({"email": email, "password": "' OR '1'='1"})).send();
        assert_error(wrong.await.unwrap(), 401, "unauthorized").await;
    }
    for bad_email in NASTY {
        let signup = h.http.post(h.url("/auth/signup")).json(&json!({"email": bad_email, "password": "password-123"}));
        let response = signup.send().await.unwrap();
        assert!(response.status().is_client_error(), "{bad_email}: {}", response.status());
    }
    let token = h.signup("hostile@example.test").await;

    // Tools: every text field of a pushed tool comes back as it went in.
    for (n, text) in NASTY.iter().enumerate() {
        let slug = format!("nasty-{n}");
        let pushed = h
            .push_tool(
                &admin,
                json!({"slug": slug, "name": text, "description": text, "system_prompt": text, "model": text}),
            )
            .await;
        assert!(pushed.status().is_success(), "{text}: {}", pushed.status());
        let tool: Value = h.http.get(h.url(&format!("/tools/{slug}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!((tool["name"].as_str(), tool["description"].as_str()), (Some(*text), Some(*text)), "{tool}");
        assert_eq!(tool["model"].as_str(), Some(*text));
    }

    // Brews: name, description and prompt verbatim; a slug made from such a name is safe (two
    // of these names make the same slug, which is a 409, so the second one gets its own).
    for (n, text) in NASTY.iter().enumerate() {
        let mut body = json!({"name": text, "description": text, "system_prompt": text});
        if n == 3 {
            body["slug"] = json!("nasty-3");
        }
        let created = h.http.post(h.url("/assistants")).bearer_auth(&token).json(&body).send().await.unwrap();
        let status = created.status();
        let brew: Value = created.json().await.unwrap();
        assert_eq!(status, 201, "{text}: {brew}");
        let slug = brew["slug"].as_str().unwrap();
        assert!(slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{slug}");
        let id = brew["id"].as_i64().unwrap();
        let fetched: Value = h
            .http
            .get(h.url(&format!("/assistants/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for field in ["name", "description", "system_prompt"] {
            assert_eq!(fetched[field].as_str(), Some(*text), "{field}: {fetched}");
        }
    }

    // Files: a name full of quotes is a name.
    for text in NASTY {
        let uploaded = h
            .http
            .post(h.url("/files"))
            .query(&[("name", text)])
            .bearer_auth(&token)
            .body("print(1)\n")
            .send()
            .await
            .unwrap();
        if text.contains('\\') {
            // A backslash is a path separator somewhere: refused like `/`.
            assert_error(uploaded, 422, "invalid_field").await;
            continue;
        }
        assert_eq!(uploaded.status(), 201, "{text}");
        let file: Value = uploaded.json().await.unwrap();
        assert_eq!(file["name"].as_str(), Some(*text));
    }

    // Runs and chat: the text reaches the model verbatim; usage queries take no SQL.
    let all = NASTY.join("\n");
    let run = h.run(&token, "what", json!({"instructions": all, "content": all, "filename": NASTY[0]}), false).await;
    assert_eq!(run.status(), 200);
    let chat =
        h.http.post(h.url("/chat")).bearer_auth(&token).json(&json!({"messages": [{"role": "user", "content": all}]}));
    assert_eq!(chat.send().await.unwrap().status(), 200);
    let sent = h.fake.requests();
    assert!(sent.iter().filter(|request| request.messages.iter().any(|m| m.content.contains(&all))).count() >= 2);
    for query in NASTY {
        let usage = h.http.get(h.url("/admin/usage")).query(&[("from", query)]).bearer_auth(&admin).send();
        assert_error(usage.await.unwrap(), 422, "invalid_field").await;
    }

    // Every table is whole: 7 + 1 users and the admin, their tokens, the tools, brews, files.
    assert_eq!(count(&h, "users").await, NASTY.len() as i64 + 2);
    assert!(count(&h, "api_tokens").await >= NASTY.len() as i64 * 2 + 2);
    assert!(count(&h, "global_tools").await >= NASTY.len() as i64 + 4);
    assert_eq!(count(&h, "assistants").await, NASTY.len() as i64);
    assert_eq!(count(&h, "files").await, NASTY.len() as i64 - 1);
    assert!(!h.server_log().contains("panicked"));
}

async fn traversal_long_lines_and_bad_bytes_are_refused_cleanly(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let token = h.signup("traversal@example.test").await;

    // Slugs are [a-z0-9-]: traversal in a path or a pushed slug is a 404 or a 422.
    for path in ["/tools/..%2F..%2Fetc%2Fpasswd", "/tools/%2e%2e", "/tools/fix%00", "/tools/FIX'--"] {
        let status = h.http.get(h.url(path)).send().await.unwrap().status().as_u16();
        assert!(matches!(status, 400 | 404 | 422), "{path}: {status}");
    }
    for slug in ["../etc", "..", "a/b", "a\\b", ".hidden", "x'--", "ok\u{0}"] {
        let pushed = h.push_tool(&admin, json!({"slug": slug, "name": "n", "description": "d", "system_prompt": "p"}));
        assert_error(pushed.await, 422, "invalid_field").await;
        let run =
            h.http.post(h.url(&format!("/tool/{}", slug.replace('/', "%2F")))).bearer_auth(&token).json(&json!({}));
        let status = run.send().await.unwrap().status().as_u16();
        assert!(matches!(status, 400 | 404 | 422), "{slug}: {status}");
    }

    // File names are names: no path ever reaches the disk.
    for name in ["../../etc/passwd", "..", "a/b.py", "..\\..\\boot.ini", "tab\there", "/abs"] {
        let uploaded = h.http.post(h.url("/files")).query(&[("name", name)]).bearer_auth(&token).body("x").send();
        assert_error(uploaded.await.unwrap(), 422, "invalid_field").await;
    }
    let data = h.dir.path().join("data");
    for entry in std::fs::read_dir(h.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(["data", "it.db", "it.db-wal", "it.db-shm", "server.log"].contains(&name.as_str()), "wrote {name}");
    }
    assert!(!data.join("files").exists() || std::fs::read_dir(data.join("files")).unwrap().next().is_none());

    // One very long line (512 KiB, under the 1 MiB limit) goes through whole.
    let line = "x = 1; ".repeat(512 * 1024 / 7);
    let run = h.run(&token, "what", json!({"content": line}), false).await;
    assert_eq!(run.status(), 200);
    assert!(h.fake.requests().last().unwrap().messages[1].content.contains(&line));

    // Bodies that are not UTF-8, not JSON, or JSON of the wrong shape: 4xx, with a JSON error.
    let bodies: [&[u8]; 5] = [b"{\"email\": \"\xff\xfe\", \"password\": \"x\"}", b"\xff\xff\xff", b"{", b"[]", b"null"];
    for body in bodies {
        for path in ["/auth/signup", "/assistants", "/chat", "/tool/what"] {
            let response = h
                .http
                .post(h.url(path))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!((400..500).contains(&status), "{path} {body:?}: {status}");
            let error: Value = response.json().await.unwrap_or_else(|_| panic!("{path} {body:?}: not JSON"));
            assert!(error["error"]["code"].is_string(), "{error}");
        }
    }
    // Invalid UTF-8 in a file is stored as bytes, but a tool cannot run on it.
    let blob = h.http.post(h.url("/files")).query(&[("name", "blob.bin")]).bearer_auth(&token).body(vec![0xffu8, 0xfe]);
    let blob: Value = blob.send().await.unwrap().json().await.unwrap();
    assert_error(h.run(&token, "what", json!({"file_id": blob["id"]}), false).await, 422, "invalid_field").await;
    assert!(!h.server_log().contains("panicked"));
}
