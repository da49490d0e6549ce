//! The daemon as `ant` sees it: started on demand, restarted when older, survived when it
//! crashes, and Ctrl-C cancelling a run end to end.

use std::time::Duration;

use aniate_testkit::{
    FakeLlmConfig, Outcome,
    stack::{Stack, StackOptions},
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
};

use crate::harness::{Client, Run, kill, now_ms};

fn slow_fake() -> FakeLlmConfig {
    FakeLlmConfig {
        default_reply: Some("slow words ".repeat(300)),
        chunk_chars: 5,
        chunk_delay_ms: 10,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_on_demand_and_restarted_after_a_crash() {
    let stack = Stack::start(StackOptions { fake: slow_fake(), ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("crash@example.test", &["what"]).await;
    let first = client.daemon_pid().expect("ant started the daemon");

    // SIGKILL the daemon mid-stream: ant says so, with a non-zero exit.
    let run = client.command(&["what", "-i", "talk for a while"]).spawn().unwrap();
    let (_, started) = stack.fake.wait_until(Duration::from_secs(10), |r| r.iter().any(|r| r.chunks_sent > 3)).await;
    assert!(started);
    kill(first, "KILL");
    let output = tokio::time::timeout(Duration::from_secs(20), run.wait_with_output()).await.unwrap().unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("aniated closed the connection"), "{stderr}");
    assert!(client.home.join("aniated.sock").exists(), "the crash left a stale socket");

    // The next command starts a fresh daemon; the installed tools are intact.
    let list = client.ant(&["list"]).await;
    assert!(list.ok().stdout.contains("what"));
    let second = client.daemon_pid().expect("a new daemon");
    assert_ne!(first, second);
    // So is the result cache: the new daemon opens it and answers a repeated question from it.
    stack.fake.update_config(|config| config.chunk_delay_ms = 0);
    client.ant(&["what", "-i", "asked twice"]).await.ok();
    let asked = stack.fake.requests().len();
    let again = client.ant(&["what", "-i", "asked twice"]).await;
    assert!(again.ok().stdout.contains("slow words"), "{}", again.stdout);
    assert_eq!(stack.fake.requests().len(), asked, "the second answer came from the cache");
    assert!(!client.daemon_log().contains("result cache unavailable"), "{}", client.daemon_log());
}

/// A daemon that stops answering (here: SIGSTOP) does not hang `ant`: mid-stream it gives up
/// after `ANIATE_DAEMON_TIMEOUT_SECS` of silence, and a new command gives up on the hello after
/// 5 s; both name the daemon's pid. Once it runs again, so does everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_daemon_does_not_hang_ant() {
    let stack = Stack::start(StackOptions { fake: slow_fake(), ..Default::default() }).await.unwrap();
    let mut client = Client::new(&stack, "u");
    client.env.push(("ANIATE_DAEMON_TIMEOUT_SECS".to_owned(), "1".to_owned()));
    client.ready("stuck@example.test", &["what"]).await;
    let pid = client.daemon_pid().unwrap();

    let run = client.command(&["what", "-i", "talk for a while"]).spawn().unwrap();
    let (_, started) = stack.fake.wait_until(Duration::from_secs(10), |r| r.iter().any(|r| r.chunks_sent > 3)).await;
    assert!(started);
    kill(pid, "STOP");
    let stopped_at = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(20), run.wait_with_output()).await.unwrap().unwrap();
    let waited = stopped_at.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("aniated (pid {pid}) sent nothing for 1 s")), "{stderr}");
    assert!(stderr.contains(&format!("kill {pid}")), "{stderr}");
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");

    let started = std::time::Instant::now();
    let list = client.ant(&["list"]).await;
    list.failed_with(1, &format!("aniated (pid {pid}) did not answer within 5 s"));
    // The hint docs/cli.md and docs/reliability.md show.
    list.failed_with(1, "hint: `ant daemon logs` shows the daemon's log; `ant --no-daemon …` works without it");
    assert!(started.elapsed() < Duration::from_secs(15));

    kill(pid, "CONT");
    assert!(client.ant(&["list"]).await.ok().stdout.contains("what"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_run_end_to_end() {
    let stack = Stack::start(StackOptions { fake: slow_fake(), ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("ctrlc@example.test", &["what"]).await;
    let run = client.command(&["what", "-i", "talk for a while"]).spawn().unwrap();
    let (_, started) = stack.fake.wait_until(Duration::from_secs(10), |r| r.iter().any(|r| r.chunks_sent > 3)).await;
    assert!(started);
    kill(run.id().unwrap(), "INT");
    let interrupted_at = now_ms();
    let output = tokio::time::timeout(Duration::from_secs(20), run.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(130));
    assert_cancelled_within_100ms(&stack, interrupted_at).await;
}

/// `--no-daemon` runs a private `aniated --stdio` of the command's own: it starts no daemon, a
/// Ctrl-C at the terminal (SIGINT to the whole foreground process group) is `ant`'s to handle and
/// cancels the run end to end, and nothing is left running after the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_runs_a_private_daemon_that_goes_with_the_command() {
    let stack = Stack::start(StackOptions { fake: slow_fake(), ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("private@example.test", &["what"]).await;
    client.ant(&["daemon", "stop"]).await.ok();
    let socket = client.home.join("aniated.sock");
    assert!(!socket.exists());

    let mut command = client.command(&["--no-daemon", "what", "-i", "talk for a while"]);
    // As a shell runs a foreground job: `ant` leads a process group of its own.
    command.process_group(0);
    let run = command.spawn().unwrap();
    let group = run.id().unwrap();
    let (_, started) = stack.fake.wait_until(Duration::from_secs(10), |r| r.iter().any(|r| r.chunks_sent > 3)).await;
    assert!(started);
    let privates = private_daemons(&client.home);
    assert_eq!(privates.len(), 1, "one private aniated serves the command");
    // In a process group of its own: a Ctrl-C at the terminal is `ant`'s to handle, not its.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", privates[0])).unwrap();
    let pgrp: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_ne!(pgrp, group, "the private aniated is in ant's process group");
    let status = std::process::Command::new("kill").args(["-INT", "--", &format!("-{group}")]).status().unwrap();
    assert!(status.success());
    let interrupted_at = now_ms();
    let output = tokio::time::timeout(Duration::from_secs(20), run.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("closed the connection"), "the private daemon outlived the Ctrl-C: {stderr}");
    assert_cancelled_within_100ms(&stack, interrupted_at).await;

    let answered = client.ant(&["--no-daemon", "whoami"]).await;
    assert!(answered.ok().stdout.contains("private@example.test"), "{}", answered.stdout);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !private_daemons(&client.home).is_empty() {
        assert!(std::time::Instant::now() < deadline, "a private aniated outlived its command");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!socket.exists(), "--no-daemon started the daemon");

    // No aniated to run: said, with where it was looked for.
    let mut missing = client.command(&["--no-daemon", "whoami"]);
    missing.env("ANIATE_DAEMON_EXE", "/nonexistent/aniated");
    let missing = Run::from(missing.output().await.unwrap());
    missing.failed_with(1, "cannot run /nonexistent/aniated");
    missing.failed_with(1, "ANIATE_DAEMON_EXE");
    // An aniated that cannot start its engine says why, as ant's own error: one JSON document
    // on stderr with `--json`.
    let mut refused = client.command(&["--no-daemon", "--json", "whoami"]);
    refused.env("ANIATE_CA_CERT", "/nonexistent/ca.pem");
    let refused = Run::from(refused.output().await.unwrap());
    refused.failed_with(1, "cannot read CA certificate /nonexistent/ca.pem");
    let error: Value = serde_json::from_str(refused.stderr.trim()).expect("one JSON document on stderr");
    assert_eq!(error["error"]["exit"], 1, "{error}");
    assert!(!socket.exists(), "--no-daemon started the daemon");
}

/// The provider's last request was cancelled less than 100 ms after `interrupted_at` (Unix ms).
async fn assert_cancelled_within_100ms(stack: &Stack, interrupted_at: u64) {
    let (requests, cancelled) = stack
        .fake
        .wait_until(Duration::from_secs(2), |r| r.last().is_some_and(|r| r.outcome == Outcome::Cancelled))
        .await;
    assert!(cancelled, "{requests:?}");
    let delay = requests.last().unwrap().ended_at_ms.unwrap().saturating_sub(interrupted_at);
    assert!(delay < 100, "the provider request ended {delay} ms after Ctrl-C");
}

/// The pids of the `aniated --stdio` processes serving `home`.
fn private_daemons(home: &std::path::Path) -> Vec<u32> {
    let wanted = format!("ANIATE_HOME={}", home.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.len() >= 2
                && args[0].ends_with(b"aniated")
                && args[1] == b"--stdio"
                && environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_daemon_is_replaced() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    // An "old daemon": answers the hello with an old version, and stops when asked.
    let socket = client.home.join("aniated.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let old = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let frame: Value = serde_json::from_str(&line).unwrap();
            if frame.get("hello").is_some() {
                write
                    .write_all(b"{\"hello\":{\"protocol\":1,\"daemon\":\"aniated/0.0.1\",\"pid\":1}}\n")
                    .await
                    .unwrap();
            } else if frame["request"]["method"] == "shutdown" {
                let id = &frame["request"]["id"];
                write
                    .write_all(format!("{{\"reply\":{{\"id\":{id},\"event\":\"result\",\"data\":null}}}}\n").as_bytes())
                    .await
                    .unwrap();
                drop(listener_cleanup(&socket));
                return true;
            }
        }
        false
    });
    let started = client.ant(&["daemon", "start", "--json"]).await;
    let hello: Value = serde_json::from_str(&started.ok().stdout).unwrap();
    assert_eq!(hello["daemon"], format!("aniated/{}", env!("CARGO_PKG_VERSION")));
    assert!(old.await.unwrap(), "the old daemon was asked to shut down");
}

/// A tool run goes out in the same write as the hello (no round trip before it); when the
/// daemon that answers is older, the run is cancelled there (its connection closed), the older
/// daemon is asked to shut down, and a new daemon runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_run_is_sent_with_the_hello_and_survives_an_older_daemon() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("pipelined@example.test", &["what"]).await;
    client.ant(&["daemon", "stop"]).await.ok();
    let socket = client.home.join("aniated.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let old = tokio::spawn(async move {
        let (mut runs, mut cancelled) = (0, 0);
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let hello: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
            assert!(hello.get("hello").is_some(), "{hello}");
            write.write_all(b"{\"hello\":{\"protocol\":1,\"daemon\":\"aniated/0.0.1\",\"pid\":1}}\n").await.unwrap();
            let mut run = false;
            while let Ok(Some(line)) = lines.next_line().await {
                let frame: Value = serde_json::from_str(&line).unwrap();
                match frame["request"]["method"].as_str() {
                    // Sent with the hello, before it was answered.
                    Some("run_tool") => {
                        assert_eq!(frame["request"]["id"], 1, "{frame}");
                        run = true;
                        runs += 1;
                    }
                    Some("shutdown") => {
                        let id = &frame["request"]["id"];
                        let reply = format!("{{\"reply\":{{\"id\":{id},\"event\":\"result\",\"data\":null}}}}\n");
                        write.write_all(reply.as_bytes()).await.unwrap();
                        drop(listener_cleanup(&socket));
                        return (runs, cancelled);
                    }
                    _ => {}
                }
            }
            // The connection closed with the run unanswered: in a daemon, that cancels it.
            cancelled += usize::from(run);
        }
    });
    let run = client.ant(&["what", "-i", "sent with the hello", "--fresh"]).await;
    run.ok();
    assert!(run.stdout.contains("sent with the hello"), "{}", run.stdout);
    let (runs, cancelled) = tokio::time::timeout(Duration::from_secs(10), old).await.unwrap().unwrap();
    assert_eq!((runs, cancelled), (1, 1), "the older daemon got the run once, and its connection closed");
    let status = client.ant(&["daemon", "status", "--json"]).await;
    let status: Value = serde_json::from_str(&status.ok().stdout).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "a new daemon ran it");
}

