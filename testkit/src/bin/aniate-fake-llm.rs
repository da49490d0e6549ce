//! `aniate-fake-llm`: flags, logging and signals around [`aniate_testkit::fake_llm::run`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use aniate_testkit::fake_llm::{self, FakeLlmConfig, FakeLlmState, Fault};
use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// aniate-fake-llm is a FAKE, offline stand-in for an OpenAI-compatible LLM provider, for
/// tests, benchmarks and the offline demo. It does not run a model.
///
/// It serves POST /v1/chat/completions (streamed or not) and GET /v1/models, answering
/// deterministically from a script, and records requests, the newest 10,000 (GET /_fake/requests).
/// The config can be replaced at runtime with PUT /_fake/config (JSON).
#[derive(Debug, Parser)]
#[command(name = "aniate-fake-llm", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the listening line shows it)
    #[arg(long, default_value = "127.0.0.1:8788")]
    bind: SocketAddr,

    /// Model id to list in /v1/models (repeatable) [default: llama-3.1-8b-instant]
    #[arg(long = "model", value_name = "NAME")]
    models: Vec<String>,

    /// Characters of reply text per streamed chunk [default: 8]
    #[arg(long, value_name = "N")]
    chunk_chars: Option<usize>,

    /// Pause between streamed chunks, in milliseconds [default: 0]
    #[arg(long, value_name = "N")]
    chunk_delay_ms: Option<u64>,

    /// Reply to send when no scripted rule matches. In any reply, `{{leak:NAME}}` stands for the
    /// request's own system prompt, disguised as NAME (verbatim, upper, word-per-line, fenced,
    /// numbered, middle-third, interleaved, zero-width, spaced-last-line): an obedient model,
    /// for testing the server's prompt guard
    #[arg(long, value_name = "TEXT")]
    reply: Option<String>,

    /// TOML file with `[[rules]]` (when_contains, reply) and optionally `default_reply`;
    /// any other config key (chunk_chars, fault, ...) is accepted too, flags override it
    #[arg(long, value_name = "FILE.toml")]
    script: Option<PathBuf>,

    /// Fault to inject: none, http500, http429, stall, stall-after:N, disconnect-after:N,
    /// garbage-after:N, error-after:N (N = content chunks sent first)
    #[arg(long, value_name = "KIND")]
    fault: Option<String>,

    /// Retry-After seconds sent with --fault http429
    #[arg(long, value_name = "N", default_value_t = 1)]
    retry_after_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_env("ANIATE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .init();
    let config = build_config(&args)?;

    let listener = TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // Tests and scripts wait for exactly this line to learn the port.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "aniate-fake-llm listening on http://{addr}/v1")
        .and_then(|()| stdout.flush())
        .context("writing the listening line")?;
    drop(stdout);

    fake_llm::run(listener, FakeLlmState::new(config), shutdown_signal()).await;
    Ok(())
}

fn build_config(args: &Args) -> anyhow::Result<FakeLlmConfig> {
    let mut config = match &args.script {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading script {}", path.display()))?;
            toml::from_str::<FakeLlmConfig>(&text).with_context(|| format!("parsing script {}", path.display()))?
        }
        None => FakeLlmConfig::default(),
    };
    if !args.models.is_empty() {
        config.models.clone_from(&args.models);
    }
    if let Some(chunk_chars) = args.chunk_chars {
        config.chunk_chars = chunk_chars;
    }
    if let Some(chunk_delay_ms) = args.chunk_delay_ms {
        config.chunk_delay_ms = chunk_delay_ms;
    }
    if let Some(reply) = &args.reply {
        config.default_reply = Some(reply.clone());
    }
    if let Some(fault) = &args.fault {
        config.fault = parse_fault(fault, args.retry_after_secs)?;
    }
    Ok(config)
}

fn parse_fault(text: &str, retry_after_secs: u64) -> anyhow::Result<Fault> {
    let (kind, count) = match text.split_once(':') {
        Some((kind, count)) => {
            let count = count.parse::<usize>().with_context(|| format!("invalid chunk count in --fault {text:?}"))?;
            (kind, Some(count))
        }
        None => (text, None),
    };
    let fault = match (kind, count) {
        ("none", None) => Fault::None,
        ("http500", None) => Fault::Http500,
        ("http429", None) => Fault::Http429 { retry_after_secs },
        ("stall", None) => Fault::StallBeforeFirstByte,
        ("stall-after", Some(chunks)) => Fault::StallAfterChunks { chunks },
        ("disconnect-after", Some(chunks)) => Fault::DisconnectAfterChunks { chunks },
        ("garbage-after", Some(chunks)) => Fault::GarbageAfterChunks { chunks },
        ("error-after", Some(chunks)) => Fault::ErrorAfterChunks { chunks },
        _ => bail!(
            "unknown --fault {text:?}; expected none, http500, http429, stall, stall-after:N, disconnect-after:N, garbage-after:N or error-after:N"
        ),
    };
    Ok(fault)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot listen for SIGTERM, only Ctrl-C stops the fake");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_flags_parse() {
        assert_eq!(parse_fault("none", 1).unwrap(), Fault::None);
        assert_eq!(parse_fault("http500", 1).unwrap(), Fault::Http500);
        assert_eq!(parse_fault("http429", 7).unwrap(), Fault::Http429 { retry_after_secs: 7 });
        assert_eq!(parse_fault("stall", 1).unwrap(), Fault::StallBeforeFirstByte);
        assert_eq!(parse_fault("stall-after:3", 1).unwrap(), Fault::StallAfterChunks { chunks: 3 });
        assert_eq!(parse_fault("disconnect-after:0", 1).unwrap(), Fault::DisconnectAfterChunks { chunks: 0 });
        assert_eq!(parse_fault("garbage-after:2", 1).unwrap(), Fault::GarbageAfterChunks { chunks: 2 });
        assert_eq!(parse_fault("error-after:3", 1).unwrap(), Fault::ErrorAfterChunks { chunks: 3 });
        assert!(parse_fault("stall-after", 1).is_err());
        assert!(parse_fault("stall-after:x", 1).is_err());
        assert!(parse_fault("http500:1", 1).is_err());
        assert!(parse_fault("boom", 1).is_err());
    }

    #[test]
    fn script_is_a_partial_config_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script.toml");
        std::fs::write(
            &script,
            "default_reply = \"from script\"\nchunk_chars = 3\nfault = { kind = \"stall_after_chunks\", chunks = 2 }\n\n[[rules]]\nwhen_contains = \"ping\"\nreply = \"pong\"\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "aniate-fake-llm",
            "--script",
            script.to_str().unwrap(),
            "--chunk-chars",
            "5",
            "--model",
            "a",
            "--model",
            "b",
        ]);
        let config = build_config(&args).unwrap();
        assert_eq!(config.default_reply.as_deref(), Some("from script"));
        assert_eq!(config.chunk_chars, 5);
        assert_eq!(config.models, ["a", "b"]);
        assert_eq!(config.rules.len(), 1);
        assert_eq!(config.fault, Fault::StallAfterChunks { chunks: 2 });

        std::fs::write(&script, "rulez = []\n").unwrap();
        let err = build_config(&args).unwrap_err();
        assert!(format!("{err:#}").contains("rulez"), "{err:#}");
    }

    #[test]
    fn help_says_it_is_a_fake() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        // Help is wrapped to the terminal width.
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.starts_with("aniate-fake-llm is a FAKE, offline stand-in for an OpenAI-compatible LLM provider, for tests, benchmarks and the offline demo. It does not run a model."),
            "{help}"
        );
    }
}
