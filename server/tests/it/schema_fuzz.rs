//! The HTTP API fuzzed from its own OpenAPI document: schemathesis (the version pinned in
//! `server/tests/schemathesis-requirements.txt`) reads `GET /openapi.json` from a live server,
//! sends generated requests, valid and invalid, and checks every answer: never a 5xx, and only
//! the statuses, content types, headers and bodies (SSE events included) the document declares.
//!
//! Four passes, one server: a user's token over every operation but logout; the two streaming
//! operations again with `Accept: text/event-stream`; an admin's token over the admin and brew
//! operations (which a user only sees refused); logout last, with a token of its own, since it
//! revokes the token it is called with.
//!
//! `ANIATE_SCHEMATHESIS_MAX_EXAMPLES` (default [`DEFAULT_MAX_EXAMPLES`]) sets the test cases per
//! operation and phase and `ANIATE_SCHEMATHESIS_SEED` the seed; docs/api.md has the long run.
//! Without schemathesis the test is skipped, except under `CI=true`, where that is a failure.
//!
//! [`what_the_fuzzer_found_stays_fixed`] replays what it found, without schemathesis.

use std::{path::Path, process::Stdio, time::Duration, time::Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, ServerOptions, assert_error, db_tests};

db_tests!(api_conforms_to_its_openapi_document, what_the_fuzzer_found_stays_fixed);

/// Small enough that both backends' runs take well under a minute each on two cores.
const DEFAULT_MAX_EXAMPLES: u32 = 50;
const DEFAULT_SEED: u64 = 20_261_126;
const REQUIREMENTS: &str = include_str!("../schemathesis-requirements.txt");

/// Server-side rules that JSON Schema cannot state make some schema-valid requests a 422: text
/// that is blank once trimmed or has control characters, a brew name with nothing to make a slug
/// from, a tool that needs a file, the last chat message empty, an e-mail address of the wrong
/// shape. Byte limits (a prompt's 64 KiB) are a 413, and the document's `maxLength` counts
/// characters. So `positive_data_acceptance` takes 413 and 422 as well as its defaults; it still
/// fails a valid request answered 400 (unreadable), 405, or 5xx. Every other check is as
/// schemathesis ships it.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "422", "429"]
"#;

/// The `st` binary and its version, or `None` (skip) when it is not installed outside CI.
fn schemathesis() -> Option<String> {
    let bin = std::env::var("ANIATE_SCHEMATHESIS_BIN").unwrap_or_else(|_| "st".to_owned());
    let pinned = REQUIREMENTS
        .lines()
        .find_map(|line| line.trim().strip_prefix("schemathesis=="))
        .expect("schemathesis-requirements.txt pins schemathesis==VERSION");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let install = "python3 -m pip install -r server/tests/schemathesis-requirements.txt";
    let version = match std::process::Command::new(&bin).arg("--version").output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        _ if ci => panic!("CI=true but schemathesis (`{bin}`) is not installed: {install}"),
        _ => {
            eprintln!("skipping: schemathesis (`{bin}`) is not installed; {install}");
            return None;
        }
    };
    if !version.ends_with(&format!("version {pinned}")) {
        assert!(!ci, "CI=true but `{bin} --version` says `{version}`, not {pinned}: {install}");
        eprintln!("warning: `{bin} --version` says `{version}`, not the pinned {pinned}; results may differ");
    }
    Some(bin)
}

fn env_number<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{var}={text} is not a number")),
        Err(_) => default,
    }
}

async fn api_conforms_to_its_openapi_document(backend: Backend) {
    let Some(bin) = schemathesis() else { return };
    let max_examples: u32 = env_number("ANIATE_SCHEMATHESIS_MAX_EXAMPLES", DEFAULT_MAX_EXAMPLES);
    let seed: u64 = env_number("ANIATE_SCHEMATHESIS_SEED", DEFAULT_SEED);
    // Tool runs and chats are what most needs fuzzing; the free plan's 20 a minute would leave
    // most of them a 429.
    let options = ServerOptions::default().env("ANIATE_RATE_LIMIT_PER_MIN", "1000000");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let user = h.signup("fuzz@example.test").await;
    let admin = h.admin_token().await;
    let logout = h.signup("fuzz-logout@example.test").await;
    let config = h.dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let fuzz = Fuzz { bin, h: &h, config: &config, max_examples, seed, backend };
    fuzz.pass("user", &user, &["--exclude-path", "/auth/logout"]).await;
    fuzz.pass(
        "sse",
        &user,
        &["--header", "Accept: text/event-stream", "--include-path-regex", r"^/(tool/\{slug\}|chat)$"],
    )
    .await;
    fuzz.pass("admin", &admin, &["--include-tag", "admin", "--include-tag", "brews"]).await;
    fuzz.pass("logout", &logout, &["--include-path", "/auth/logout"]).await;
}

struct Fuzz<'a> {
    bin: String,
    h: &'a Harness,
    config: &'a Path,
    max_examples: u32,
    seed: u64,
    backend: Backend,
}

