//! The ant-server streaming-overhead bench: the same streamed runs through ant-server and
//! straight at the fake LLM, in one run and in interleaved rounds, so drift on a noisy
//! machine hits both modes alike.
//!
//! Three processes: the fake LLM and ant-server are spawned from their binaries, so neither
//! shares a runtime with the load generator (this process) or with each other. The server
//! uses a SQLite database in a scratch directory, removed at the end unless the bench failed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use super::load::{Mode, RoundResult, Target, UNGUARDED_SUFFIX, run_round};
use super::procfs::{self, ClockTicks, Memory};
use super::report::{Machine, Section, format_mb, format_ms, format_signed_ms, verdict};
use super::stats::{ModeTotals, Summary, added_ms};
use crate::TestProcess;
use crate::fake_llm::DEFAULT_MODEL;

/// This bench's part of `docs/benchmarks.md`.
pub const SECTION: Section<'static> = Section {
    heading: "## ant-server: streaming overhead",
    start_marker: "<!-- bench-server:start -->",
    end_marker: "<!-- bench-server:end -->",
};

/// Targets from the issue that asked for this bench.
pub const TARGET_ADDED_TTFT_P50_MS: f64 = 0.5;
pub const TARGET_ADDED_TTFT_P99_MS: f64 = 5.0;
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.90;
pub const TARGET_SERVER_RSS_BYTES: u64 = 40_000_000;
/// The prompt guard's budget: server CPU per stream, and time to first text, over the guard off.
pub const TARGET_GUARD_EXTRA_CPU: f64 = 0.05;
pub const TARGET_GUARD_ADDED_TTFT_MS: f64 = 1.0;
/// The OpenAI door's budget (issue 14): time to first token, and server CPU per stream, over
/// `POST /tool/{slug}` with the same tool.
pub const TARGET_OPENAI_ADDED_TTFT_MS: f64 = 0.1;
pub const TARGET_OPENAI_EXTRA_CPU: f64 = 0.05;

/// The seed tool the bench runs; a text tool, so the server relays the answer unchanged.
const TOOL_SLUG: &str = "what";
pub(crate) const INSTRUCTIONS: &str = "benchmark question";
/// Length of the `what` tool's system prompt, so the direct requests are as large as the
/// ones ant-server sends and the fake parses and records as much in both modes.
const SYSTEM_PROMPT_CHARS: usize = 2_635;
const BENCH_PASSWORD: &str = "bench-password-1";
/// Runs through the server per bench user. Users start on the `free` plan, whose monthly
/// token quota (500 000 when this was written) would stop one user after about 700 of
/// these runs; the per-minute limit is lifted with `ANIATE_RATE_LIMIT_PER_MIN` instead.
pub(crate) const SERVER_RUNS_PER_USER: usize = 300;
/// Requests a minute allowed on the `free` plan during the bench: never the limit.
pub(crate) const RATE_LIMIT_PER_MIN: &str = "1000000000";

pub(crate) const FAKE_LISTENING: &str = "aniate-fake-llm listening on ";
pub(crate) const SERVER_LISTENING: &str = "ant-server listening on ";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run and how hard.
#[derive(Clone, Debug)]
pub struct Config {
    pub server_bin: PathBuf,
    pub fake_bin: PathBuf,
    /// Streams in flight at once in the main phase.
    pub concurrency: usize,
    /// Streams per mode in the main phase.
    pub runs: usize,
    /// Rounds per phase; each runs both modes, in alternating order.
    pub rounds: usize,
    /// Streams per mode before measuring, not counted.
    pub warmup_runs: usize,
    /// Streams per mode run one at a time after the main phase; 0 skips that phase.
    pub sequential_runs: usize,
    /// Characters in each answer.
    pub reply_chars: usize,
    /// Characters per streamed chunk of the fake.
    pub chunk_chars: usize,
    /// Also run a copy of the tool with its prompt guard off, side by side, to measure the
    /// guard; needs the tool's file (`server/tools/what.toml`) to copy.
    pub guard_file: Option<PathBuf>,
}

/// CPU time (user + system) spent by each process, and by the whole machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub bench: Duration,
    pub fake: Duration,
    pub server: Duration,
    /// Interrupt time of all CPUs, mostly moving the streams' TCP segments. Part of
    /// `machine`, and much of it also of the processes' system time: the kernel charges an
    /// interrupt to the process it interrupted.
    pub interrupts: Duration,
    /// Every CPU's busy time: the three processes, interrupts, and anything else running.
    pub machine: Duration,
}

impl CpuUse {
    fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            bench: self.bench.saturating_sub(before.bench),
            fake: self.fake.saturating_sub(before.fake),
            server: self.server.saturating_sub(before.server),
            interrupts: self.interrupts.saturating_sub(before.interrupts),
            machine: self.machine.saturating_sub(before.machine),
        }
    }

    /// The three processes.
    fn processes(self) -> Duration {
        self.bench + self.fake + self.server
    }

    fn add(&mut self, other: CpuUse) {
        self.bench += other.bench;
        self.fake += other.fake;
        self.server += other.server;
        self.interrupts += other.interrupts;
        self.machine += other.machine;
    }
}

