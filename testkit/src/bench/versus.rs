//! The A/B bench: two ant-server builds, this one and a `--versus` build (of an earlier commit,
//! say), each with its own data directory, behind one fake LLM, both on the plain
//! `ANIATE_UPSTREAM_URL` set-up every earlier release understands. They run the seed `what`
//! tool alternately, round by round (which goes first alternates), first `concurrency` streams
//! at a time, then one at a time, so that drift of a noisy machine hits both alike.
//!
//! It answers "did this change cost anything on the normal path?": each build's CPU per stream
//! (read from `/proc` around each round), throughput and time to first token, and the ratio of
//! the two in every round, whose spread says how large a difference this machine can see.
//!
//! The baseline may instead be a peer: the LiteLLM proxy (`--versus-litellm`), one worker, in
//! front of the same fake, driven with the requests the bench sends straight to the fake
//! (the tool's system prompt is ant-server's secret, so the proxy is sent one as long).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use super::load::{Target, run_round};
use super::procfs::ClockTicks;
use super::server::{
    Config, FAKE_LISTENING, INSTRUCTIONS, SERVER_RUNS_PER_USER, ScratchDir, create_users, direct_target, http_client,
    listening_url, reply_text, spawn_server,
};
use super::stats::{ModeTotals, Summary, added_ms};
use crate::TestProcess;

const TOOL_SLUG: &str = "what";

#[derive(Clone, Debug)]
pub struct VersusConfig {
    /// The build under test (`server_bin`), the fake, and the load: `concurrency`, `runs` and
    /// `sequential_runs` per build, spread over `rounds`; `guard_file` is not used.
    pub load: Config,
    /// What to compare it with.
    pub baseline: Baseline,
}

/// The peers' part of `docs/benchmarks.md`: ant-server against the LiteLLM proxy.
pub const PEERS_SECTION: super::report::Section<'static> = super::report::Section {
    heading: "## ant-server and the LiteLLM proxy",
    start_marker: "<!-- bench-peers:start -->",
    end_marker: "<!-- bench-peers:end -->",
};

/// The other side of the comparison.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// Another ant-server build.
    Build(PathBuf),
    /// The `litellm` command of a LiteLLM proxy install, run with one worker.
    LiteLlm(PathBuf),
}

impl Baseline {
    /// What the table calls each side: (current, baseline).
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Baseline::Build(_) => ("current", "baseline"),
            Baseline::LiteLlm(_) => ("ant-server", "LiteLLM proxy"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Baseline::Build(bin) => format!("`{}`", bin.display()),
            Baseline::LiteLlm(bin) => format!("the LiteLLM proxy, one worker (`{}`)", bin.display()),
        }
    }
}

/// The model the proxy serves, routed to the fake (which answers any model). Not a Llama name:
/// for those the proxy fetches a tokenizer from Hugging Face, which this offline machine cannot
/// reach, and each request would wait for its retries.
const LITELLM_MODEL: &str = "bench-model";

/// The proxy's master key, for this bench only (it refuses to start without one).
const LITELLM_KEY: &str = "sk-aniate-bench-only";

/// How long the LiteLLM proxy gets to start (it imports a great deal of Python).
const LITELLM_STARTUP: Duration = Duration::from_secs(120);

/// One build's figures in one phase.
#[derive(Debug, Default)]
pub struct Side {
    pub totals: ModeTotals,
    /// The server process's CPU time over the phase's rounds.
    pub cpu: Duration,
    /// Its CPU per completed stream in each round, in order.
    pub round_cpu_per_stream: Vec<Duration>,
}

impl Side {
    fn add(&mut self, round: super::load::RoundResult, cpu: Duration) {
        let n = round.samples.len().max(1) as u32;
        self.round_cpu_per_stream.push(cpu / n);
        self.cpu += cpu;
        self.totals.add(round);
    }

    pub fn cpu_per_stream(&self) -> Duration {
        self.cpu / self.totals.samples.len().max(1) as u32
    }
}

