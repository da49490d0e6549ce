//! The rate limiter's added latency per request, in-process and through Redis, measured side
//! by side (interleaved rounds) in one run.
//!
//! `cargo bench -p ant-server --bench limiter` (Redis: `ANIATE_BENCH_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Prints a Markdown table and, with `--write`, rewrites its section
//! of docs/benchmarks.md.

use std::time::{Duration, Instant};

use ant_server::{
    limits::{Decision, Limiter},
    metrics::Metrics,
};

const ROUNDS: usize = 5;
const PER_ROUND: usize = 4_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn measure(limiter: &Limiter, metrics: &Metrics, user_base: i64, out: &mut Vec<Duration>) -> usize {
    let mut limited = 0;
    for n in 0..PER_ROUND {
        // A generous limit spread over many users: every call does the full check.
        let user = user_base + (n % 500) as i64;
        let started = Instant::now();
        let decision = limiter.check_rate(user, 1_000_000, metrics).await;
        out.push(started.elapsed());
        if decision != Decision::Allowed {
            limited += 1;
        }
    }
    limited
}

fn main() {
    let write = std::env::args().any(|arg| arg == "--write");
    let redis_url = std::env::var("ANIATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let metrics = Metrics::default();
        let local = Limiter::new(None, "bench", None);
        let prefix = format!("aniate-bench-{}", std::process::id());
        let shared = Limiter::new(Some(redis_url.clone()), &prefix, None);
        shared.connect().await;
        let redis_ok = shared.redis_up();
        let (mut local_times, mut redis_times) = (Vec::new(), Vec::new());
        let (mut local_limited, mut redis_limited) = (0, 0);
        for round in 0..ROUNDS {
            let base = (round as i64) * 10_000;
            local_limited += measure(&local, &metrics, base, &mut local_times).await;
            if redis_ok {
                redis_limited += measure(&shared, &metrics, base, &mut redis_times).await;
            }
        }
        let mut table = String::from(
            "| limiter | checks | p50 | p99 | max | refused |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (name, times, limited) in [
            ("in-process (GCRA, one mutex)", &mut local_times, local_limited),
            ("Redis (GCRA Lua script, loopback)", &mut redis_times, redis_limited),
        ] {
            if times.is_empty() {
                table.push_str(&format!("| {name} | not run: Redis at {redis_url} unreachable | | | | |\n"));
                continue;
            }
            times.sort();
            table.push_str(&format!(
                "| {name} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {limited} |\n",
                times.len(),
                percentile(times, 0.50).as_secs_f64() * 1e6,
                percentile(times, 0.99).as_secs_f64() * 1e6,
                times.last().unwrap().as_secs_f64() * 1e6,
            ));
        }
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let section = format!(
            "## ant-server: rate limiter overhead\n\n\
             The limiter's added latency per model call (one `check_rate`), {ROUNDS} interleaved rounds of {PER_ROUND} checks each, \
             in-process and through a Redis on loopback. Commit `{commit}`; reproduce with \
             `cargo bench -p ant-server --bench limiter -- --write`.\n\n{table}\n\
             The monthly quota costs one database transaction per run (the reservation, which sums the user's usage rows of \
             the month) and the usage row is then updated instead of inserted; it is not measured here.\n"
        );
        println!("{section}");
        if write {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
            let part = aniate_testkit::bench::report::Section {
                heading: "## ant-server: rate limiter overhead",
                start_marker: "<!-- bench-limiter:start -->",
                end_marker: "<!-- bench-limiter:end -->",
            };
            let body = section.trim_start_matches("## ant-server: rate limiter overhead").trim_start();
            part.write(&path, body).expect("docs/benchmarks.md is writable");
        }
    });
}
