//! `bench-server`: flags around [`aniate_testkit::bench::server::run`]; prints the report
//! and, with `--out`, rewrites its section of `docs/benchmarks.md`.

use std::path::PathBuf;

use aniate_testkit::bench::report::Machine;
use aniate_testkit::bench::server::{self, Config};
use anyhow::{Context, bail};
use clap::Parser;

/// Measures what ant-server adds to streamed tool runs: the same load through the server and
/// straight at the fake LLM (zero delay), in interleaved rounds of one run. Prints the added
/// time to first token, the throughput ratio server/direct and the server's memory.
///
/// Expects `ant-server` and `aniate-fake-llm` next to its own executable; build all three
/// with `cargo build --release -p ant-server -p aniate-testkit --bins` (bench/server.sh does).
#[derive(Debug, Parser)]
#[command(name = "bench-server")]
struct Args {
    /// The ant-server binary [default: next to this executable]
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,

    /// The aniate-fake-llm binary [default: next to this executable]
    #[arg(long, value_name = "PATH")]
    fake_bin: Option<PathBuf>,

    /// Streams in flight at once
    #[arg(long, value_name = "N", default_value_t = 64)]
    concurrency: usize,

    /// Streams per mode [default: 12800, with --quick 640]
    #[arg(long, value_name = "N")]
    runs: Option<usize>,

    /// Rounds, each running both modes in alternating order [default: 16, with --quick 2]
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,

    /// Uncounted streams per mode before measuring [default: 4 × concurrency]
    #[arg(long, value_name = "N")]
    warmup_runs: Option<usize>,

    /// Streams per mode run one at a time after the main load; 0 skips them [default: 2000,
    /// with --quick 40]
    #[arg(long, value_name = "N")]
    sequential_runs: Option<usize>,

    /// Characters in each answer of the fake LLM
    #[arg(long, value_name = "N", default_value_t = 400)]
    reply_chars: usize,

    /// Characters per streamed chunk of the fake LLM
    #[arg(long, value_name = "N", default_value_t = 8)]
    chunk_chars: usize,

    /// Markdown file whose `ant-server: streaming overhead` section gets the results
    /// (created if missing; the rest of the file is kept)
    #[arg(long, value_name = "FILE.md")]
    out: Option<PathBuf>,

    /// Small counts, for a smoke run
    #[arg(long)]
    quick: bool,

    /// The `what` tool's file, copied as `what-unguarded` with the prompt guard off and run side
    /// by side as a third mode, to measure the guard's cost; `none` skips it
    #[arg(long, value_name = "FILE.toml", default_value = "server/tools/what.toml")]
    guard_file: String,

    /// Instead: measure a provider fallback, one run at a time (--sequential-runs per mode):
    /// a first provider that answers 500 at once, then the second, against the second alone
    #[arg(long)]
    fallback: bool,

    /// Instead: compare this ant-server with another build of it (an earlier commit's, say),
    /// side by side on the normal path: both at --concurrency and one at a time, alternating
    /// round by round, each build's CPU per stream, throughput and time to first token
    #[arg(long, value_name = "PATH", conflicts_with = "fallback")]
    versus: Option<PathBuf>,

    /// Instead: compare this ant-server with a peer, the LiteLLM proxy (the `litellm` command of
    /// a `pip install 'litellm[proxy]'`, run with one worker), as --versus does; its requests
    /// are the ones sent straight to the fake. `bash bench/server.sh --peers` installs it
    #[arg(long, value_name = "PATH", conflicts_with_all = ["fallback", "versus"])]
    versus_litellm: Option<PathBuf>,
}

