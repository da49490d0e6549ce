//! The `aniate-fake-llm` binary, run as a real process.

use std::path::Path;
use std::time::Duration;

use aniate_testkit::TestProcess;

use crate::client::{self, chat_body};

fn fake_llm_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_aniate-fake-llm"))
}

#[tokio::test]
async fn binary_prints_its_address_serves_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("fake.log");
    let mut process = TestProcess::spawn(
        fake_llm_exe(),
        &["--bind", "127.0.0.1:0", "--reply", "from the binary", "--model", "m1", "--chunk-chars", "4"],
        &[("ANIATE_LOG", "debug")],
        &log_path,
    )
    .unwrap();
    let line = process.wait_for_stdout_line("aniate-fake-llm listening on ", Duration::from_secs(10)).unwrap();
    let base_url = line.strip_prefix("aniate-fake-llm listening on ").unwrap();
    let addr = base_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap_or_else(|| panic!("unexpected listening line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(process.stdout_lines(), std::slice::from_ref(&line), "exactly one line on stdout");

    let models = client::request(addr, "GET", "/v1/models", None).await.json();
    assert_eq!(models["data"][0]["id"], "m1");
    assert_eq!(models["data"][0]["owned_by"], "aniate-fake-llm (offline fake)");
    let response = client::request(addr, "POST", "/v1/chat/completions", Some(&chat_body("x", true))).await;
    assert_eq!(response.streamed_content(), "from the binary");
    // The fake records the outcome once its side of the stream has ended, which can be a moment
    // after the client has read the last byte: wait for it (a loaded CI machine took >0 ms).
    let mut requests = client::request(addr, "GET", "/_fake/requests", None).await.json();
    for _ in 0..100 {
        if requests[0]["outcome"] != "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        requests = client::request(addr, "GET", "/_fake/requests", None).await.json();
    }
    assert_eq!(requests[0]["outcome"], "completed");

    let status = tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(5))).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("request"), "ANIATE_LOG=debug logs to stderr: {log}");
}

#[test]
fn binary_help_says_it_is_a_fake() {
    let output = std::process::Command::new(fake_llm_exe()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.starts_with("aniate-fake-llm is a FAKE, offline stand-in for an OpenAI-compatible LLM provider, for tests, benchmarks and the offline demo. It does not run a model."),
        "{help}"
    );
}

#[test]
fn binary_rejects_bad_flags_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("fake.log");
    let process = TestProcess::spawn(
        fake_llm_exe(),
        &["--bind", "127.0.0.1:0", "--fault", "explode"],
        &[("RUST_BACKTRACE", "0")],
        &log_path,
    )
    .unwrap();
    let err = process.wait_for_stdout_line("aniate-fake-llm listening on ", Duration::from_secs(10)).unwrap_err();
    assert!(format!("{err:#}").contains("unknown --fault"), "{err:#}");
}
