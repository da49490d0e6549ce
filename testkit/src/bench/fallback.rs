//! The fallback bench: what moving a run to its fallback provider adds to the time to first
//! token. Two fakes (the first answers HTTP 500 at once, the second normally) behind one
//! ant-server whose catalogue names both; two tools, one on the second provider alone and one
//! on the first with the second as its fallback, run one at a time, alternately, so drift
//! hits both alike. The first provider's cooldown is set out of reach, so every fallback run
//! really asks it first.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use super::load::Target;
use super::server::{
    FAKE_LISTENING, INSTRUCTIONS, RATE_LIMIT_PER_MIN, SERVER_LISTENING, SERVER_RUNS_PER_USER, ScratchDir, create_users,
    http_client, listening_url, reply_text,
};
use super::stats::{ModeTotals, Summary};
use crate::TestProcess;

/// The budget: the fallback path's added time to first token, p50.
pub const TARGET_ADDED_TTFT_MS: f64 = 1.0;

const ALONE_SLUG: &str = "bench-alone";
const FALLBACK_SLUG: &str = "bench-fallback";

#[derive(Clone, Debug)]
pub struct FallbackConfig {
    pub server_bin: PathBuf,
    pub fake_bin: PathBuf,
    /// Runs per mode, after `warmup_runs` each.
    pub runs: usize,
    pub warmup_runs: usize,
    pub reply_chars: usize,
    pub chunk_chars: usize,
}