fn listener_cleanup(socket: &std::path::Path) -> std::io::Result<()> {
    std::fs::remove_file(socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_invisible_to_the_next_run() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("restart@example.test", &["what"]).await;
    client.ant(&["what", "-i", "before the restart", "--fresh"]).await.ok();
    let daemon = client.daemon_pid().unwrap();
    stack.restart_server().unwrap();
    let after = client.ant(&["what", "-i", "after the restart", "--fresh"]).await;
    after.ok();
    assert!(after.stdout.contains("after the restart"), "{}", after.stdout);
    assert_eq!(client.daemon_pid(), Some(daemon), "the same warm daemon served it");
}

/// The socket is 0600, so another user cannot even connect; if it is opened up by mistake,
/// the daemon's peer-uid check still refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_even_through_an_open_socket() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipping: switching users needs root");
        return;
    }
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ant(&["daemon", "start"]).await.ok();
    // Open every directory on the way, and the socket itself.
    use std::os::unix::fs::PermissionsExt;
    let mut dir = Some(client.home.as_path());
    while let Some(path) = dir {
        if path == std::path::Path::new("/") {
            break;
        }
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        dir = path.parent();
    }
    let socket = client.home.join("aniated.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ant = crate::harness::ant();
    let output = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", ant.as_str(), "daemon", "status"])
        .env_clear()
        .env("ANIATE_HOME", &client.home)
        .env("ANIATE_DAEMON_EXE", "/bin/false")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_ne!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("not running"), "the other user got no answer: {stdout}");
    assert!(client.daemon_log().contains("refused a connection from another user"), "{}", client.daemon_log());
    // The owner is still served.
    client.ant(&["daemon", "status"]).await.ok();
}