/// Share of the CPUs busy with other work above which the results are called disturbed.
const OTHER_LOAD_WARNING: f64 = 0.15;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let command = shell_command(std::env::args());
    let config = build_config(&args)?;
    if args.fallback {
        let report = aniate_testkit::bench::fallback::run(aniate_testkit::bench::fallback::FallbackConfig {
            server_bin: config.server_bin,
            fake_bin: config.fake_bin,
            runs: config.sequential_runs.max(1),
            warmup_runs: if args.quick { 10 } else { 100 },
            reply_chars: config.reply_chars,
            chunk_chars: config.chunk_chars,
        })?;
        println!("{}", report.to_text());
        if !report.errors.is_empty() {
            bail!("{} runs failed, so the figures are not trustworthy: {}", report.errors.len(), report.errors[0]);
        }
        return Ok(());
    }
    let machine = Machine::detect();
    use aniate_testkit::bench::versus::{self, Baseline};
    let baseline = match (args.versus, args.versus_litellm) {
        (Some(bin), _) => Some(Baseline::Build(bin)),
        (None, Some(bin)) => Some(Baseline::LiteLlm(bin)),
        (None, None) => None,
    };
    if let Some(baseline) = baseline {
        let peer = matches!(baseline, Baseline::LiteLlm(_));
        let report = versus::run(versus::VersusConfig { load: config, baseline })?;
        let markdown = report.to_markdown(&machine, &command);
        println!("{markdown}");
        if let Some(err) = report.errors().first() {
            bail!("{} runs failed, so the figures are not trustworthy: {err}", report.errors().len());
        }
        if let (true, Some(out)) = (peer, &args.out) {
            versus::PEERS_SECTION.write(out, &markdown)?;
            eprintln!("bench-server: wrote the results to {}", out.display());
        }
        return Ok(());
    }
    let report = server::run(config)?;
    let markdown = report.to_markdown(&machine, &command);
    println!("{markdown}");

    if let Some(load) = report.concurrent.other_load(machine.n_cpus).filter(|&load| load > OTHER_LOAD_WARNING) {
        eprintln!(
            "bench-server: warning: other work kept {:.0} % of the CPUs busy during the rounds; the figures are disturbed, consider running again on a quiet machine",
            load * 100.0
        );
    }
    let n_errors = report.errors().len();
    if n_errors > 0 {
        bail!("{n_errors} runs failed, so the figures are not trustworthy; not writing any file");
    }
    if let Some(out) = &args.out {
        server::SECTION.write(out, &markdown)?;
        eprintln!("bench-server: wrote the results to {}", out.display());
    }
    Ok(())
}

fn build_config(args: &Args) -> anyhow::Result<Config> {
    let next_to_me = |name: &str| -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("finding this executable, to find the binaries next to it")?;
        Ok(exe.with_file_name(name))
    };
    let config = Config {
        server_bin: match &args.server_bin {
            Some(path) => path.clone(),
            None => next_to_me("ant-server")?,
        },
        fake_bin: match &args.fake_bin {
            Some(path) => path.clone(),
            None => next_to_me("aniate-fake-llm")?,
        },
        concurrency: args.concurrency,
        runs: args.runs.unwrap_or(if args.quick { 640 } else { 12_800 }),
        rounds: args.rounds.unwrap_or(if args.quick { 2 } else { 16 }),
        warmup_runs: args.warmup_runs.unwrap_or(4 * args.concurrency),
        sequential_runs: args.sequential_runs.unwrap_or(if args.quick { 40 } else { 2_000 }),
        reply_chars: args.reply_chars,
        chunk_chars: args.chunk_chars,
        guard_file: (args.guard_file != "none").then(|| PathBuf::from(&args.guard_file)),
    };
    for (flag, value) in [
        ("--concurrency", config.concurrency),
        ("--runs", config.runs),
        ("--rounds", config.rounds),
        ("--reply-chars", config.reply_chars),
        ("--chunk-chars", config.chunk_chars),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    Ok(config)
}

/// The command line as one could paste it into a shell.
fn shell_command(args: impl Iterator<Item = String>) -> String {
    let quote = |arg: String| {
        let plain = !arg.is_empty()
            && arg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '=' | ':' | ','));
        if plain { arg } else { format!("'{}'", arg.replace('\'', r"'\''")) }
    };
    args.map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let args = ["target/release/bench-server", "--out", "docs/benchmarks.md", "a b", "it's"].map(String::from);
        assert_eq!(
            shell_command(args.into_iter()),
            r"target/release/bench-server --out docs/benchmarks.md 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn zero_counts_are_refused() {
        let args = Args::parse_from(["bench-server", "--concurrency", "0"]);
        assert!(build_config(&args).unwrap_err().to_string().contains("--concurrency"));
        let args = Args::parse_from(["bench-server", "--quick"]);
        assert_eq!(build_config(&args).unwrap().runs, 640);
    }
}
