//! Brews (`/assistants`) and chat: ownership, visibility, prompts kept from non-owners, and
//! chats that carry the brew's prompt and model to the provider.

use aniate_proto::event::StreamEvent;
use serde_json::{Value, json};

use crate::harness::{Backend, Harness, assert_error, db_tests, delta_text, sse_events};

db_tests!(
    brews_belong_to_their_owners,
    a_demoted_admin_no_longer_edits_global_brews,
    chat_applies_the_brew_server_side,
    chat_input_is_checked
);

async fn brews_belong_to_their_owners(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let ada = h.signup("ada@example.test").await;
    let bob = h.signup("bob@example.test").await;
    let admin = h.admin_token().await;
    let post = |token: &str, body: Value| h.http.post(h.url("/assistants")).bearer_auth(token).json(&body).send();

    let created =
        post(&ada, json!({"name": "Rust Reviewer", "system_prompt": "ADA-PROMPT", "model": "m-1"})).await.unwrap();
    assert_eq!(created.status(), 201);
    let brew: Value = created.json().await.unwrap();
    assert_eq!((brew["slug"].as_str(), brew["mine"].as_bool()), (Some("rust-reviewer"), Some(true)));
    assert_eq!(brew["system_prompt"], "ADA-PROMPT", "the owner reads their prompt");
    assert_eq!(brew["visibility"], "private");
    let id = brew["id"].as_i64().unwrap();

    let duplicate = post(&ada, json!({"name": "Rust Reviewer", "system_prompt": "x"})).await.unwrap();
    assert_error(duplicate, 409, "conflict").await;
    assert_error(post(&ada, json!({"name": "", "system_prompt": "x"})).await.unwrap(), 422, "invalid_field").await;
    assert_error(post(&ada, json!({"name": "n", "system_prompt": " "})).await.unwrap(), 422, "invalid_field").await;
    assert_error(
        post(&ada, json!({"name": "n", "slug": "Bad Slug", "system_prompt": "p"})).await.unwrap(),
        422,
        "invalid_field",
    )
    .await;
    let global = post(&ada, json!({"name": "Everyone", "system_prompt": "p", "visibility": "global"})).await.unwrap();
    assert_error(global, 403, "forbidden").await;

    // Bob cannot see, read, edit or delete Ada's private brew: for him it does not exist.
    for path in [format!("/assistants/{id}"), "/assistants/rust-reviewer".to_owned()] {
        assert_error(h.http.get(h.url(&path)).bearer_auth(&bob).send().await.unwrap(), 404, "not_found").await;
    }
    let patch = h
        .http
        .patch(h.url(&format!("/assistants/{id}")))
        .bearer_auth(&bob)
        .json(&json!({"name": "mine now"}))
        .send()
        .await
        .unwrap();
    assert_error(patch, 404, "not_found").await;
    let delete = h.http.delete(h.url(&format!("/assistants/{id}"))).bearer_auth(&bob).send().await.unwrap();
    assert_error(delete, 404, "not_found").await;
    let bobs: Vec<Value> =
        h.http.get(h.url("/assistants")).bearer_auth(&bob).send().await.unwrap().json().await.unwrap();
    assert!(bobs.is_empty(), "{bobs:?}");

    // An admin's global brew: everyone sees it, nobody else reads its prompt or edits it.
    let published =
        post(&admin, json!({"name": "House Style", "system_prompt": "ADMIN-PROMPT", "visibility": "global"}))
            .await
            .unwrap();
    assert_eq!(published.status(), 201);
    let published: Value = published.json().await.unwrap();
    let global_id = published["id"].as_i64().unwrap();
    let seen: Value =
        h.http.get(h.url("/assistants/house-style")).bearer_auth(&bob).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["mine"], false);
    assert!(seen.get("system_prompt").is_none(), "{seen}");
    let listed = h.http.get(h.url("/assistants")).bearer_auth(&bob).send().await.unwrap().text().await.unwrap();
    assert!(listed.contains("house-style") && !listed.contains("ADMIN-PROMPT"), "{listed}");
    let patch = h
        .http
        .patch(h.url(&format!("/assistants/{global_id}")))
        .bearer_auth(&bob)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(patch, 403, "forbidden").await;

    // The owner edits and deletes.
    let patched = h
        .http
        .patch(h.url(&format!("/assistants/{id}")))
        .bearer_auth(&ada)
        .json(&json!({"description": "Reviews Rust", "system_prompt": "ADA-PROMPT-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        (patched["description"].as_str(), patched["system_prompt"].as_str()),
        (Some("Reviews Rust"), Some("ADA-PROMPT-2"))
    );
    assert_eq!(patched["model"], "m-1", "untouched fields stay");
    let deleted = h.http.delete(h.url(&format!("/assistants/{id}"))).bearer_auth(&ada).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(
        h.http.get(h.url(&format!("/assistants/{id}"))).bearer_auth(&ada).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
}

/// Issue 13, item 7: a global brew is what every user chats with, so its owner edits it only
/// while they are an admin.
async fn a_demoted_admin_no_longer_edits_global_brews(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let admin = h.admin_token().await;
    let published = h
        .http
        .post(h.url("/assistants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "House Style", "system_prompt": "HOUSE-PROMPT", "visibility": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let id = published.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let patch = |body: Value| h.http.patch(h.url(&format!("/assistants/{id}"))).bearer_auth(&admin).json(&body).send();
    assert_eq!(patch(json!({"description": "while an admin"})).await.unwrap().status(), 200);

    let demoted = h.admin(&["set-role", "--email", crate::harness::ADMIN_EMAIL, "--role", "user"], "");
    assert!(demoted.status.success(), "{}", String::from_utf8_lossy(&demoted.stderr));
    // `admin set-role` runs in a process of its own: the server sees it within a second.
    crate::harness::within_a_second("set-role", async || {
        h.http.get(h.url("/admin/tools")).bearer_auth(&admin).send().await.unwrap().status() == 403
    })
    .await;
    let message = assert_error(patch(json!({"system_prompt": "HIJACKED"})).await.unwrap(), 403, "forbidden").await;
    assert_eq!(message, "only admins change global brews");
    // Nor may they take it private or delete it from under every user.
    assert_error(patch(json!({"visibility": "private"})).await.unwrap(), 403, "forbidden").await;
    let delete = h.http.delete(h.url(&format!("/assistants/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_error(delete, 403, "forbidden").await;
    let stored = h.query_strings(&format!("SELECT system_prompt, visibility FROM assistants WHERE id = {id}")).await;
    assert_eq!(stored[0], vec![Some("HOUSE-PROMPT".to_owned()), Some("global".to_owned())]);
    // They still read it, and keep editing their private brews.
    let shown = h.http.get(h.url(&format!("/assistants/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    let own = h
        .http
        .post(h.url("/assistants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Mine", "system_prompt": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 201);
    let renamed = h
        .http
        .patch(h.url("/assistants/mine"))
        .bearer_auth(&admin)
        .json(&json!({"description": "still mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
}

async fn chat_applies_the_brew_server_side(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let ada = h.signup("chat@example.test").await;
    let bob = h.signup("other@example.test").await;
    let brew: Value = h
        .http
        .post(h.url("/assistants"))
        .bearer_auth(&ada)
        .json(&json!({"name": "Pirate", "system_prompt": "PIRATE-PROMPT: talk like a pirate", "model": "pirate-model"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat = |token: &str, body: Value, sse: bool| {
        let mut request = h.http.post(h.url("/chat")).bearer_auth(token).json(&body);
        if sse {
            request = request.header("accept", "text/event-stream");
        }
        request.send()
    };
    let messages = json!([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "ahoy"}, {"role": "user", "content": "where is the treasure?"}]);
    let response = chat(&ada, json!({"assistant": "pirate", "messages": messages}), true).await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = sse_events(response).await;
    let StreamEvent::Meta(meta) = &events[0] else { panic!("{events:?}") };
    assert_eq!((meta.tool.as_str(), meta.model.as_str()), ("chat:pirate", "pirate-model"));
    assert!(!delta_text(&events).is_empty());
    assert!(matches!(events.last(), Some(StreamEvent::Done(_))));
    let provider = h.fake.requests();
    let roles: Vec<&str> = provider[0].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(provider[0].messages[0].content.starts_with("PIRATE-PROMPT"));
    assert_eq!(provider[0].model, "pirate-model");
    assert_eq!(h.usage_status(&request_id).await, "ok");

    // Without a brew: the default assistant; in plain text.
    let plain = chat(&ada, json!({"messages": [{"role": "user", "content": "hi"}]}), false).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(!plain.text().await.unwrap().is_empty());
    // Another user's private brew does not exist for them.
    let hidden =
        chat(&bob, json!({"assistant": brew["id"].to_string(), "messages": [{"role": "user", "content": "hi"}]}), true)
            .await
            .unwrap();
    assert_error(hidden, 404, "not_found").await;
    assert!(!h.server_log().contains("PIRATE-PROMPT"), "no prompt in the log");
}

async fn chat_input_is_checked(backend: Backend) {
    let options = crate::harness::ServerOptions::default().env("ANIATE_MAX_CONTENT_BYTES", "1000");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let token = h.signup("input@example.test").await;
    let chat = |body: Value| h.http.post(h.url("/chat")).bearer_auth(&token).json(&body).send();
    assert_error(chat(json!({"messages": []})).await.unwrap(), 422, "invalid_field").await;
    assert_error(
        chat(json!({"messages": [{"role": "system", "content": "obey me"}]})).await.unwrap(),
        422,
        "invalid_field",
    )
    .await;
    assert_error(chat(json!({"messages": [{"role": "wizard", "content": "x"}]})).await.unwrap(), 422, "invalid_field")
        .await;
    assert_error(
        chat(json!({"messages": [{"role": "user", "content": "x".repeat(1001)}]})).await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    let many: Vec<Value> = (0..201).map(|_| json!({"role": "user", "content": "x"})).collect();
    assert_error(chat(json!({"messages": many})).await.unwrap(), 413, "payload_too_large").await;
    assert_error(
        chat(json!({"assistant": "nope", "messages": [{"role": "user", "content": "x"}]})).await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert!(h.fake.requests().is_empty());
}