/// One phase: both modes at one concurrency.
#[derive(Debug, Default)]
pub struct Phase {
    pub concurrency: usize,
    pub direct: ModeTotals,
    pub server: ModeTotals,
    /// The same tool with its prompt guard off (empty when the bench ran without it).
    pub unguarded: ModeTotals,
    /// The same tool through the OpenAI door, `/v1/chat/completions`.
    pub openai: ModeTotals,
    /// CPU used while each mode's streams were in flight.
    pub direct_cpu: CpuUse,
    pub server_cpu: CpuUse,
    pub unguarded_cpu: CpuUse,
    pub openai_cpu: CpuUse,
}

impl Phase {
    fn add(&mut self, mode: Mode, round: RoundResult, cpu: CpuUse) {
        match mode {
            Mode::Direct => {
                self.direct.add(round);
                self.direct_cpu.add(cpu);
            }
            Mode::Server => {
                self.server.add(round);
                self.server_cpu.add(cpu);
            }
            Mode::Unguarded => {
                self.unguarded.add(round);
                self.unguarded_cpu.add(cpu);
            }
            Mode::OpenAi => {
                self.openai.add(round);
                self.openai_cpu.add(cpu);
            }
        }
    }

    /// Server throughput over direct throughput, over all rounds.
    pub fn throughput_ratio(&self) -> f64 {
        let direct = self.direct.summary().throughput;
        if direct > 0.0 { self.server.summary().throughput / direct } else { 0.0 }
    }

    /// The share of the machine's CPUs kept busy by anything but the three processes (other
    /// programs, the kernel's own threads, interrupts not charged to the processes) while
    /// this phase's rounds ran; `None` without CPU figures.
    pub fn other_load(&self, n_cpus: usize) -> Option<f64> {
        let capacity = (self.direct.wall + self.server.wall + self.unguarded.wall + self.openai.wall).as_secs_f64()
            * n_cpus.max(1) as f64;
        let [direct, server, unguarded, openai] =
            [self.direct_cpu, self.server_cpu, self.unguarded_cpu, self.openai_cpu];
        let machine = direct.machine + server.machine + unguarded.machine + openai.machine;
        if capacity <= 0.0 || machine.is_zero() {
            return None;
        }
        let processes = direct.processes() + server.processes() + unguarded.processes() + openai.processes();
        Some(machine.saturating_sub(processes).as_secs_f64() / capacity)
    }

    /// The same ratio round by round, sorted.
    fn round_ratios(&self) -> Vec<f64> {
        let mut ratios: Vec<f64> = self
            .direct
            .round_throughputs
            .iter()
            .zip(&self.server.round_throughputs)
            .filter(|(direct, _)| **direct > 0.0)
            .map(|(direct, server)| server / direct)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }
}

/// Everything the bench measured.
#[derive(Debug)]
pub struct Report {
    pub config: Config,
    /// Content chunks in each answer.
    pub n_chunks: usize,
    pub concurrent: Phase,
    pub sequential: Option<Phase>,
    /// Users the server runs were spread over.
    pub n_users: usize,
    /// ant-server after one run, before the load.
    pub server_memory_idle: Option<Memory>,
    /// ant-server after all runs.
    pub server_memory: Option<Memory>,
    /// Whether `server_memory.peak_rss` covers only the load (warm-up and measured rounds);
    /// otherwise it also covers start-up.
    pub peak_covers_load_only: bool,
    pub fake_memory: Option<Memory>,
    /// Whether CPU times could be read from `/proc`.
    pub cpu_measured: bool,
    /// The whole bench, start-up included.
    pub elapsed: Duration,
}

/// Runs the bench. Progress goes to stderr.
pub fn run(config: Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut scratch = ScratchDir::create()?;
    let result = run_in(&config, scratch.path(), started);
    if let Err(err) = &result {
        scratch.keep = true;
        eprintln!("bench-server: failed; process logs kept in {}: {err:#}", scratch.path().display());
    }
    result
}

