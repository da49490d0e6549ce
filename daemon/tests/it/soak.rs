//! The soak: many concurrent streamed runs through `aniated` → `ant-server` → the fake LLM,
//! each on a fresh socket connection as `ant` makes them, in ten equal phases. After each
//! phase the load stops for a moment and the server's and the daemon's resident memory and open
//! file descriptors are read; at the end there must have been no error, and memory and
//! descriptors must be flat after the first phase (the warm-up).
//!
//! CI runs a short soak: 6,000 runs, so that the first tenth fills the daemon's result cache
//! (512 entries). The long one is `bash bench/soak.sh` (20,000 runs, a release build), which
//! writes its figures into docs/reliability.md. Knobs:
//! `ANIATE_SOAK_RUNS`, `ANIATE_SOAK_CONCURRENCY`, and `ANIATE_SOAK_REPORT=FILE` to replace the
//! part of FILE between `<!-- soak:begin -->` and `<!-- soak:end -->` with the figures.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aniate_proto::ipc::{Reply, Request, RunToolParams};
use aniate_testkit::{
    FakeLlmConfig, TestProcess,
    bench::{procfs, report, stats::percentile},
    stack::{Stack, StackOptions},
};
use aniated::{
    client::{ClientOptions, DaemonClient},
    home::Home,
};
use serde_json::json;

use crate::harness::{Raw, daemon_bin};

const PHASES: usize = 10;
/// Memory at the end may be at most this many times what it was after the warm-up phase.
const RSS_GROWTH_LIMIT: f64 = 1.2;
/// Open descriptors at the end may exceed those after the warm-up by at most this many
/// (pooled connections come and go; a leak of one per run would show thousands).
const FD_SLACK: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text} is not a number")),
        Err(_) => default,
    }
}

/// A process's footprint at one moment.
#[derive(Clone, Copy, Debug)]
struct Footprint {
    rss: u64,
    fds: usize,
    threads: usize,
    /// Of `fds`, the TCP connections to the fake LLM: the server's pool of provider
    /// connections, which grows to the most runs it ever had in flight at once (at most the
    /// concurrency), and may reach that peak after the warm-up.
    provider_connections: usize,
}

fn footprint(pid: u32, provider_port: u16) -> Footprint {
    let rss = procfs::memory(pid).map(|memory| memory.rss).unwrap_or(0);
    let fd_links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .map(|target| target.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|dir| dir.count()).unwrap_or(0);
    let provider_connections = connections_to(pid, &fd_links, provider_port);
    Footprint { rss, fds: fd_links.len(), threads, provider_connections }
}

/// How many of the process's sockets (`socket:[INODE]` links of its descriptors) are TCP
/// connections to `port` on this host, read from `/proc/PID/net/tcp` and `tcp6`.
fn connections_to(pid: u32, fd_links: &[String], port: u16) -> usize {
    let inodes: std::collections::HashSet<&str> =
        fd_links.iter().filter_map(|link| link.strip_prefix("socket:[")?.strip_suffix(']')).collect();
    let remote_port = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 9 && fields[2].ends_with(&remote_port) && inodes.contains(fields[9])
                })
                .count()
        })
        .sum()
}

/// What one phase did.
#[derive(Clone, Debug)]
struct Phase {
    runs_so_far: usize,
    elapsed: Duration,
    server: Footprint,
    daemon: Footprint,
}

/// Latencies of the successful runs, and the failures.
#[derive(Debug, Default)]
struct Tally {
    first_delta: Vec<Duration>,
    total: Vec<Duration>,
    errors: Vec<String>,
    n_errors: usize,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.n_errors += 1;
        if self.errors.len() < 5 {
            self.errors.push(message);
        }
    }
}

/// One run as `ant` makes it: connect, hello, run the tool, read the stream to its end.
async fn one_run(home: &Home, options: &ClientOptions, n: usize) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let client = DaemonClient::connect_once(home, options).await.map_err(|err| format!("connect: {err}"))?;
    let request = Request::RunTool(RunToolParams {
        tool: "soak".to_owned(),
        // Different every time, so the daemon's result cache never answers.
        instructions: Some(format!("soak run {n}")),
        ..RunToolParams::default()
    });
    let mut replies = client.request(request).await.map_err(|err| format!("request: {err}"))?;
    let mut first_delta = None;
    let mut text = 0;
    while let Some(reply) = replies.next().await {
        match reply {
            Reply::Delta(delta) => {
                first_delta.get_or_insert_with(|| started.elapsed());
                text += delta.text.len();
            }
            Reply::Done(_) => {
                let first = first_delta.ok_or("no text before the end")?;
                return if text == REPLY.len() { Ok((first, started.elapsed())) } else { Err(format!("{text} bytes")) };
            }
            Reply::Error(err) => return Err(format!("{:?}: {}", err.code, err.message)),
            Reply::Meta(_) | Reply::Result(_) => {}
        }
    }
    Err("the stream ended without a done".to_owned())
}

