//! Signup, login, logout, `/me`, and how credentials are stored.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Backend, Harness, ServerOptions, assert_error, db_tests};

db_tests!(signup_login_logout_me, credentials_are_stored_hashed, closed_signup_is_refused);

async fn signup_login_logout_me(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let signup = |body: Value| h.http.post(h.url("/auth/signup")).json(&body).send();

    let created = signup(json!({"email": "  Grace@Example.TEST ", "password": "password-123"})).await.unwrap();
    assert_eq!(created.status(), 201);
    let first: Value = created.json().await.unwrap();
    let first = first["token"].as_str().unwrap().to_owned();
    assert!(first.starts_with("ant_"));
    let me: Value = h.http.get(h.url("/me")).bearer_auth(&first).send().await.unwrap().json().await.unwrap();
    assert_eq!(me, json!({"email": "grace@example.test", "role": "user", "plan": "free"}));

    let duplicate = signup(json!({"email": "grace@example.test", "password": "password-456"})).await.unwrap();
    assert_error(duplicate, 409, "conflict").await;
    assert_error(signup(json!({"email": "nope", "password": "password-123"})).await.unwrap(), 422, "invalid_field")
        .await;
    assert_error(signup(json!({"email": "a@b.c", "password": "short"})).await.unwrap(), 422, "invalid_field").await;
    assert_error(signup(json!({"email": "a@b.c"})).await.unwrap(), 422, "invalid_field").await;

    let login = |password: &str| {
        h.http.post(h.url("/auth/login")).json(&json!({"email": "GRACE@example.test", "password": password})).send()
    };
    let message = assert_error(login("wrong-password").await.unwrap(), 401, "unauthorized").await;
    assert_eq!(message, "wrong email or password");
    let unknown = h
        .http
        .post(h.url("/auth/login"))
        .json(&json!({"email": "ghost@x.y", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(unknown, 401, "unauthorized").await, message, "no hint whether the account exists");
    let second: Value = login("password-123").await.unwrap().json().await.unwrap();
    let second = second["token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);

    // Logout revokes exactly the token used.
    let out = h.http.post(h.url("/auth/logout")).bearer_auth(&first).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert_error(h.http.get(h.url("/me")).bearer_auth(&first).send().await.unwrap(), 401, "unauthorized").await;
    assert_eq!(h.http.get(h.url("/me")).bearer_auth(&second).send().await.unwrap().status(), 200);
    let run = h.run(&first, "what", json!({"instructions": "x"}), false).await;
    assert_error(run, 401, "unauthorized").await;

    // Missing, malformed and unknown tokens.
    assert_error(h.http.get(h.url("/me")).send().await.unwrap(), 401, "unauthorized").await;
    let basic = h.http.get(h.url("/me")).header("authorization", "Basic Zm9vOmJhcg==").send().await.unwrap();
    assert_error(basic, 401, "unauthorized").await;
    let forged = h.http.get(h.url("/me")).bearer_auth(format!("ant_{}", "0".repeat(64))).send().await.unwrap();
    assert_error(forged, 401, "unauthorized").await;
    let sql = h.http.get(h.url("/me")).bearer_auth("' OR '1'='1").send().await.unwrap();
    assert_error(sql, 401, "unauthorized").await;
}

async fn credentials_are_stored_hashed(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("hash@example.test").await;
    let users = h.query_strings("SELECT email, password_hash FROM users").await;
    assert_eq!(users.len(), 1);
    let hash = users[0][1].clone().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("password-123"));
    let tokens = h.query_strings("SELECT token_hash, name, revoked_at FROM api_tokens").await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0][0].as_deref(), Some(hex(&Sha256::digest(token.as_bytes())).as_str()));
    assert_ne!(tokens[0][0].as_deref(), Some(token.as_str()));
    assert_eq!(tokens[0][1].as_deref(), Some("signup"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn closed_signup_is_refused(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_ALLOW_SIGNUP", "false");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let response = h
        .http
        .post(h.url("/auth/signup"))
        .json(&json!({"email": "a@b.c", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "forbidden").await;
    // Admin-made accounts still log in.
    h.admin_token().await;
}

/// Argon2 needs 19 MiB per hash. Many sign-ups and logins, six at a time, must not leave the
/// server holding that much per thread that ever hashed (it reached 226 MB once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_memory_is_bounded() {
    let Some(mut h) = Harness::start(Backend::Sqlite).await else { return };
    let pid = h.server_mut().pid();
    let rss_mb = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    let before = rss_mb();
    for batch in 0..6 {
        let signups = (0..6).map(|n| {
            let email = format!("hash-{batch}-{n}@example.test");
            let http = h.http.clone();
            let url = h.url("/auth/signup");
            async move {
                let body = json!({"email": email, "password": "password-123"});
                http.post(url).json(&body).send().await.unwrap().status()
            }
        });
        for status in futures_util::future::join_all(signups).await {
            assert_eq!(status, 201);
        }
    }
    let after = rss_mb();
    eprintln!("36 sign-ups: the server went from {before} MB to {after} MB");
    assert!(after <= before + 80, "36 sign-ups took the server from {before} MB to {after} MB");
}
