//! `bench-lsp`: measures `ant-lsp` through the real binary, as an editor sees it, and prints
//! a Markdown table. Not a timed test: run it on release builds.
//!
//! ```sh
//! cargo build --release -p aniate -p ant-server -p aniate-testkit --bins
//! cargo run --release -p aniate-lsp --example bench-lsp
//! ```
//!
//! - `textDocument/codeAction` round trips, 1,000 in a row (after 100 to warm up): p50 ≤ 1 ms,
//!   p99 ≤ 5 ms.
//! - `ant-lsp` memory (`VmRSS`, `VmHWM` from `/proc`): ≤ 10 MB.
//! - From sending `codeAction/resolve` for "Aniate: fix" to the first `$/progress` report
//!   (the first streamed text), against the fake LLM at zero delay, through the daemon and
//!   the server.

#[path = "../tests/it/client.rs"]
mod client;
#[path = "../tests/it/procs.rs"]
mod procs;

use std::{path::Path, time::Duration, time::Instant};

use aniate_testkit::{
    FakeLlmConfig, Rule,
    bench::{procfs, report::Machine, stats::percentile},
    stack::{Stack, StackOptions, workspace_bin},
};
use anyhow::Context;
use serde_json::{Value, json};

use client::{LspClient, full_capabilities};

const N_ACTIONS: usize = 1_000;
const N_WARMUP: usize = 100;
const N_RUNS: usize = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let fixed: String = (0..200).map(|n| format!("def f{n}(a, b):\n    return a + b\n\n")).collect();
    let fake = FakeLlmConfig {
        rules: vec![Rule { when_contains: "bench-me".to_owned(), reply: format!("```python\n# bench-me\n{fixed}```") }],
        ..Default::default()
    };
    // The default plan allows 20 runs a minute; the bench makes more.
    let server_env = vec![("ANIATE_RATE_LIMIT_PER_MIN".to_owned(), "100000".to_owned())];
    let stack = Stack::start(StackOptions { fake, server_env, ..Default::default() }).await?;
    let home = stack.new_home("h");
    let result = bench(&stack, &home, &fixed).await;
    // Whatever happened, no daemon outlives the bench.
    for pid in procs::daemons_of(&home) {
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    }
    result
}