/// Both builds in one phase (one concurrency).
#[derive(Debug, Default)]
pub struct VersusPhase {
    pub concurrency: usize,
    pub current: Side,
    pub baseline: Side,
}

impl VersusPhase {
    /// Current / baseline CPU per stream, round by round, sorted: the spread this machine shows.
    pub fn round_cpu_ratios(&self) -> Vec<f64> {
        let mut ratios: Vec<f64> = self
            .current
            .round_cpu_per_stream
            .iter()
            .zip(&self.baseline.round_cpu_per_stream)
            .filter(|(_, base)| !base.is_zero())
            .map(|(cur, base)| cur.as_secs_f64() / base.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }

    /// Current / baseline CPU per stream over the whole phase.
    pub fn cpu_ratio(&self) -> f64 {
        let base = self.baseline.cpu_per_stream().as_secs_f64();
        if base == 0.0 { 0.0 } else { self.current.cpu_per_stream().as_secs_f64() / base }
    }
}

#[derive(Debug)]
pub struct VersusReport {
    pub config: VersusConfig,
    pub concurrent: VersusPhase,
    pub sequential: Option<VersusPhase>,
    pub elapsed: Duration,
}

impl VersusReport {
    pub fn errors(&self) -> Vec<&str> {
        let mut phases = vec![&self.concurrent];
        phases.extend(&self.sequential);
        phases
            .iter()
            .flat_map(|phase| [&phase.current, &phase.baseline])
            .flat_map(|side| side.totals.errors.iter().map(String::as_str))
            .collect()
    }