#[derive(Debug)]
pub struct FallbackReport {
    pub alone: Summary,
    pub fallback: Summary,
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl FallbackReport {
    /// The fallback path's added time to first token at p50, in milliseconds.
    pub fn added_ttft_p50_ms(&self) -> f64 {
        (self.fallback.ttft_p50.as_secs_f64() - self.alone.ttft_p50.as_secs_f64()) * 1000.0
    }

    pub fn to_text(&self) -> String {
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
        let row = |name: &str, s: &Summary| {
            format!(
                "| {name} | {} | {} | {} | {} | {} |\n",
                s.runs,
                s.errors,
                ms(s.ttft_p50),
                ms(s.ttft_p90),
                ms(s.ttft_p99)
            )
        };
        let added = self.added_ttft_p50_ms();
        format!(
            "| Mode | Runs | Errors | TTFT p50 | TTFT p90 | TTFT p99 |\n|---|---|---|---|---|---|\n{}{}\n\
             Added by the fallback (p50): {added:.3} ms (target ≤ {TARGET_ADDED_TTFT_MS} ms: {}); {:.1} s in all.\n",
            row("second provider alone", &self.alone),
            row("first answers 500, then the second", &self.fallback),
            if added <= TARGET_ADDED_TTFT_MS { "met" } else { "NOT met" },
            self.elapsed.as_secs_f64(),
        )
    }
}

pub fn run(config: FallbackConfig) -> anyhow::Result<FallbackReport> {
    let started = Instant::now();
    let mut scratch = ScratchDir::create()?;
    let result = run_in(&config, &scratch, started);
    if let Err(err) = &result {
        scratch.keep = true;
        eprintln!("bench-server --fallback: failed; process logs kept in {}: {err:#}", scratch.path().display());
    }
    result
}

fn run_in(config: &FallbackConfig, scratch: &ScratchDir, started: Instant) -> anyhow::Result<FallbackReport> {
    let dir = scratch.path();
    let reply = reply_text(config.reply_chars);
    let chunk_chars = config.chunk_chars.to_string();
    let spawn_fake = |name: &str, extra: &[&str]| -> anyhow::Result<(TestProcess, String)> {
        let mut args =
            vec!["--bind", "127.0.0.1:0", "--chunk-delay-ms", "0", "--chunk-chars", &chunk_chars, "--reply", &reply];
        args.extend_from_slice(extra);
        let fake =
            TestProcess::spawn(&config.fake_bin, &args, &[("ANIATE_LOG", "warn")], &dir.join(format!("{name}.log")))
                .with_context(|| format!("cannot start the fake LLM {}", config.fake_bin.display()))?;
        let url = listening_url(&fake, FAKE_LISTENING)?;
        Ok((fake, url))
    };
    let (mut broken, broken_url) = spawn_fake("broken", &["--fault", "http500"])?;
    let (mut good, good_url) = spawn_fake("good", &[])?;

    let catalogue = format!(
        "default = \"good\"\n\n[providers.broken]\nbase_url = \"{broken_url}\"\ncooldown_failures = 1000000000\n\n\
         [providers.good]\nbase_url = \"{good_url}\"\n"
    );
    let catalogue_path = dir.join("providers.toml");
    std::fs::write(&catalogue_path, catalogue).context("writing the catalogue")?;

    let data_dir = dir.join("server-data");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.to_string_lossy().into_owned();
    let n_users = (2 * (1 + config.warmup_runs + config.runs)).div_ceil(SERVER_RUNS_PER_USER);
    let tokens = create_users(&config.server_bin, &data_dir, n_users)?;
    for (slug, model, fallbacks) in [(ALONE_SLUG, "good/m", "[]"), (FALLBACK_SLUG, "broken/m", "[\"good/m\"]")] {
        let tool = format!(
            "slug = \"{slug}\"\nname = \"{slug}\"\ndescription = \"bench\"\nsystem_prompt = \"Answer the question.\"\n\
             model = \"{model}\"\nfallbacks = {fallbacks}\nguard = \"off\"\n"
        );
        let path = dir.join(format!("{slug}.toml"));
        std::fs::write(&path, tool).context("writing a tool file")?;
        let output = Command::new(&config.server_bin)
            .args(["admin", "tools", "push"])
            .arg(&path)
            .env("ANIATE_DATA_DIR", &data_dir)
            .env("ANIATE_LOG", "warn")
            .output()
            .context("running admin tools push")?;
        if !output.status.success() {
            bail!("admin tools push failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
    }
    let catalogue_arg = catalogue_path.to_string_lossy().into_owned();
    let server_env = [
        ("ANIATE_BIND", "127.0.0.1:0"),
        ("ANIATE_DATA_DIR", data_dir.as_str()),
        ("ANIATE_PROVIDERS", catalogue_arg.as_str()),
        ("ANIATE_RATE_LIMIT_PER_MIN", RATE_LIMIT_PER_MIN),
        ("ANIATE_LOG", "warn"),
    ];
    let mut server = TestProcess::spawn(&config.server_bin, &["serve"], &server_env, &dir.join("server.log"))
        .with_context(|| format!("cannot start ant-server {}", config.server_bin.display()))?;
    let server_url = listening_url(&server, SERVER_LISTENING)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let result = runtime.block_on(async {
        let client = http_client(1)?;
        let alone = Target::server(client.clone(), &server_url, ALONE_SLUG, &tokens, INSTRUCTIONS);
        let fallback = Target::server(client, &server_url, FALLBACK_SLUG, &tokens, INSTRUCTIONS);
        alone.run_once().await.map_err(|err| anyhow!("a run on the second provider failed: {err}"))?;
        fallback.run_once().await.map_err(|err| anyhow!("a fallback run failed: {err}"))?;
        for _ in 0..config.warmup_runs {
            let _ = alone.run_once().await;
            let _ = fallback.run_once().await;
        }
        let (mut alone_totals, mut fallback_totals) = (ModeTotals::default(), ModeTotals::default());
        for run_idx in 0..config.runs {
            // Alternate which goes first, so neither always follows the other.
            let order = if run_idx % 2 == 0 { [&alone, &fallback] } else { [&fallback, &alone] };
            for target in order {
                let sample = target.run_once().await;
                let totals = if std::ptr::eq(target, &alone) { &mut alone_totals } else { &mut fallback_totals };
                match sample {
                    Ok(sample) => totals.samples.push(sample),
                    Err(err) => totals.errors.push(err),
                }
            }
        }
        let mut errors = alone_totals.errors.clone();
        errors.extend(fallback_totals.errors.clone());
        anyhow::Ok(FallbackReport {
            alone: alone_totals.summary(),
            fallback: fallback_totals.summary(),
            errors,
            elapsed: Duration::ZERO,
        })
    });
    let _ = server.terminate(Duration::from_secs(5));
    let _ = broken.terminate(Duration::from_secs(5));
    let _ = good.terminate(Duration::from_secs(5));
    Ok(FallbackReport { elapsed: started.elapsed(), ..result? })
}