async fn bench(stack: &Stack, home: &Path, fixed: &str) -> anyhow::Result<()> {
    let work = stack.new_home("work");
    let mut env = stack.client_env(home);
    env.retain(|(key, _)| key != "ANIATE_LOG");
    env.push(("ANIATE_DAEMON_EXE".to_owned(), workspace_bin("aniated").display().to_string()));
    let ant = |args: Vec<String>| {
        let mut command = std::process::Command::new(workspace_bin("ant"));
        command.args(args).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    };
    let token = stack.signup("bench@example.test").await?;
    let status = ant(vec!["login".into(), "--token".into(), token]).output()?;
    anyhow::ensure!(status.status.success(), "ant login: {}", String::from_utf8_lossy(&status.stderr));
    let status = ant(vec!["install".into(), "fix".into(), "review".into(), "what".into()]).output()?;
    anyhow::ensure!(status.status.success(), "ant install: {}", String::from_utf8_lossy(&status.stderr));

    let started = Instant::now();
    let lsp = LspClient::spawn(&workspace_bin("ant-lsp"), &env, &work, &stack.dir.path().join("ant-lsp.log"));
    lsp.initialize(full_capabilities(), None).await;
    let startup = started.elapsed();
    let pid = lsp.child.id().context("ant-lsp pid")?;

    let buggy = fixed.replace("a + b", "a - b");
    let path = work.join("bench.py");
    let uri = client::file_uri(&path);
    let open = |version: i32, text: &str| json!({"textDocument": {"uri": uri, "languageId": "python", "version": version, "text": text}});
    lsp.notify_raw("textDocument/didOpen", open(1, &format!("# bench-me\n{buggy}"))).await;
    let params = json!({
        "textDocument": {"uri": uri},
        "range": {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 4}},
        "context": {"diagnostics": []}
    });

    for _ in 0..N_WARMUP {
        lsp.request_raw("textDocument/codeAction", params.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut round_trips = Vec::with_capacity(N_ACTIONS);
    let mut fix_action = Value::Null;
    for _ in 0..N_ACTIONS {
        let sent = Instant::now();
        let actions =
            lsp.request_raw("textDocument/codeAction", params.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        round_trips.push(sent.elapsed());
        if fix_action.is_null() {
            fix_action = actions
                .as_array()
                .and_then(|a| a.iter().find(|a| a["title"] == "Aniate: fix"))
                .cloned()
                .unwrap_or_default();
        }
    }
    round_trips.sort();
    let after_actions = procfs::memory(pid).context("read /proc")?;
    anyhow::ensure!(!fix_action.is_null(), "no Aniate: fix action");

    // Each run on new content, so the daemon's result cache does not answer it.
    let mut to_first_report = Vec::with_capacity(N_RUNS);
    let mut resolve_total = Vec::with_capacity(N_RUNS);
    for run in 0..N_RUNS {
        let text = format!("# bench-me {run}\n{buggy}");
        lsp.notify_raw("textDocument/didClose", json!({"textDocument": {"uri": uri}})).await;
        lsp.notify_raw("textDocument/didOpen", open(run as i32 + 2, &text)).await;
        let n_before = lsp.notifications("$/progress").len();
        let sent = Instant::now();
        let resolved =
            lsp.request_raw("codeAction/resolve", fix_action.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        resolve_total.push(sent.elapsed());
        anyhow::ensure!(
            !resolved["edit"].is_null(),
            "run {run}: no edit in {resolved}; messages: {:?}",
            lsp.messages()
        );
        let report = lsp
            .notifications("$/progress")
            .into_iter()
            .skip(n_before)
            .find(|m| m.params["value"]["kind"] == "report")
            .context("no progress report")?;
        to_first_report.push(report.at.duration_since(sent));
    }
    to_first_report.sort();
    resolve_total.sort();
    let after_runs = procfs::memory(pid).context("read /proc")?;

    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1_000_000.0);
    let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
    let p50 = percentile(&round_trips, 50.0);
    let p99 = percentile(&round_trips, 99.0);
    let peak = after_runs.peak_rss.max(after_actions.peak_rss);
    println!("### ant-lsp\n");
    println!("{}; release build; document of {} lines.\n", Machine::detect().describe(), buggy.lines().count() + 1);
    println!("| measure | result | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| codeAction round trip p50 ({N_ACTIONS} requests) | {} | ≤ 1 ms | {} |",
        ms(p50),
        verdict(p50 <= Duration::from_millis(1))
    );
    println!("| codeAction round trip p99 | {} | ≤ 5 ms | {} |", ms(p99), verdict(p99 <= Duration::from_millis(5)));
    println!("| codeAction round trip max | {} | | |", ms(*round_trips.last().unwrap_or(&Duration::ZERO)));
    println!(
        "| ant-lsp RSS after the code actions (VmRSS) | {} | ≤ 10 MB | {} |",
        mb(after_actions.rss),
        verdict(after_actions.rss <= 10_000_000)
    );
    println!(
        "| ant-lsp RSS after {N_RUNS} fix runs (VmRSS) | {} | ≤ 10 MB | {} |",
        mb(after_runs.rss),
        verdict(after_runs.rss <= 10_000_000)
    );
    println!("| ant-lsp peak RSS (VmHWM) | {} | ≤ 10 MB | {} |", mb(peak), verdict(peak <= 10_000_000));
    println!(
        "| resolve → first progress report, p50 ({N_RUNS} runs, fake LLM at zero delay) | {} | | |",
        ms(percentile(&to_first_report, 50.0))
    );
    println!("| resolve → first progress report, p95 | {} | | |", ms(percentile(&to_first_report, 95.0)));
    println!("| resolve → edit returned, p50 | {} | | |", ms(percentile(&resolve_total, 50.0)));
    println!("| start → initialize answered | {} | | |", ms(startup));

    lsp.shutdown().await;
    Ok(())
}