/// `ant daemon install-service --no-start` writes units for this machine's paths that systemd
/// accepts; `uninstall-service` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_files_are_installed_and_removed() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut client = Client::new(&stack, "u");
    let config = client.home.join("xdg-config");
    client.env.push(("XDG_CONFIG_HOME".to_owned(), config.display().to_string()));
    let install = client.ant(&["daemon", "install-service", "--no-start"]).await;
    assert!(
        install.ok().stdout.contains("to start it: systemctl --user enable --now aniated.socket"),
        "{}",
        install.stdout
    );
    let units = config.join("systemd/user");
    let socket = std::fs::read_to_string(units.join("aniated.socket")).unwrap();
    assert!(socket.contains(&format!("ListenStream={}", client.home.join("aniated.sock").display())), "{socket}");
    let service = std::fs::read_to_string(units.join("aniated.service")).unwrap();
    assert!(service.contains(&format!("Environment=ANIATE_HOME={}", client.home.display())), "{service}");
    let exec = service.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert!(std::path::Path::new(exec).is_file(), "ExecStart names the real aniated: {exec}");
    if std::path::Path::new("/usr/bin/systemd-analyze").exists() {
        let runtime = client.home.join("runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        let output = std::process::Command::new("systemd-analyze")
            .args(["verify", "--user"])
            .arg(units.join("aniated.socket"))
            .arg(units.join("aniated.service"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.trim().is_empty(), "{stderr}");
    }
    let uninstall = client.ant(&["daemon", "uninstall-service", "--no-start"]).await;
    assert!(uninstall.ok().stdout.contains("removed"), "{}", uninstall.stdout);
    // Issue 20 item 7: the words match the command.
    assert!(
        uninstall.stdout.contains("to stop it: systemctl --user disable --now aniated.socket aniated.service"),
        "{}",
        uninstall.stdout
    );
    assert!(!units.join("aniated.socket").exists() && !units.join("aniated.service").exists());
}

/// `ant daemon stop` returns once the daemon has let go of the home, so a command right after it
/// starts a fresh daemon instead of finding the old one still holding the lock (which made it
/// wait 10 s and fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_right_after_daemon_stop_starts_a_fresh_daemon() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("restart@example.test", &["what"]).await;
    for n in 0..5 {
        // A cached answer gives the stopping daemon something to write.
        client.ant(&["what", "-i", &format!("question {n}")]).await.ok();
        let before = client.daemon_pid().expect("a daemon runs");
        client.ant(&["daemon", "stop"]).await.ok();
        let started = std::time::Instant::now();
        client.ant(&["whoami"]).await.ok();
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert_ne!(client.daemon_pid(), Some(before));
    }
}
