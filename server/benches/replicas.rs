//! Throughput of two `ant-server` replicas against one, on one PostgreSQL database and one
//! Redis, driven by 64 concurrent streamed tool runs against the fake LLM; the two setups
//! alternate round by round in one run.
//!
//! `cargo bench -p ant-server --bench replicas` (PostgreSQL: `ANIATE_BENCH_POSTGRES_URL`,
//! default the test database; Redis: `ANIATE_BENCH_REDIS_URL`). With `--write` it rewrites its
//! section of docs/benchmarks.md.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aniate_testkit::{FakeLlm, FakeLlmConfig, TestProcess};
use serde_json::{Value, json};
use sqlx::Connection;

const CONCURRENCY: usize = 64;
const PER_ROUND: usize = 1_600;
const ROUNDS: usize = 6;

fn spawn_server(
    db_url: &str,
    redis: &str,
    prefix: &str,
    upstream: &str,
    dir: &Path,
    name: &str,
) -> (TestProcess, String) {
    let env = [
        ("ANIATE_DATABASE_URL", db_url),
        ("ANIATE_DATA_DIR", &dir.display().to_string()),
        ("ANIATE_BIND", "127.0.0.1:0"),
        ("ANIATE_UPSTREAM_URL", upstream),
        ("ANIATE_REDIS_URL", redis),
        ("ANIATE_REDIS_PREFIX", prefix),
        ("ANIATE_RATE_LIMIT_PER_MIN", "100000000"),
        ("ANIATE_LOG", "warn"),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, *v)).collect();
    let server = TestProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_ant-server")),
        &["serve"],
        &env,
        &dir.join(format!("{name}.log")),
    )
    .expect("spawn ant-server");
    let line =
        server.wait_for_stdout_line("ant-server listening on ", Duration::from_secs(60)).expect("server started");
    (server, line.trim_start_matches("ant-server listening on ").trim().to_owned())
}

/// Runs `PER_ROUND` streams, `CONCURRENCY` at a time, spread round-robin over `bases`.
async fn round(client: &reqwest::Client, bases: &[String], token: &str) -> (f64, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, bases, token, next, errors) =
            (client.clone(), bases.to_vec(), token.to_owned(), Arc::clone(&next), Arc::clone(&errors));
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= PER_ROUND {
                    return;
                }
                let base = &bases[n % bases.len()];
                let ok = match client
                    .post(format!("{base}/tool/what"))
                    .bearer_auth(&token)
                    .header("accept", "text/event-stream")
                    .json(&json!({"instructions": "benchmark question"}))
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => response
                        .bytes()
                        .await
                        .is_ok_and(|body| body.ends_with(b"\n\n") && body.windows(11).any(|w| w == b"event: done")),
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        if errors.load(Ordering::Relaxed) == 0 {
                            eprintln!("first error: {status} {body}");
                        }
                        false
                    }
                    Err(err) => {
                        if errors.load(Ordering::Relaxed) == 0 {
                            eprintln!("first error: {err}");
                        }
                        false
                    }
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    (PER_ROUND as f64 / started.elapsed().as_secs_f64(), errors.load(Ordering::Relaxed))
}

fn main() {
    let write = std::env::args().any(|arg| arg == "--write");
    let pg = std::env::var("ANIATE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let redis = std::env::var("ANIATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("aniate_bench_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&pg).await.expect("PostgreSQL for the bench");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
        let (base, _) = pg.rsplit_once('/').unwrap();
        let db_url = format!("{base}/{name}");
        let fake = FakeLlm::start(FakeLlmConfig { default_reply: Some("x".repeat(400)), ..Default::default() }).await.unwrap();
        let prefix = format!("aniate-bench-{}", std::process::id());
        let (_a, a) = spawn_server(&db_url, &redis, &prefix, &fake.base_url(), dir.path(), "a");
        let (_b, b) = spawn_server(&db_url, &redis, &prefix, &fake.base_url(), dir.path(), "b");
        let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).tcp_nodelay(true).build().unwrap();
        let signup: Value = client
            .post(format!("{a}/auth/signup"))
            .json(&json!({"email": "bench@example.test", "password": "bench-password-1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = signup["token"].as_str().unwrap().to_owned();
        // A plan whose quota the bench cannot exhaust (the free plan's would end it after ~700 runs).
        let mut db = sqlx::PgConnection::connect(&db_url).await.unwrap();
        sqlx::query("INSERT INTO plans (name, requests_per_minute, tokens_per_month) VALUES ('bench', 100000000, 1000000000000)")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("UPDATE users SET plan = 'bench'").execute(&mut db).await.unwrap();
        drop(db);
        let one = vec![a.clone()];
        let two = vec![a.clone(), b.clone()];
        round(&client, &two, &token).await; // warm-up
        let (mut rates_one, mut rates_two, mut errors) = (Vec::new(), Vec::new(), 0);
        for _ in 0..ROUNDS {
            let (rate, e) = round(&client, &one, &token).await;
            rates_one.push(rate);
            errors += e;
            let (rate, e) = round(&client, &two, &token).await;
            rates_two.push(rate);
            errors += e;
        }
        let median = |rates: &mut Vec<f64>| {
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        };
        let (one_rate, two_rate) = (median(&mut rates_one), median(&mut rates_two));
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let section = format!(
            "## ant-server: two replicas against one\n\n\
             {ROUNDS} alternating rounds of {PER_ROUND} streamed `what` runs, {CONCURRENCY} at a time, on one PostgreSQL database and one Redis \
             (shared rate limits), against the fake LLM (400 characters, no delay), all on this {cores}-core machine. \
             Reproduce with `cargo bench -p ant-server --bench replicas -- --write`.\n\n\
             | setup | streams/s (median of rounds) | errors |\n|---|---:|---:|\n\
             | one replica | {one_rate:.0} | |\n| two replicas, round-robin | {two_rate:.0} | |\n\
             | two / one | {:.2}× | {errors} |\n\n\
             On a 2-core machine that also runs the load generator, the fake LLM, PostgreSQL and Redis, a second replica has no idle core to use, \
             so this shows that replicas share state correctly at full load, not how they scale; on separate machines each replica brings its own cores.\n",
            two_rate / one_rate
        );
        println!("{section}");
        drop(admin);
        let mut admin = sqlx::PgConnection::connect(&pg).await.unwrap();
        drop((_a, _b));
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await;
        if write {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
            let part = aniate_testkit::bench::report::Section {
                heading: "## ant-server: two replicas against one",
                start_marker: "<!-- bench-replicas:start -->",
                end_marker: "<!-- bench-replicas:end -->",
            };
            let body = section.trim_start_matches("## ant-server: two replicas against one").trim_start();
            part.write(&path, body).expect("docs/benchmarks.md is writable");
        }
    });
}
