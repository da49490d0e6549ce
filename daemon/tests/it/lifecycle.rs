//! One daemon per home, stale sockets, shutdown.

use std::{path::Path, time::Duration};

use aniate_testkit::{
    TestProcess,
    stack::{Stack, StackOptions},
};
use serde_json::Value;

use crate::harness::{DAEMON_BIN, Daemon, Raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_home_and_stale_sockets_are_replaced() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let mut first = Daemon::start(&stack, &home);

    // A second daemon for the same home refuses to start, with exit status 3.
    let env = stack.client_env(&home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = std::process::Command::new(DAEMON_BIN).envs(env.iter().copied()).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already running"));

    // A crash leaves the socket file behind; the next daemon replaces it.
    first.process.kill();
    assert!(first.socket().exists(), "SIGKILL leaves a stale socket");
    assert!(tokio::net::UnixStream::connect(first.socket()).await.is_err(), "nobody listens on it");
    let second = Daemon::start(&stack, &home);
    let mut raw = Raw::greeted(&second.socket()).await;
    assert_eq!(raw.call(1, "status", Value::Null).await["pid"], second.process.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_request_and_sigterm_remove_the_socket() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let mut daemon = Daemon::start(&stack, &home);
    let mut raw = Raw::greeted(&daemon.socket()).await;
    assert_eq!(raw.call(1, "shutdown", Value::Null).await, Value::Null);
    let status = wait_exit(&mut daemon.process);
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket().exists());

    let mut daemon = Daemon::start(&stack, &home);
    let status = daemon.process.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket().exists());
    assert!(std::fs::read_to_string(Path::new(&home).join("aniated.log")).unwrap().contains("stopped"));
}

fn wait_exit(process: &mut TestProcess) -> std::process::ExitStatus {
    process.terminate(Duration::from_secs(10)).expect("the daemon exits")
}