impl Fuzz<'_> {
    /// One `st run` with `token`, restricted by `extra`; fails the test unless every check passed.
    async fn pass(&self, name: &str, token: &str, extra: &[&str]) {
        let max_examples = self.max_examples.to_string();
        let seed = self.seed.to_string();
        let authorization = format!("Authorization: Bearer {token}");
        let schema = self.h.url("/openapi.json");
        let mut args: Vec<&str> = vec!["--config-file", self.config.to_str().unwrap(), "run", &schema];
        args.extend([
            "--checks",
            "all",
            "--max-examples",
            &max_examples,
            "--seed",
            &seed,
            // One worker keeps the order of requests, and so a failure, reproducible from the seed.
            "--workers",
            "1",
            // No example database: nothing carried over between runs, nothing written outside the
            // temp dir.
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--no-color",
            "--header",
            &authorization,
        ]);
        args.extend_from_slice(extra);
        let shown = args
            .iter()
            .map(|arg| if arg.starts_with("Authorization:") { "Authorization: Bearer $TOKEN" } else { arg })
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
            .replace("'Authorization: Bearer $TOKEN'", "\"Authorization: Bearer $TOKEN\"");
        eprintln!("{:?} {name}: {} {shown}", self.backend, self.bin);

        let started = Instant::now();
        let child = tokio::process::Command::new(&self.bin)
            .args(&args)
            .current_dir(self.h.dir.path())
            // Loopback only: no proxy between schemathesis and the server.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn schemathesis");
        // A generous bound, so that a hung run fails instead of holding CI.
        let limit = Duration::from_secs(120 + 3 * u64::from(self.max_examples));
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("schemathesis pass `{name}` did not finish in {limit:?}"))
            .expect("wait for schemathesis");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let summary = stdout.lines().filter(|line| line.contains(" generated, ")).collect::<Vec<_>>().join("; ");
        eprintln!("{:?} {name}: {} in {:.1?}: {}", self.backend, output.status, started.elapsed(), summary.trim());
        assert!(
            output.status.success(),
            "schemathesis pass `{name}` ({:?}) failed: {}\n\n{stdout}\n{stderr}\n--- server log (tail) ---\n{}",
            self.backend,
            output.status,
            log_tail(&self.h.server_log(), 60),
        );
    }
}

fn log_tail(log: &str, n_lines: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n_lines)..].join("\n")
}

/// `arg` as a shell word, so that the logged command line can be pasted.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@".contains(&b));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// The bugs schemathesis found, each as the request that showed it.
async fn what_the_fuzzer_found_stays_fixed(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("found@example.test").await;

    // U+0000 was a 500 on PostgreSQL, which cannot store it or even look it up.
    let brew = json!({"name": "Nul", "system_prompt": "a\u{0}b"});
    let response = h.http.post(h.url("/assistants")).bearer_auth(&token).json(&brew).send().await.unwrap();
    assert_error(response, 422, "invalid_field").await;
    let chat = json!({"assistant": "x\u{0}", "messages": [{"role": "user", "content": "hi"}]});
    let response = h.http.post(h.url("/chat")).bearer_auth(&token).json(&chat).send().await.unwrap();
    assert_error(response, 422, "invalid_field").await;
    let response = h.http.get(h.url("/assistants/a%00b")).bearer_auth(&token).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    // An escaped backslash before `u0000` is not U+0000.
    let brew = json!({"name": "Backslash", "system_prompt": "a\\u0000b"});
    let response = h.http.post(h.url("/assistants")).bearer_auth(&token).json(&brew).send().await.unwrap();
    assert_eq!(response.status(), 201);

    // serde took a struct from an array of its fields, so `[]` was a valid patch.
    let response =
        h.http.patch(h.url("/assistants/backslash")).bearer_auth(&token).json(&json!([])).send().await.unwrap();
    assert_error(response, 422, "invalid_field").await;
    let chat = json!({"messages": [["user", "hi"]]});
    let response = h.http.post(h.url("/chat")).bearer_auth(&token).json(&chat).send().await.unwrap();
    assert_error(response, 422, "invalid_field").await;

    // Query strings and paths axum could not decode were plain-text 400s.
    let response = h.http.post(h.url("/files?name=a&name=b")).bearer_auth(&token).body("x").send().await.unwrap();
    assert_error(response, 422, "invalid_field").await;
    let response = h.http.get(h.url("/assistants/%FF")).bearer_auth(&token).send().await.unwrap();
    assert_error(response, 404, "not_found").await;

    // A malformed Content-Type was stored and served back as the content's media type.
    for (sent, stored) in [
        ("text/x-python; charset=utf-8", "text/x-python; charset=utf-8"),
        ("not a media type", "application/octet-stream"),
        ("text/", "application/octet-stream"),
        ("text/plain; charset", "application/octet-stream"),
    ] {
        let response = h
            .http
            .post(h.url("/files?name=t.txt"))
            .bearer_auth(&token)
            .header("content-type", sent)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{sent}");
        let file: Value = response.json().await.unwrap();
        assert_eq!(file["content_type"], stored, "{sent}");
    }

    // Identical content uploaded at once shared a temporary file, and all but one upload
    // could fail with a 503.
    let uploads = (0..8).map(|_| h.http.post(h.url("/files?name=same.txt")).bearer_auth(&token).body("same").send());
    for response in futures_util::future::join_all(uploads).await {
        assert_eq!(response.unwrap().status(), 201);
    }

    // `/metrics` is OpenMetrics text, and the document now says so.
    let doc: Value = h.http.get(h.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let declared = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap();
    let served = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    let essence = served.split(';').next().unwrap();
    assert!(declared.get(essence).is_some(), "{served} is not in {declared}");
}
