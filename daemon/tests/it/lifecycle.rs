//! One daemon per home, stale sockets, shutdown.

use std::{path::Path, time::Duration};

use aniate_testkit::{
    TestProcess,
    stack::{Stack, StackOptions},
};
use serde_json::Value;

use crate::harness::{Daemon, Raw, daemon_bin, login_and_install};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_home_and_stale_sockets_are_replaced() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let mut first = Daemon::start(&stack, &home);

    // A second daemon for the same home refuses to start, with exit status 3.
    let env = stack.client_env(&home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = std::process::Command::new(daemon_bin()).envs(env.iter().copied()).output().unwrap();
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

/// systemd socket activation for real: `systemd-socket-activate` binds the socket and starts
/// `aniated` with it as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID`), as `aniated.socket` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_the_socket_from_systemd() {
    let activate = std::path::Path::new("/usr/bin/systemd-socket-activate");
    if !activate.exists() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true needs systemd-socket-activate");
        eprintln!("skipping: systemd-socket-activate is not installed");
        return;
    }
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let socket = home.join("aniated.sock");
    let env = stack.client_env(&home);
    let mut args: Vec<String> = vec!["--listen".to_owned(), socket.display().to_string()];
    for (key, value) in &env {
        args.push(format!("--setenv={key}={value}"));
    }
    args.push(daemon_bin());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut activator =
        TestProcess::spawn(activate, &args, &[], &home.join("activate.log")).expect("spawn systemd-socket-activate");
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first connection starts the daemon, which answers on the inherited socket.
    let mut raw = Raw::greeted(&socket).await;
    let status = raw.call(1, "status", Value::Null).await;
    assert_eq!(status["protocol"], 1);
    let log = std::fs::read_to_string(home.join("aniated.log")).unwrap_or_default();
    assert!(log.contains("using the socket passed in by the service manager"), "{log}");
    // A shutdown leaves the socket to its owner, systemd.
    assert_eq!(raw.call(2, "shutdown", Value::Null).await, Value::Null);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(socket.exists(), "the inherited socket file is the service manager's");
    activator.kill();
}

/// The unit files pass `systemd-analyze verify` without a warning, in the user instance the
/// daemon's units are for and the system instance the server's is for.
#[test]
fn unit_files_verify() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true needs systemd-analyze");
        eprintln!("skipping: systemd-analyze is not installed");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The daemon's units live with the code that installs them (cli/units, inside the crate so
    // that the aniate sdist carries them); the server's with its packaging.
    let (units, packaging) = (root.join("cli/units"), root.join("packaging/systemd"));
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    // ExecStart must name an existing binary; the units name their installed paths.
    let copy = |dir_of: &std::path::Path, name: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(dir_of.join(name)).unwrap().replace(from, to);
        std::fs::write(dir.path().join(name), text).unwrap();
        dir.path().join(name).display().to_string()
    };
    let socket = copy(&units, "aniated.socket", "", "");
    let daemon = daemon_bin();
    let service = copy(&units, "aniated.service", "%h/.local/bin/aniated", &daemon);
    let server = copy(&packaging, "ant-server.service", "/usr/local/bin/ant-server", "/bin/true");
    for (user, units) in [(true, vec![socket, service]), (false, vec![server])] {
        let mut command = std::process::Command::new(analyze);
        command.arg("verify");
        if user {
            command.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        let output = command.args(&units).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{units:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{units:?} has warnings: {stderr}");
    }
}

/// `ANIATE_LOG=trace` logs what the daemon does, not the daemon logging: its log is in the home
/// it watches, and a watch that woke for every write there logged every wake, so an idle daemon
/// at trace level wrote megabytes a second, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_logging_everything_stays_quiet() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start_with(&stack, &home, &[("ANIATE_LOG", "trace")]);
    let logged = || std::fs::metadata(home.join("aniated.log")).map_or(0, |meta| meta.len());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = logged();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grew = logged() - before;
    assert!(grew < 64 * 1024, "an idle daemon logged {grew} bytes in a second");
    drop(daemon);
}

/// The daemon reloads when another program changes its home, and only then. A reload reads
/// the home's files, and inotify reports reads too: counting them made every reload set off the
/// next, so an idle daemon re-read its home every 50 ms for as long as it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_changes_and_not_on_its_own_reads() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let home = stack.new_home("h");
    let daemon = Daemon::start(&stack, &home);
    let mut raw = Raw::greeted(&daemon.socket()).await;
    login_and_install(&stack, &mut raw, "watch@example.test", &["what"]).await;
    let reloads = || daemon.log().matches("files changed; reloading").count();

    // The login and the install wrote files; their reloads (debounced by 50 ms) come and go.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reloads() == 0 {
        assert!(std::time::Instant::now() < deadline, "the install was not reloaded:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = reloads();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reloads(), settled, "an idle daemon kept reloading:\n{}", daemon.log());

    // Another program installs a tool: the daemon picks it up.
    let mut tool: Value = serde_json::from_slice(&std::fs::read(home.join("tools/what.json")).unwrap()).unwrap();
    tool["slug"] = "what-else".into();
    std::fs::write(home.join("tools/what-else.json"), serde_json::to_vec(&tool).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while raw.call(2, "status", Value::Null).await["installed_tools"] != 2 {
        assert!(std::time::Instant::now() < deadline, "the new tool was not picked up:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloads() > settled);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_change = reloads();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reloads(), after_change, "the reload set off more reloads:\n{}", daemon.log());
}
