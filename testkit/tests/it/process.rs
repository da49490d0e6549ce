//! `TestProcess` on small shell scripts.

use std::path::Path;
use std::time::{Duration, Instant};

use aniate_testkit::{TestProcess, read_log_tail};

fn sh(script: &str, envs: &[(&str, &str)], log_path: &Path) -> TestProcess {
    TestProcess::spawn(Path::new("/bin/sh"), &["-c", script], envs, log_path).unwrap()
}

#[test]
fn captures_stdout_lines_and_passes_envs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let process = sh(
        "echo first; printf 'crlf\\r\\n'; echo \"ready $ANIATE_WHO\"; exec sleep 30",
        &[("ANIATE_WHO", "tester")],
        &log_path,
    );
    let line = process.wait_for_stdout_line("ready", Duration::from_secs(5)).unwrap();
    assert_eq!(line, "ready tester");
    assert_eq!(process.stdout_lines(), ["first", "crlf", "ready tester"]);
    assert!(process.pid() > 0);
}

#[test]
fn early_exit_reports_the_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let process = sh("for i in $(seq 1 60); do echo \"log line $i\" >&2; done; exit 3", &[], &log_path);
    let started = Instant::now();
    let err = process.wait_for_stdout_line("never", Duration::from_secs(10)).unwrap_err();
    let message = format!("{err:#}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("log line 60"), "{message}");
    assert!(!message.contains("log line 20\n"), "only the last 40 lines: {message}");
    assert_eq!(read_log_tail(&log_path, 2), "log line 59\nlog line 60");
}

#[test]
fn timeout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let process = sh("echo nope; exec sleep 30", &[], &log_path);
    let err = process.wait_for_stdout_line("ready", Duration::from_millis(200)).unwrap_err();
    assert!(format!("{err:#}").contains("within"), "{err:#}");
}

#[test]
fn terminate_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let mut process =
        sh("trap 'echo got term >&2; exit 0' TERM; echo up; while :; do sleep 0.05; done", &[], &log_path);
    process.wait_for_stdout_line("up", Duration::from_secs(5)).unwrap();
    let status = process.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{status}");
    assert!(read_log_tail(&log_path, 5).contains("got term"));

    let mut process = sh("trap '' TERM; echo up; exec sleep 30", &[], &log_path);
    process.wait_for_stdout_line("up", Duration::from_secs(5)).unwrap();
    let pid = process.pid();
    // An ignored SIGTERM survives `exec`, so the process cannot be terminated, only killed.
    let err = process.terminate(Duration::from_millis(200)).unwrap_err();
    assert!(format!("{err:#}").contains("did not exit"), "{err:#}");
    process.kill();
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!alive.success(), "process {pid} still alive");
}

#[test]
fn missing_log_is_described() {
    assert!(read_log_tail(Path::new("/nonexistent/aniate.log"), 5).contains("could not read"));
}
