//! Signup, login, logout, `/me`, and how credentials are stored.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Backend, Harness, ServerOptions, assert_error, db_tests, non_loopback_ip};

db_tests!(
    signup_login_logout_me,
    credentials_are_stored_hashed,
    closed_signup_is_refused,
    tokens_expire_unused_and_slide_when_used,
    logout_all_revokes_every_token_of_the_account,
    disabled_accounts_are_refused_until_enabled,
    login_failures_get_growing_delays_per_account,
    a_login_flood_from_one_address_leaves_other_logins_fast,
    signups_are_limited_per_address_and_passwords_checked
);

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

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn login(h: &Harness, email: &str) -> reqwest::Response {
    h.http.post(h.url("/auth/login")).json(&json!({"email": email, "password": "password-123"})).send().await.unwrap()
}

async fn me_status(h: &Harness, token: &str) -> reqwest::Response {
    h.http.get(h.url("/me")).bearer_auth(token).send().await.unwrap()
}

/// Moves a token's creation and last use `days_ago` into the past.
async fn age_token(h: &Harness, token: &str, days_ago: i64) {
    let hash = hex(&Sha256::digest(token.as_bytes()));
    let then = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        - days_ago * DAY_MS;
    h.query_strings(&format!(
        "UPDATE api_tokens SET created_at = {then}, last_used_at = {then} WHERE token_hash = '{hash}'"
    ))
    .await;
}