/// The fake's answer: 400 characters in 50 chunks, the size of a short real answer.
const REPLY: &str = concat!(
    "The function reads the file line by line, splits each line on commas and sums the third ",
    "column. It skips the header row. Empty lines raise an IndexError because split returns one ",
    "field; guard them with `if not line.strip(): continue`. The file is never closed: use a ",
    "with block. Parsing floats with float() accepts 'nan' and 'inf', which may not be wanted. ",
    "Otherwise it is correct. Add a test for it.",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_many_concurrent_runs_leave_no_errors_and_no_growth() {
    assert_eq!(REPLY.len(), 400);
    let runs = env_usize("ANIATE_SOAK_RUNS", 6_000).max(PHASES);
    let concurrency = env_usize("ANIATE_SOAK_CONCURRENCY", 64).max(1);
    let fake = FakeLlmConfig { default_reply: Some(REPLY.to_owned()), ..FakeLlmConfig::default() };
    let server_env = vec![("ANIATE_LOG".to_owned(), "info".to_owned())];
    let stack = Stack::start(StackOptions { fake, server_env, ..StackOptions::default() }).await.unwrap();
    let provider_port = stack.fake.addr().port();

    // One user on a plan with room for the whole soak, and a tool with a short prompt.
    stack
        .admin(
            &[
                "define-plan",
                "--name",
                "soak",
                "--requests-per-minute",
                "10000000",
                "--tokens-per-month",
                "1000000000000",
            ],
            "",
        )
        .unwrap();
    let admin = stack.admin_token().await.unwrap();
    stack
        .push_tool(&admin, json!({"slug": "soak", "name": "Soak", "description": "Soak test tool", "system_prompt": "Answer briefly.", "output": "text"}))
        .await
        .unwrap();
    let token = stack.signup("soak@example.test").await.unwrap();
    stack.admin(&["set-plan", "--email", "soak@example.test", "--plan", "soak"], "").unwrap();

    let home_dir = stack.new_home("s");
    let mut env = stack.client_env(&home_dir);
    env.retain(|(key, _)| key != "ANIATE_LOG");
    env.push(("ANIATE_LOG".to_owned(), "info".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let daemon = TestProcess::spawn(Path::new(&daemon_bin()), &["--foreground"], &env, &home_dir.join("stderr.log"))
        .expect("spawn aniated");
    let home = Home::at(&home_dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&home.socket).is_err() {
        assert!(Instant::now() < deadline, "aniated did not listen on its socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut raw = Raw::greeted(&home.socket).await;
    raw.call(1, "login", json!({"token": token})).await;
    raw.call(2, "install", json!({"slugs": ["soak"]})).await;
    drop(raw);

    let options = Arc::new(ClientOptions { autostart: false, ..ClientOptions::new("soak/0") });
    let home = Arc::new(home);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut phases = Vec::new();
    let started = Instant::now();
    let per_phase = runs / PHASES;
    for phase in 0..PHASES {
        let first = phase * per_phase;
        let count = if phase + 1 == PHASES { runs - first } else { per_phase };
        let next = Arc::new(AtomicUsize::new(first));
        let errors_before = tally.lock().unwrap().n_errors;
        let end = first + count;
        let workers: Vec<_> = (0..concurrency.min(count))
            .map(|_| {
                let (next, home, options, tally) = (next.clone(), home.clone(), options.clone(), tally.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= end {
                            break;
                        }
                        let outcome = tokio::time::timeout(Duration::from_secs(30), one_run(&home, &options, n)).await;
                        let mut tally = tally.lock().unwrap();
                        match outcome {
                            Ok(Ok((first, total))) => {
                                tally.first_delta.push(first);
                                tally.total.push(total);
                            }
                            Ok(Err(err)) => tally.error(format!("run {n}: {err}")),
                            Err(_) => tally.error(format!("run {n}: no end within 30 s")),
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        // Every run reached the provider: none was answered from a cache or lost on the way.
        let failed = tally.lock().unwrap().n_errors - errors_before;
        assert_eq!(stack.fake.requests().len(), count - failed, "phase {phase}");
        stack.fake.clear_requests();
        phases.push(Phase {
            runs_so_far: end,
            elapsed: started.elapsed(),
            server: footprint(stack.server.pid(), provider_port),
            daemon: footprint(daemon.pid(), provider_port),
        });
    }
    let elapsed = started.elapsed();
    let tally = Arc::try_unwrap(tally).unwrap().into_inner().unwrap();
    let report = report(runs, concurrency, elapsed, &tally, &phases);
    println!("{report}");
    if let Ok(path) = std::env::var("ANIATE_SOAK_REPORT") {
        write_report(Path::new(&path), &report);
    }

    assert_eq!(tally.n_errors, 0, "errors: {:?}", tally.errors);
    assert_eq!(tally.total.len(), runs);
    // Descriptors are read the moment the last run of a phase ends, when up to `concurrency`
    // sockets may still be closing (seen: 82 to 87 through a run, then 97 at its end). A leak
    // stays; a closing socket goes: give the last reading a second to come back within bounds.
    let mut last = phases[PHASES - 1].clone();
    for _ in 0..40 {
        let within = |now: Footprint, warm: Footprint| other_fds(now) <= other_fds(warm) + FD_SLACK;
        if within(last.server, phases[0].server) && within(last.daemon, phases[0].daemon) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        last.server = footprint(stack.server.pid(), provider_port);
        last.daemon = footprint(daemon.pid(), provider_port);
    }
    let (warm, last) = (&phases[0], &last);
    for (name, warm, last) in [("server", warm.server, last.server), ("daemon", warm.daemon, last.daemon)] {
        assert!(warm.rss > 0 && warm.fds > 0, "could not read the {name}'s footprint");
        assert!(
            last.rss as f64 <= warm.rss as f64 * RSS_GROWTH_LIMIT,
            "the {name}'s memory grew from {} to {} KiB\n{report}",
            warm.rss / 1024,
            last.rss / 1024
        );
        assert!(
            other_fds(last) <= other_fds(warm) + FD_SLACK,
            "the {name}'s descriptors grew from {} to {} ({} and {} of them connections to the provider)\n{report}",
            warm.fds,
            last.fds,
            warm.provider_connections,
            last.provider_connections
        );
        assert!(
            last.provider_connections <= concurrency,
            "the {name} holds {} connections to the provider for {concurrency} runs at a time\n{report}",
            last.provider_connections
        );
    }
    assert!(!stack.server_log().contains("panicked"));
}

/// The descriptors that are not pooled provider connections: these must not grow.
fn other_fds(footprint: Footprint) -> usize {
    footprint.fds.saturating_sub(footprint.provider_connections)
}

fn report(runs: usize, concurrency: usize, elapsed: Duration, tally: &Tally, phases: &[Phase]) -> String {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    let sorted = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        sorted
    };
    let (first, total) = (sorted(&tally.first_delta), sorted(&tally.total));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let mut out = format!(
        "{}: {runs} runs, {concurrency} at a time, through aniated → ant-server (SQLite) → fake LLM ({profile} build), \
         each on a fresh connection to the daemon; {:.1} s, {:.0} runs/s.\n\n\
         | runs | errors | first text p50 | p99 | whole run p50 | p99 |\n|---|---|---|---|---|---|\n\
         | {} | {} | {} ms | {} ms | {} ms | {} ms |\n\n",
        report::Machine::detect().describe(),
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64(),
        tally.total.len() + tally.n_errors,
        tally.n_errors,
        ms(percentile(&first, 50.0)),
        ms(percentile(&first, 99.0)),
        ms(percentile(&total, 50.0)),
        ms(percentile(&total, 99.0)),
    );
    out.push_str(
        "| after run | at | server RSS MiB | fds | threads | daemon RSS MiB | fds | threads |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for phase in phases {
        let (server, daemon) = (phase.server, phase.daemon);
        out.push_str(&format!(
            "| {} | {:.1} s | {} | {} | {} | {} | {} | {} |\n",
            phase.runs_so_far,
            phase.elapsed.as_secs_f64(),
            mib(server.rss),
            server.fds,
            server.threads,
            mib(daemon.rss),
            daemon.fds,
            daemon.threads,
        ));
    }
    let (warm, last) = (&phases[0], &phases[phases.len() - 1]);
    out.push_str(&format!(
        "\nEnd over warm-up (after the first 10 %): server RSS {:.2}×, daemon RSS {:.2}× (limit {RSS_GROWTH_LIMIT}×); \
         descriptors {:+} and {:+} (limit +{FD_SLACK}), besides the server's pool of provider connections, \
         {} to {} (limit: the concurrency).\n",
        last.server.rss as f64 / warm.server.rss.max(1) as f64,
        last.daemon.rss as f64 / warm.daemon.rss.max(1) as f64,
        other_fds(last.server) as i64 - other_fds(warm.server) as i64,
        other_fds(last.daemon) as i64 - other_fds(warm.daemon) as i64,
        warm.server.provider_connections,
        last.server.provider_connections,
    ));
    if !tally.errors.is_empty() {
        out.push_str(&format!("\nFirst errors: {:?}\n", tally.errors));
    }
    out
}

/// Replaces the soak's section of `path` with `report`.
fn write_report(path: &Path, report: &str) {
    let section =
        report::Section { heading: "## Soak", start_marker: "<!-- soak:begin -->", end_marker: "<!-- soak:end -->" };
    section.write(path, report).unwrap_or_else(|err| panic!("{err:#}"));
}