    pub fn to_markdown(&self, machine: &super::report::Machine, command: &str) -> String {
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
        let mut text = format!(
            "Measured on {}, {:.0} s in all: `{command}`.\nBaseline: {}; current: `{}`.\n\n\
             | relay | concurrency | streams | errors | streams/s | relay CPU per stream | TTFT p50 | TTFT p99 |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
            machine.describe(),
            self.elapsed.as_secs_f64(),
            self.config.baseline.describe(),
            self.config.load.server_bin.display(),
        );
        let (current_name, baseline_name) = self.config.baseline.names();
        let mut phases = vec![&self.concurrent];
        phases.extend(&self.sequential);
        for phase in &phases {
            for (name, side) in [(baseline_name, &phase.baseline), (current_name, &phase.current)] {
                let summary: Summary = side.totals.summary();
                text.push_str(&format!(
                    "| {name} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
                    phase.concurrency,
                    summary.runs,
                    summary.errors,
                    summary.throughput,
                    ms(side.cpu_per_stream()),
                    ms(summary.ttft_p50),
                    ms(summary.ttft_p99),
                ));
            }
        }
        text.push('\n');
        for phase in &phases {
            let (cur, base) = (phase.current.totals.summary(), phase.baseline.totals.summary());
            let ratios = phase.round_cpu_ratios();
            let spread = match (ratios.first(), ratios.last()) {
                (Some(low), Some(high)) => format!("rounds ranged ×{low:.2} to ×{high:.2}"),
                _ => "no rounds".to_owned(),
            };
            text.push_str(&format!(
                "- {} at a time: {current_name} / {baseline_name}: CPU per stream ×{:.3} ({spread}); throughput ×{:.3}; TTFT p50 {:+.3} ms.\n",
                phase.concurrency,
                phase.cpu_ratio(),
                if base.throughput == 0.0 { 0.0 } else { cur.throughput / base.throughput },
                added_ms(cur.ttft_p50, base.ttft_p50),
            ));
        }
        text
    }
}

pub fn run(config: VersusConfig) -> anyhow::Result<VersusReport> {
    let started = Instant::now();
    let mut scratch = ScratchDir::create()?;
    let result = run_in(&config, &scratch);
    if let Err(err) = &result {
        scratch.keep = true;
        eprintln!("bench-server --versus: failed; process logs kept in {}: {err:#}", scratch.path().display());
    }
    Ok(VersusReport { elapsed: started.elapsed(), ..result? })
}

fn run_in(versus: &VersusConfig, scratch: &ScratchDir) -> anyhow::Result<VersusReport> {
    let config = &versus.load;
    let dir = scratch.path();
    let reply = reply_text(config.reply_chars);
    let chunk_chars = config.chunk_chars.to_string();
    let fake_args =
        ["--bind", "127.0.0.1:0", "--chunk-delay-ms", "0", "--chunk-chars", &chunk_chars, "--reply", &reply];
    let mut fake = TestProcess::spawn(&config.fake_bin, &fake_args, &[("ANIATE_LOG", "warn")], &dir.join("fake.log"))
        .with_context(|| format!("cannot start the fake LLM {}", config.fake_bin.display()))?;
    let fake_url = listening_url(&fake, FAKE_LISTENING)?;

    let n_runs = 1 + config.warmup_runs + config.runs + config.sequential_runs;
    let mut servers = Vec::new();
    let mut builds = vec![("current", &config.server_bin)];
    if let Baseline::Build(bin) = &versus.baseline {
        builds.push(("baseline", bin));
    }
    for (name, bin) in builds {
        let data_dir = dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.to_string_lossy().into_owned();
        eprintln!("bench-server --versus: creating the {name} build's users");
        let tokens = create_users(bin, &data_dir, n_runs.div_ceil(SERVER_RUNS_PER_USER))?;
        let (process, url) = spawn_server(bin, &data_dir, &fake_url, &dir.join(format!("{name}.log")))?;
        servers.push((process, url, tokens));
    }
    let litellm = match &versus.baseline {
        Baseline::Build(_) => None,
        Baseline::LiteLlm(bin) => Some(spawn_litellm(bin, &fake_url, dir)?),
    };
    let clock = ClockTicks::detect();
    let pids = [servers[0].0.pid(), litellm.as_ref().map_or_else(|| servers[1].0.pid(), |(process, _)| process.pid())];

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let result = runtime.block_on(async {
        let client = http_client(config.concurrency)?;
        let mut targets: Vec<Arc<Target>> = servers
            .iter()
            .map(|(_, url, tokens)| Arc::new(Target::server(client.clone(), url, TOOL_SLUG, tokens, INSTRUCTIONS)))
            .collect();
        if let Some((_, url)) = &litellm {
            let target =
                direct_target(client.clone(), url, LITELLM_MODEL).with_authorization(format!("Bearer {LITELLM_KEY}"));
            targets.push(Arc::new(target));
        }
        let (current_name, baseline_name) = versus.baseline.names();
        for (target, name) in targets.iter().zip([current_name, baseline_name]) {
            target.run_once().await.map_err(|err| anyhow!("a run through {name} failed: {err}"))?;
            let warmup = run_round(target, config.warmup_runs, config.concurrency).await;
            if let Some(err) = warmup.errors.first() {
                bail!("{} warm-up runs through {name} failed, first: {err}", warmup.errors.len());
            }
        }
        let phase = |concurrency: usize, runs: usize| {
            let targets = &targets;
            async move {
                let mut phase = VersusPhase { concurrency, ..VersusPhase::default() };
                let rounds = config.rounds.clamp(1, runs.max(1));
                for round_idx in 0..rounds {
                    let n_runs = runs / rounds + usize::from(round_idx < runs % rounds);
                    let order = if round_idx % 2 == 0 { [0, 1] } else { [1, 0] };
                    for side_idx in order {
                        let before = clock.cpu_time(pids[side_idx]).unwrap_or_default();
                        let round = run_round(&targets[side_idx], n_runs, concurrency).await;
                        let cpu = clock.cpu_time(pids[side_idx]).unwrap_or_default().saturating_sub(before);
                        let side = if side_idx == 0 { &mut phase.current } else { &mut phase.baseline };
                        side.add(round, cpu);
                    }
                    eprintln!(
                        "bench-server --versus: {concurrency} at a time, round {}/{rounds}: CPU per stream ×{:.3}",
                        round_idx + 1,
                        phase.round_cpu_ratios_last()
                    );
                }
                phase
            }
        };
        let concurrent = phase(config.concurrency, config.runs).await;
        let sequential = if config.sequential_runs > 0 { Some(phase(1, config.sequential_runs).await) } else { None };
        anyhow::Ok(VersusReport { config: versus.clone(), concurrent, sequential, elapsed: Duration::ZERO })
    });
    for (mut process, _, _) in servers {
        let _ = process.terminate(Duration::from_secs(5));
    }
    if let Some((mut process, _)) = litellm {
        let _ = process.terminate(Duration::from_secs(10));
    }
    let _ = fake.terminate(Duration::from_secs(5));
    result
}

/// Starts `litellm` on a free loopback port with one worker, its one model routed to the fake,
/// and waits until it answers; returns it and its OpenAI-compatible base URL (`…/v1`).
fn spawn_litellm(
    bin: &std::path::Path,
    fake_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(TestProcess, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: {LITELLM_MODEL}\n    litellm_params:\n      model: openai/{LITELLM_MODEL}\n      \
             api_base: {fake_url}\n      api_key: bench\n"
        ),
    )?;
    let (config, port_text) = (config.to_string_lossy().into_owned(), port.to_string());
    let args = ["--config", &config, "--host", "127.0.0.1", "--port", &port_text, "--num_workers", "1"];
    eprintln!("bench-server --versus: starting the LiteLLM proxy ({})", bin.display());
    // Offline: the model price map bundled with the package, no Hugging Face, no telemetry.
    let envs = [
        ("LITELLM_LOG", "ERROR"),
        ("LITELLM_MASTER_KEY", LITELLM_KEY),
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ("HF_HUB_OFFLINE", "1"),
        ("LITELLM_TELEMETRY", "False"),
    ];
    let log = dir.join("litellm.log");
    let process =
        TestProcess::spawn(bin, &args, &envs, &log).with_context(|| format!("cannot start {}", bin.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut stream| {
            use std::io::{Read, Write};
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            stream.write_all(b"GET /health/liveliness HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).ok()?;
            Some(head.ends_with(b"200"))
        });
        if ready == Some(true) {
            return Ok((process, format!("{base}/v1")));
        }
        // A process that exited stays a zombie (state `Z`) until it is reaped.
        let exited = std::fs::read_to_string(format!("/proc/{}/stat", process.pid()))
            .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')));
        if started.elapsed() > LITELLM_STARTUP || exited {
            bail!(
                "the LiteLLM proxy did not answer on {base} within {} s; its log ends:\n{}",
                LITELLM_STARTUP.as_secs(),
                crate::process::read_log_tail(&log, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl VersusPhase {
    /// The last round's current/baseline CPU per stream, for progress lines.
    fn round_cpu_ratios_last(&self) -> f64 {
        match (self.current.round_cpu_per_stream.last(), self.baseline.round_cpu_per_stream.last()) {
            (Some(cur), Some(base)) if !base.is_zero() => cur.as_secs_f64() / base.as_secs_f64(),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::{RoundResult, Sample};
    use super::*;

    fn round(n: usize) -> RoundResult {
        let sample = Sample { ttft: Duration::from_millis(2), total: Duration::from_millis(5) };
        RoundResult { samples: vec![sample; n], errors: vec![], wall: Duration::from_millis(100) }
    }

    #[test]
    fn ratios_are_per_stream_and_per_round() {
        let mut phase = VersusPhase { concurrency: 4, ..VersusPhase::default() };
        phase.current.add(round(10), Duration::from_millis(10));
        phase.baseline.add(round(10), Duration::from_millis(20));
        phase.current.add(round(20), Duration::from_millis(30));
        phase.baseline.add(round(10), Duration::from_millis(10));
        assert_eq!(phase.current.cpu_per_stream(), Duration::from_millis(40) / 30);
        assert_eq!(phase.round_cpu_ratios(), [0.5, 1.5]);
        assert!((phase.cpu_ratio() - 1333.0 / 1500.0).abs() < 1e-3, "{}", phase.cpu_ratio());
        assert!((phase.round_cpu_ratios_last() - 1.5).abs() < 1e-9);
    }
}