/// Issue 13, item 6: a token unused for ANIATE_TOKEN_TTL_DAYS stops working; a used one slides.
async fn tokens_expire_unused_and_slide_when_used(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_TOKEN_TTL_DAYS", "30");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let stale = h.signup("stale@example.test").await;
    let used =
        login(&h, "stale@example.test").await.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    age_token(&h, &stale, 31).await;
    age_token(&h, &used, 29).await;

    let message = assert_error(me_status(&h, &stale).await, 401, "unauthorized").await;
    assert!(message.contains("expired after 30 days unused"), "{message}");
    assert_eq!(me_status(&h, &used).await.status(), 200, "29 days unused is within 30");
    // That use moved its expiry: its last use is now.
    let hash = hex(&Sha256::digest(used.as_bytes()));
    let mut last_used = 0;
    for _ in 0..100 {
        let rows = h.query_strings(&format!("SELECT last_used_at FROM api_tokens WHERE token_hash = '{hash}'")).await;
        last_used = rows[0][0].as_deref().unwrap().parse::<i64>().unwrap();
        if last_used > DAY_MS * 1000 && now_ms() - last_used < 60_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(now_ms() - last_used < 60_000, "the use slid the token: last used {last_used}");
    assert_eq!(me_status(&h, &used).await.status(), 200);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Issue 13, item 6: `POST /auth/logout-all` revokes every token of the account, and no one
/// else's.
async fn logout_all_revokes_every_token_of_the_account(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let first = h.signup("many@example.test").await;
    let second =
        login(&h, "many@example.test").await.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let other = h.signup("other@example.test").await;
    let out = h.http.post(h.url("/auth/logout-all")).bearer_auth(&second).send().await.unwrap();
    assert_eq!(out.status(), 204);
    for token in [&first, &second] {
        assert_error(me_status(&h, token).await, 401, "unauthorized").await;
    }
    assert_eq!(me_status(&h, &other).await.status(), 200, "another account's token is untouched");
    assert_error(h.http.post(h.url("/auth/logout-all")).send().await.unwrap(), 401, "unauthorized").await;
    // A new login works as before.
    assert_eq!(login(&h, "many@example.test").await.status(), 200);
}

/// Issue 13, item 6: `admin disable-user` makes every token and login of the account a 403
/// `account_disabled`; `enable-user` gives them back.
async fn disabled_accounts_are_refused_until_enabled(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("mallory@example.test").await;
    let other = h.signup("alice@example.test").await;
    let disabled = h.admin(&["disable-user", "--email", "Mallory@example.test"], "");
    assert!(disabled.status.success(), "{}", String::from_utf8_lossy(&disabled.stderr));
    assert_eq!(String::from_utf8_lossy(&disabled.stdout).trim(), "Mallory@example.test is now disabled");

    let message = assert_error(me_status(&h, &token).await, 403, "account_disabled").await;
    assert!(message.contains("disabled"), "{message}");
    assert_error(h.run(&token, "what", json!({"instructions": "hi"}), false).await, 403, "account_disabled").await;
    assert_error(login(&h, "mallory@example.test").await, 403, "account_disabled").await;
    let wrong = h
        .http
        .post(h.url("/auth/login"))
        .json(&json!({"email": "mallory@example.test", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_error(wrong, 401, "unauthorized").await;
    assert_eq!(me_status(&h, &other).await.status(), 200, "other accounts are untouched");

    let unknown = h.admin(&["disable-user", "--email", "ghost@example.test"], "");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user with email ghost@example.test"));

    let enabled = h.admin(&["enable-user", "--email", "mallory@example.test"], "");
    assert!(enabled.status.success(), "{}", String::from_utf8_lossy(&enabled.stderr));
    assert_eq!(me_status(&h, &token).await.status(), 200, "the token works again");
    assert_eq!(login(&h, "mallory@example.test").await.status(), 200);
}

async fn login_with(h: &Harness, base: &str, email: &str, password: &str) -> reqwest::Response {
    h.http.post(format!("{base}/auth/login")).json(&json!({"email": email, "password": password})).send().await.unwrap()
}

/// Issue 13, item 5: 60 wrong passwords on one account, then the right one, used to work. Past
/// 5 failures each attempt waits a delay that doubles, and is refused (429, `Retry-After`)
/// before any password is checked.
async fn login_failures_get_growing_delays_per_account(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    h.signup("target@example.test").await;
    h.signup("bystander@example.test").await;
    let mut statuses = Vec::new();
    for n in 0..60 {
        let response = login_with(&h, &h.base, "target@example.test", &format!("guess-number-{n}")).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|status| *status == 429), "{statuses:?}");
    let refused = login_with(&h, &h.base, "target@example.test", "password-123").await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let message = assert_error(refused, 429, "rate_limited").await;
    assert!(message.contains("too many failed logins for this account"), "{message}");
    assert_eq!(retry_after, 1, "the first delay is a second");
    // Another account, from the same address, is not held up.
    assert_eq!(login(&h, "bystander@example.test").await.status(), 200);
    // After the delay, the right password works, and forgets the failures.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(login(&h, "target@example.test").await.status(), 200);
    for _ in 0..5 {
        assert_eq!(login_with(&h, &h.base, "target@example.test", "wrong-again-1").await.status(), 401);
    }
    assert_eq!(login_with(&h, &h.base, "target@example.test", "wrong-again-1").await.status(), 429);
}

/// Issue 13, item 5: a 600-request login flood once made a real login take 8.1 s and got 315
/// 503s. Past 20 failures from one address, its attempts are refused before any hashing, so a
/// login from elsewhere still answers within a second, and the flood gets 429s, not 503s.
async fn a_login_flood_from_one_address_leaves_other_logins_fast(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_BIND", "0.0.0.0:0");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let port = h.base.rsplit(':').next().unwrap().to_owned();
    let loopback = format!("http://127.0.0.1:{port}");
    h.signup("real@example.test").await;
    let flood = (0..600).map(|n| {
        let http = h.http.clone();
        let url = format!("{loopback}/auth/login");
        async move {
            let body = json!({"email": format!("victim-{}@example.test", n % 50), "password": "not-it-at-all"});
            http.post(url).json(&body).send().await.unwrap().status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(flood).await;
    let n_checked = statuses.iter().filter(|status| **status == 401).count();
    let n_refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(n_checked + n_refused, 600, "only 401 and 429: {statuses:?}");
    assert!(n_checked <= 20, "{n_checked} hashed");

    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipping the other-address half: this machine has no non-loopback address");
        return;
    };
    let started = std::time::Instant::now();
    let response = login_with(&h, &format!("http://{ip}:{port}"), "real@example.test", "password-123").await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "a real login took {:?}", started.elapsed());
}

/// Issue 13, item 5: sign-ups are limited per client address (`ANIATE_SIGNUPS_PER_HOUR`), and a
/// new password must be 10 characters, not blank, and not guessable.
async fn signups_are_limited_per_address_and_passwords_checked(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_SIGNUPS_PER_HOUR", "3");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let signup = |email: &str, password: &str| {
        h.http.post(h.url("/auth/signup")).json(&json!({"email": email, "password": password})).send()
    };
    for (password, why) in [
        ("nine-char", "at least 10"),
        ("            ", "whitespace"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("1234567890", "too easy to guess"),
        ("password12", "too easy to guess"),
    ] {
        let message = assert_error(signup("weak@example.test", password).await.unwrap(), 422, "invalid_field").await;
        assert!(message.contains(why), "{password:?}: {message}");
    }
    for n in 0..3 {
        assert_eq!(signup(&format!("new-{n}@example.test"), "password-123").await.unwrap().status(), 201);
    }
    let refused = signup("one-too-many@example.test", "password-123").await.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    let message = assert_error(refused, 429, "rate_limited").await;
    assert!(message.contains("too many sign-ups from your address"), "{message}");
    assert_eq!(h.query_strings("SELECT COUNT(*) FROM users").await[0][0].as_deref(), Some("3"));
    // The admin CLI applies the same password rules.
    let weak = h.admin(&["create-user", "--email", "ops@example.test", "--password-stdin"], "qwertyuiop\n");
    assert!(!weak.status.success());
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("too easy to guess"),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );
}

/// Argon2 needs 19 MiB per hash. Many sign-ups and logins, six at a time, must not leave the
/// server holding that much per thread that ever hashed (it reached 226 MB once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_memory_is_bounded() {
    let options = ServerOptions::default().env("ANIATE_SIGNUPS_PER_HOUR", "100");
    let Some(mut h) = Harness::start_with(Backend::Sqlite, options).await else { return };
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