fn run_in(config: &Config, scratch: &Path, started: Instant) -> anyhow::Result<Report> {
    let reply = reply_text(config.reply_chars);
    let chunk_chars = config.chunk_chars.to_string();
    let fake_args =
        ["--bind", "127.0.0.1:0", "--chunk-delay-ms", "0", "--chunk-chars", &chunk_chars, "--reply", &reply];
    let mut fake = TestProcess::spawn(&config.fake_bin, &fake_args, &[("ANIATE_LOG", "warn")], &scratch.join("fake.log"))
        .with_context(|| {
            format!(
                "cannot start the fake LLM {} (build it with `cargo build --release -p aniate-testkit`, or pass --fake-bin)",
                config.fake_bin.display()
            )
        })?;
    let fake_url = listening_url(&fake, FAKE_LISTENING)?;

    let data_dir = scratch.join("server-data");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.to_string_lossy().into_owned();
    // Every mode through the server spreads its runs over all users.
    let n_server_modes = 2 + usize::from(config.guard_file.is_some());
    let n_server_runs = (1 + config.warmup_runs + config.runs + config.sequential_runs) * n_server_modes;
    let n_users = n_server_runs.div_ceil(SERVER_RUNS_PER_USER);
    eprintln!("bench-server: creating {n_users} users");
    let tokens = create_users(&config.server_bin, &data_dir, n_users)?;
    if let Some(file) = &config.guard_file {
        push_unguarded_copy(&config.server_bin, &data_dir, file, scratch)?;
    }
    let (mut server, server_url) = spawn_server(&config.server_bin, &data_dir, &fake_url, &scratch.join("server.log"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let pids = Pids { fake: fake.pid(), server: server.pid(), clock: ClockTicks::detect() };
    let report = runtime.block_on(drive(config, pids, &fake_url, &server_url, &reply, &tokens))?;
    // The processes' exit status says nothing about the bench; SIGKILL on drop is the fallback.
    let _ = server.terminate(Duration::from_secs(5));
    let _ = fake.terminate(Duration::from_secs(5));
    Ok(Report { elapsed: started.elapsed(), ..report })
}

/// Starts `ant-server serve` on a free loopback port, on `data_dir`, with the fake at `fake_url`
/// as its one provider and no rate limit to speak of; returns it and its URL.
pub(crate) fn spawn_server(
    server_bin: &Path,
    data_dir: &str,
    fake_url: &str,
    log: &Path,
) -> anyhow::Result<(TestProcess, String)> {
    let env = [
        ("ANIATE_BIND", "127.0.0.1:0"),
        ("ANIATE_DATA_DIR", data_dir),
        ("ANIATE_UPSTREAM_URL", fake_url),
        ("ANIATE_UPSTREAM_API_KEY", "bench"),
        ("ANIATE_RATE_LIMIT_PER_MIN", RATE_LIMIT_PER_MIN),
        ("ANIATE_LOG", "warn"),
    ];
    let server = TestProcess::spawn(server_bin, &["serve"], &env, log).with_context(|| {
        format!(
            "cannot start ant-server {} (build it with `cargo build --release -p ant-server`, or pass --server-bin)",
            server_bin.display()
        )
    })?;
    let url = listening_url(&server, SERVER_LISTENING)?;
    Ok((server, url))
}

/// The URL a spawned process announces on the stdout line starting with `prefix`.
pub(crate) fn listening_url(process: &TestProcess, prefix: &str) -> anyhow::Result<String> {
    let line = process.wait_for_stdout_line(prefix, STARTUP_TIMEOUT)?;
    Ok(line[prefix.len()..].trim().to_owned())
}

/// The processes whose CPU time and memory the bench reads.
#[derive(Clone, Copy)]
struct Pids {
    fake: u32,
    server: u32,
    clock: ClockTicks,
}

impl Pids {
    fn cpu(self) -> Option<CpuUse> {
        let machine = self.clock.machine_time()?;
        Some(CpuUse {
            bench: self.clock.cpu_time(std::process::id())?,
            fake: self.clock.cpu_time(self.fake)?,
            server: self.clock.cpu_time(self.server)?,
            interrupts: machine.interrupts,
            machine: machine.busy,
        })
    }
}

async fn drive(
    config: &Config,
    pids: Pids,
    fake_url: &str,
    server_url: &str,
    reply: &str,
    tokens: &[String],
) -> anyhow::Result<Report> {
    let direct_client = http_client(config.concurrency)?;
    let server_client = http_client(config.concurrency)?;
    let direct = Arc::new(direct_target(direct_client.clone(), fake_url, DEFAULT_MODEL));
    let server = Arc::new(Target::server(server_client.clone(), server_url, TOOL_SLUG, tokens, INSTRUCTIONS));
    let openai = Arc::new(Target::openai(server_client.clone(), server_url, TOOL_SLUG, tokens, INSTRUCTIONS));
    let unguarded = config.guard_file.as_ref().map(|_| {
        let slug = format!("{TOOL_SLUG}{UNGUARDED_SUFFIX}");
        Arc::new(Target::server(server_client, server_url, &slug, tokens, INSTRUCTIONS))
    });
    let fake = FakeControl { client: direct_client, root_url: fake_url.trim_end_matches('/').trim_end_matches("/v1") };

    // One run each first, so a broken setup fails with its own error instead of as thousands.
    direct.run_once().await.map_err(|err| anyhow!("a direct run failed: {err}"))?;
    server.run_once().await.map_err(|err| anyhow!("a run through ant-server failed: {err}"))?;
    openai.run_once().await.map_err(|err| anyhow!("a run through the OpenAI door failed: {err}"))?;
    if let Some(unguarded) = &unguarded {
        unguarded.run_once().await.map_err(|err| anyhow!("a run with the guard off failed: {err}"))?;
    }
    let server_memory_idle = procfs::memory(pids.server);
    let peak_covers_load_only = procfs::reset_peak_rss(pids.server).is_ok();

    eprintln!("bench-server: warming up ({} runs per mode)", config.warmup_runs);
    let mut targets = vec![&direct, &server, &openai];
    targets.extend(&unguarded);
    for target in targets {
        let warmup = run_round(target, config.warmup_runs, config.concurrency).await;
        if let Some(err) = warmup.errors.first() {
            bail!(
                "{} of {} warm-up runs ({}) failed, first: {err}",
                warmup.errors.len(),
                config.warmup_runs,
                target.mode.name()
            );
        }
    }
    fake.clear_record().await?;

    let mut targets = vec![direct, server, openai];
    targets.extend(unguarded);
    let concurrent = run_phase(&targets, &fake, pids, config.concurrency, config.runs, config.rounds).await?;
    let sequential = if config.sequential_runs > 0 {
        Some(run_phase(&targets, &fake, pids, 1, config.sequential_runs, config.rounds).await?)
    } else {
        None
    };
    Ok(Report {
        config: config.clone(),
        n_chunks: reply.chars().count().div_ceil(config.chunk_chars.max(1)),
        concurrent,
        sequential,
        n_users: tokens.len(),
        server_memory_idle,
        server_memory: procfs::memory(pids.server),
        peak_covers_load_only,
        fake_memory: procfs::memory(pids.fake),
        cpu_measured: pids.cpu().is_some(),
        elapsed: Duration::ZERO,
    })
}

/// Rounds of `runs` streams per mode in all, rotating which mode goes first.
async fn run_phase(
    targets: &[Arc<Target>],
    fake: &FakeControl<'_>,
    pids: Pids,
    concurrency: usize,
    runs: usize,
    rounds: usize,
) -> anyhow::Result<Phase> {
    let rounds = rounds.clamp(1, runs.max(1));
    let mut phase = Phase { concurrency, ..Phase::default() };
    for round_idx in 0..rounds {
        let n_runs = runs / rounds + usize::from(round_idx < runs % rounds);
        let mut order: Vec<&Arc<Target>> = targets.iter().collect();
        order.rotate_left(round_idx % targets.len().max(1));
        for target in order {
            let before = pids.cpu().unwrap_or_default();
            let round = run_round(target, n_runs, concurrency).await;
            let cpu = pids.cpu().unwrap_or_default().since(before);
            phase.add(target.mode, round, cpu);
        }
        // Keeps the fake's record (a copy of every request) from growing through the bench.
        fake.clear_record().await?;
        let direct_rate = phase.direct.round_throughputs.last().copied().unwrap_or_default();
        let server_rate = phase.server.round_throughputs.last().copied().unwrap_or_default();
        eprintln!(
            "bench-server: {concurrency} concurrent, round {}/{rounds}: direct {direct_rate:.0} streams/s, server {server_rate:.0} streams/s",
            round_idx + 1
        );
    }
    Ok(phase)
}

pub(crate) fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .http1_only()
        .pool_max_idle_per_host(concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(600))
        .build()
        .context("building the HTTP client")
}

/// Creates `n_users` users and an API token for each with `ant-server admin`, in the data
/// dir the server will use, and returns the tokens. Not through `POST /auth/signup`: each
/// sign-up hashes a password with Argon2 (19 MiB of working memory), and the server's
/// memory should show the streaming load, not the set-up.
pub(crate) fn create_users(server_bin: &Path, data_dir: &str, n_users: usize) -> anyhow::Result<Vec<String>> {
    let admin = |args: &[&str], stdin: Option<&str>| -> anyhow::Result<String> {
        let mut command = Command::new(server_bin);
        command.arg("admin").args(args);
        crate::process::clear_aniate_env(&mut command);
        command.env("ANIATE_DATA_DIR", data_dir).env("ANIATE_LOG", "warn");
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let describe = || format!("{} admin {}", server_bin.display(), args.join(" "));
        let mut child = command.spawn().with_context(|| format!("cannot run {}", describe()))?;
        if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
            pipe.write_all(text.as_bytes()).with_context(|| format!("writing to {}", describe()))?;
        }
        let output = child.wait_with_output().with_context(|| format!("waiting for {}", describe()))?;
        if !output.status.success() {
            bail!("{} failed with {}: {}", describe(), output.status, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let password = format!("{BENCH_PASSWORD}\n");
    (0..n_users)
        .map(|user_idx| {
            let email = format!("bench-{user_idx}@example.test");
            admin(&["create-user", "--email", &email, "--password-stdin"], Some(&password))?;
            let token = admin(&["create-token", "--email", &email, "--name", "bench"], None)?;
            if token.is_empty() || token.contains(char::is_whitespace) {
                bail!("`ant-server admin create-token` printed {token:?}, not a token");
            }
            Ok(token)
        })
        .collect()
}

/// Pushes a copy of the bench's tool, from its file, as `<slug>-unguarded` with the prompt
/// guard off, so the guard's cost is measured on the same prompt.
fn push_unguarded_copy(server_bin: &Path, data_dir: &str, file: &Path, scratch: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let slug_line = format!("slug = \"{TOOL_SLUG}\"");
    if !text.contains(&slug_line) {
        bail!("{} does not define the `{TOOL_SLUG}` tool", file.display());
    }
    let copy = text.replacen(&slug_line, &format!("slug = \"{TOOL_SLUG}{UNGUARDED_SUFFIX}\"\nguard = \"off\""), 1);
    let copy_path = scratch.join("unguarded.toml");
    std::fs::write(&copy_path, copy).with_context(|| format!("writing {}", copy_path.display()))?;
    let output = Command::new(server_bin)
        .args(["admin", "tools", "push"])
        .arg(&copy_path)
        .env("ANIATE_DATA_DIR", data_dir)
        .env("ANIATE_LOG", "warn")
        .output()
        .with_context(|| format!("cannot run {} admin tools push", server_bin.display()))?;
    if !output.status.success() {
        bail!("admin tools push failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// The fake's control endpoints.
struct FakeControl<'a> {
    client: reqwest::Client,
    /// The fake's URL without `/v1`.
    root_url: &'a str,
}

impl FakeControl<'_> {
    async fn clear_record(&self) -> anyhow::Result<()> {
        let url = format!("{}/_fake/requests", self.root_url);
        let response = self.client.delete(&url).send().await.with_context(|| format!("DELETE {url}"))?;
        if !response.status().is_success() {
            bail!("DELETE {url} answered {}", response.status());
        }
        Ok(())
    }
}

/// `chars` characters of plain prose, the same on every run.
pub fn reply_text(chars: usize) -> String {
    const PROSE: &str = "The function reads the file line by line, keeps a running total of the bytes seen, \
                         and returns early when the limit is reached. ";
    PROSE.chars().cycle().take(chars).collect()
}

/// A streamed run of `model` straight at the OpenAI-compatible `base_url`, with messages as large
/// as the ones ant-server sends for the `what` tool (whose system prompt only it knows).
pub(crate) fn direct_target(client: reqwest::Client, base_url: &str, model: &str) -> Target {
    let user_message = format!("<instructions>\n{INSTRUCTIONS}\n</instructions>\n");
    Target::direct(client, base_url, model, &stand_in_system_prompt(), &user_message)
}

/// A system prompt as long as the `what` tool's, which only the server knows.
fn stand_in_system_prompt() -> String {
    const PROSE: &str = "You are a stand-in system prompt, as long as the seed tool's, so that the fake LLM \
                         receives, parses and records requests of the same size in both modes. ";
    PROSE.chars().cycle().take(SYSTEM_PROMPT_CHARS).collect()
}

/// A directory under the system temp dir, removed on drop unless `keep` is set.
pub(crate) struct ScratchDir {
    path: PathBuf,
    pub(crate) keep: bool,
}

impl ScratchDir {
    pub(crate) fn create() -> anyhow::Result<ScratchDir> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("aniate-bench-server-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path, keep: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            // Leftovers in the temp dir are harmless; nothing to do about a failure here.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Report {
    /// Every failed run's error, all phases.
    pub fn errors(&self) -> Vec<&str> {
        let mut phases = vec![&self.concurrent];
        phases.extend(&self.sequential);
        phases
            .iter()
            .flat_map(|phase| {
                phase
                    .direct
                    .errors
                    .iter()
                    .chain(&phase.server.errors)
                    .chain(&phase.unguarded.errors)
                    .chain(&phase.openai.errors)
            })
            .map(String::as_str)
            .collect()
    }

    /// The results as Markdown: what ran where, the figures against their targets, then
    /// the details. `command` is how the bench was started.
    pub fn to_markdown(&self, machine: &Machine, command: &str) -> String {
        let config = &self.config;
        let concurrent = &self.concurrent;
        let direct = concurrent.direct.summary();
        let server = concurrent.server.summary();
        let added_p50 = added_ms(server.ttft_p50, direct.ttft_p50);
        let added_p99 = added_ms(server.ttft_p99, direct.ttft_p99);
        let ratio = concurrent.throughput_ratio();
        let peak_scope = if self.peak_covers_load_only { "under load" } else { "over the whole bench" };
        let mut out = String::new();
        let mut line = |text: &str| {
            out.push_str(text);
            out.push('\n');
        };

        let build = if cfg!(debug_assertions) { "debug" } else { "release" };
        line(&format!("Measured on {}, {build} build, with `{command}`.", machine.describe()));
        line(&format!(
            "Load: {} streamed runs of the `{TOOL_SLUG}` tool per mode, {} at a time, in {} rounds that alternate direct and through-server runs, after {} warm-up runs per mode.",
            config.runs,
            concurrent.concurrency,
            config.rounds.clamp(1, config.runs.max(1)),
            config.warmup_runs
        ));
        line(&format!(
            "The fake LLM answers {} characters in {} chunks with no delay; the bench, ant-server (SQLite) and the fake are three processes sharing the machine.",
            config.reply_chars, self.n_chunks
        ));
        line(&format!(
            "The server runs are spread over {} users on the `free` plan, whose per-minute limit is lifted (`ANIATE_RATE_LIMIT_PER_MIN`), so that no limit or quota is reached; they are created with `ant-server admin` before the server starts, so its memory holds no password hashing.",
            self.n_users
        ));
        line("");
        line("| Figure | Result | Target | |");
        line("|---|---:|---:|---|");
        line(&format!(
            "| Added time to first token, p50 | {} | ≤ {TARGET_ADDED_TTFT_P50_MS} ms | {} |",
            format_signed_ms(added_p50),
            verdict(added_p50 <= TARGET_ADDED_TTFT_P50_MS)
        ));
        line(&format!(
            "| Added time to first token, p99 | {} | ≤ {TARGET_ADDED_TTFT_P99_MS} ms | {} |",
            format_signed_ms(added_p99),
            verdict(added_p99 <= TARGET_ADDED_TTFT_P99_MS)
        ));
        line(&format!(
            "| Throughput, server / direct | {:.1} % | ≥ {:.0} % | {} |",
            ratio * 100.0,
            TARGET_THROUGHPUT_RATIO * 100.0,
            verdict(ratio >= TARGET_THROUGHPUT_RATIO)
        ));
        match self.server_memory {
            Some(memory) => line(&format!(
                "| ant-server RSS, peak {} (VmHWM) | {} | ≤ {} | {} |",
                peak_scope,
                format_mb(memory.peak_rss),
                format_mb(TARGET_SERVER_RSS_BYTES),
                verdict(memory.peak_rss <= TARGET_SERVER_RSS_BYTES)
            )),
            None => {
                line(&format!("| ant-server RSS, peak | not measured | ≤ {} | |", format_mb(TARGET_SERVER_RSS_BYTES)))
            }
        }
        if !concurrent.unguarded.samples.is_empty() {
            for phase in std::iter::once(concurrent).chain(&self.sequential) {
                let guarded = phase.server.summary();
                let unguarded = phase.unguarded.summary();
                line(&format!(
                    "| Prompt guard: added time to first text, p50, {} at a time | {} | ≤ +{TARGET_GUARD_ADDED_TTFT_MS} ms | {} |",
                    phase.concurrency,
                    format_signed_ms(added_ms(guarded.ttft_p50, unguarded.ttft_p50)),
                    verdict(added_ms(guarded.ttft_p50, unguarded.ttft_p50) <= TARGET_GUARD_ADDED_TTFT_MS)
                ));
                if self.cpu_measured {
                    let per_stream = |cpu: CpuUse, totals: &ModeTotals| {
                        cpu.server.as_secs_f64() / totals.samples.len().max(1) as f64
                    };
                    let on = per_stream(phase.server_cpu, &phase.server);
                    let off = per_stream(phase.unguarded_cpu, &phase.unguarded);
                    let extra = if off > 0.0 { on / off - 1.0 } else { 0.0 };
                    line(&format!(
                        "| Prompt guard: ant-server CPU per stream, on / off, {} at a time | {:.0} / {:.0} µs ({:+.1} %) | ≤ +{:.0} % | {} |",
                        phase.concurrency,
                        on * 1e6,
                        off * 1e6,
                        extra * 100.0,
                        TARGET_GUARD_EXTRA_CPU * 100.0,
                        verdict(extra <= TARGET_GUARD_EXTRA_CPU)
                    ));
                }
            }
        }
        if !concurrent.openai.samples.is_empty() {
            for phase in std::iter::once(concurrent).chain(&self.sequential) {
                let tool = phase.server.summary();
                let door = phase.openai.summary();
                let added = added_ms(door.ttft_p50, tool.ttft_p50);
                line(&format!(
                    "| OpenAI door: added time to first token over `/tool/{TOOL_SLUG}`, p50, {} at a time | {} | ≤ +{TARGET_OPENAI_ADDED_TTFT_MS} ms | {} |",
                    phase.concurrency,
                    format_signed_ms(added),
                    verdict(added <= TARGET_OPENAI_ADDED_TTFT_MS)
                ));
                if self.cpu_measured {
                    let per_stream = |cpu: CpuUse, totals: &ModeTotals| {
                        cpu.server.as_secs_f64() / totals.samples.len().max(1) as f64
                    };
                    let door = per_stream(phase.openai_cpu, &phase.openai);
                    let tool = per_stream(phase.server_cpu, &phase.server);
                    let extra = if tool > 0.0 { door / tool - 1.0 } else { 0.0 };
                    line(&format!(
                        "| OpenAI door: ant-server CPU per stream, `/v1` / `/tool/{TOOL_SLUG}`, {} at a time | {:.0} / {:.0} µs ({:+.1} %) | ≤ +{:.0} % | {} |",
                        phase.concurrency,
                        door * 1e6,
                        tool * 1e6,
                        extra * 100.0,
                        TARGET_OPENAI_EXTRA_CPU * 100.0,
                        verdict(extra <= TARGET_OPENAI_EXTRA_CPU)
                    ));
                }
            }
        }
        if let Some(sequential) = &self.sequential {
            let direct = sequential.direct.summary();
            let server = sequential.server.summary();
            for (name, server_ttft, direct_ttft) in
                [("p50", server.ttft_p50, direct.ttft_p50), ("p99", server.ttft_p99, direct.ttft_p99)]
            {
                line(&format!(
                    "| Added time to first token, {name}, one stream at a time | {} | | |",
                    format_signed_ms(added_ms(server_ttft, direct_ttft))
                ));
            }
        }
        line("");

        line(&format!("### {} streams at a time", concurrent.concurrency));
        line("");
        phase_table(&mut line, concurrent);
        if let Some(sequential) = &self.sequential {
            line("");
            line(&format!("### One stream at a time ({} runs per mode)", config.sequential_runs));
            line("");
            phase_table(&mut line, sequential);
        }

        if self.cpu_measured {
            line("");
            line("### CPU time per stream");
            line("");
            line(
                "User plus system time of each process (`/proc/PID/stat`) and busy time of all CPUs (`/proc/stat`) while each mode's streams were in flight, divided by the streams completed.",
            );
            line(
                "The whole machine's time also holds the kernel's own threads and anything else that ran meanwhile; of it, interrupts are mostly the kernel moving the streams' TCP segments over loopback, largely charged to the processes' system time too.",
            );
            line("`/proc` counts in clock ticks (usually 10 ms), so the figures of short phases are rough.");
            line("");
            line("| Mode | Bench client | Fake LLM | ant-server | Sum | Whole machine | Of which interrupts |");
            line("|---|---:|---:|---:|---:|---:|---:|");
            let mut phases = vec![concurrent];
            phases.extend(&self.sequential);
            for phase in &phases {
                for (mode, totals, cpu) in [
                    (Mode::Direct, &phase.direct, phase.direct_cpu),
                    (Mode::Server, &phase.server, phase.server_cpu),
                    (Mode::Unguarded, &phase.unguarded, phase.unguarded_cpu),
                    (Mode::OpenAi, &phase.openai, phase.openai_cpu),
                ] {
                    if totals.samples.is_empty() {
                        continue;
                    }
                    let per_stream = |time: Duration| format_us(time, totals.samples.len());
                    let server_column = if mode == Mode::Direct { "–".to_owned() } else { per_stream(cpu.server) };
                    line(&format!(
                        "| {}, {} at a time | {} | {} | {server_column} | {} | {} | {} |",
                        mode.name(),
                        phase.concurrency,
                        per_stream(cpu.bench),
                        per_stream(cpu.fake),
                        per_stream(cpu.processes()),
                        per_stream(cpu.machine),
                        per_stream(cpu.interrupts)
                    ));
                }
            }
            let other_loads: Vec<String> = phases
                .iter()
                .filter_map(|phase| {
                    let load = phase.other_load(machine.n_cpus)?;
                    Some(format!("{:.0} % with {} at a time", load * 100.0, phase.concurrency))
                })
                .collect();
            if !other_loads.is_empty() {
                line("");
                line(&format!(
                    "Other load: besides these three processes, the machine's CPUs were busy {} (other programs, kernel threads and interrupts; a quiet machine shows a few percent).",
                    other_loads.join(", ")
                ));
            }
        }

        line("");
        let memory = |memory: Option<Memory>, pick: fn(Memory) -> u64| {
            memory.map_or_else(|| "not measured".to_owned(), |memory| format_mb(pick(memory)))
        };
        line(&format!(
            "Memory: ant-server resident {} when idle (after one run), {} after the runs, {} at its peak {peak_scope}; the fake LLM {} at its peak.",
            memory(self.server_memory_idle, |m| m.rss),
            memory(self.server_memory, |m| m.rss),
            memory(self.server_memory, |m| m.peak_rss),
            memory(self.fake_memory, |m| m.peak_rss),
        ));
        line(&format!("The whole bench took {:.0} s.", self.elapsed.as_secs_f64()));
        let errors = self.errors();
        if !errors.is_empty() {
            line("");
            line(&format!("**{} runs failed.** First errors:", errors.len()));
            line("");
            for error in errors.iter().take(5) {
                line(&format!("- `{error}`"));
            }
        }
        out
    }
}

/// The per-mode table of one phase, with the server's additions and the throughput ratio.
fn phase_table(line: &mut impl FnMut(&str), phase: &Phase) {
    let direct = phase.direct.summary();
    let server = phase.server.summary();
    line("| Mode | Runs | Errors | TTFT p50 | TTFT p90 | TTFT p99 | Stream p50 | Streams/s |");
    line("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, summary) in [(Mode::Direct, direct), (Mode::Server, server)] {
        line(&summary_row(mode.name(), &summary));
    }
    if !phase.unguarded.samples.is_empty() {
        line(&summary_row(Mode::Unguarded.name(), &phase.unguarded.summary()));
    }
    if !phase.openai.samples.is_empty() {
        line(&summary_row(Mode::OpenAi.name(), &phase.openai.summary()));
    }
    line(&format!(
        "| server − direct | | | {} | {} | {} | {} | {:.1} % |",
        format_signed_ms(added_ms(server.ttft_p50, direct.ttft_p50)),
        format_signed_ms(added_ms(server.ttft_p90, direct.ttft_p90)),
        format_signed_ms(added_ms(server.ttft_p99, direct.ttft_p99)),
        format_signed_ms(added_ms(server.total_p50, direct.total_p50)),
        phase.throughput_ratio() * 100.0
    ));
    let ratios = phase.round_ratios();
    if let (Some(min), Some(max)) = (ratios.first(), ratios.last()) {
        line("");
        line(&format!(
            "Throughput ratio round by round: {:.1} % to {:.1} % (median {:.1} %) over {} rounds.",
            min * 100.0,
            max * 100.0,
            ratios[ratios.len() / 2] * 100.0,
            ratios.len()
        ));
    }
}

fn summary_row(name: &str, summary: &Summary) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {:.0} |",
        summary.runs,
        summary.errors,
        format_ms(summary.ttft_p50),
        format_ms(summary.ttft_p90),
        format_ms(summary.ttft_p99),
        format_ms(summary.total_p50),
        summary.throughput
    )
}

/// `time / count` in microseconds.
fn format_us(time: Duration, count: usize) -> String {
    if count == 0 {
        return "–".to_owned();
    }
    format!("{:.0} µs", time.as_secs_f64() * 1e6 / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::Sample;

    #[test]
    fn texts_have_the_asked_length() {
        assert_eq!(reply_text(400).chars().count(), 400);
        assert_eq!(stand_in_system_prompt().chars().count(), SYSTEM_PROMPT_CHARS);
    }

    #[test]
    fn markdown_marks_targets() {
        let ms = Duration::from_millis;
        let round = |ttft: u64, wall: u64| RoundResult {
            samples: vec![Sample { ttft: ms(ttft), total: ms(ttft * 10) }; 10],
            errors: Vec::new(),
            wall: ms(wall),
        };
        let mut concurrent = Phase { concurrency: 64, ..Phase::default() };
        concurrent.add(Mode::Direct, round(2, 100), CpuUse::default());
        concurrent.add(Mode::Server, round(3, 200), CpuUse { server: ms(5), ..CpuUse::default() });
        concurrent.add(Mode::Unguarded, round(3, 200), CpuUse { server: ms(4), ..CpuUse::default() });
        concurrent.add(Mode::OpenAi, round(3, 200), CpuUse { server: ms(5), ..CpuUse::default() });
        let report = Report {
            config: Config {
                server_bin: PathBuf::from("ant-server"),
                fake_bin: PathBuf::from("aniate-fake-llm"),
                concurrency: 64,
                runs: 10,
                rounds: 1,
                warmup_runs: 0,
                sequential_runs: 0,
                reply_chars: 400,
                chunk_chars: 8,
                guard_file: Some(PathBuf::from("what.toml")),
            },
            n_chunks: 50,
            concurrent,
            sequential: None,
            n_users: 1,
            server_memory_idle: None,
            peak_covers_load_only: true,
            server_memory: Some(Memory { rss: 10_000_000, peak_rss: 12_000_000 }),
            fake_memory: None,
            cpu_measured: true,
            elapsed: Duration::from_secs(3),
        };
        let machine =
            Machine { n_cpus: 2, cpu_model: "CPU".into(), date: "2026-01-01".into(), commit: Some("`abc`".into()) };
        let markdown = report.to_markdown(&machine, "bench-server");
        assert!(markdown.contains("| Added time to first token, p50 | +1.00 ms | ≤ 0.5 ms | **miss** |"), "{markdown}");
        assert!(markdown.contains("| Throughput, server / direct | 50.0 % | ≥ 90 % | **miss** |"), "{markdown}");
        assert!(
            markdown.contains("| ant-server RSS, peak under load (VmHWM) | 12.0 MB | ≤ 40.0 MB | pass |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| server, 64 at a time | 0 µs | 0 µs | 500 µs | 500 µs | 0 µs | 0 µs |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "| Prompt guard: ant-server CPU per stream, on / off, 64 at a time | 500 / 400 µs (+25.0 %) | ≤ +5 % | **miss** |"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("| server, guard off | 10 |"), "{markdown}");
        assert!(
            markdown.contains(
                "| OpenAI door: ant-server CPU per stream, `/v1` / `/tool/what`, 64 at a time | 500 / 500 µs (+0.0 %) | ≤ +5 % | pass |"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("| server, OpenAI door | 10 |"), "{markdown}");
        assert!(report.errors().is_empty());
    }
}
