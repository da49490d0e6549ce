//! A full disk and a read-only `ANIATE_HOME`, for real: the home is a small tmpfs mounted in a
//! mount namespace of the test's own (`unshare`), and `ant` and the daemon it starts run inside
//! it (`nsenter`). Logging in, installing, updating and changing the config must fail with a
//! message that names the cause, leave every file as it was (no half-written file, no stray
//! temporary), and work again once there is room — without restarting the daemon.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aniate_testkit::stack::{Stack, StackOptions};
use serde_json::json;

use crate::harness::Client;

/// A process (`sleep`) holding a private mount namespace that tests can enter.
struct MountNamespace {
    holder: Child,
}

impl MountNamespace {
    /// `None` where namespaces cannot be made (not root): the test is skipped, except under
    /// `CI=true`, where it must run.
    fn new() -> Option<MountNamespace> {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut holder = match holder {
            Ok(holder) => holder,
            Err(err) => return skip(&format!("cannot run unshare: {err}")),
        };
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Until unshare(2) has run, the holder is still in our namespace.
            if std::fs::read_link(format!("/proc/{}/ns/mnt", holder.id())).is_ok_and(|ns| ns != ours) {
                return Some(MountNamespace { holder });
            }
            if let Ok(Some(status)) = holder.try_wait() {
                return skip(&format!("unshare --mount failed ({status}); it needs root"));
            }
            assert!(Instant::now() < deadline, "unshare did not make a namespace within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `nsenter` into the namespace, as a command prefix.
    fn wrapper(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"].map(str::to_owned).to_vec()
    }

    /// Runs `sh -c SCRIPT` inside; panics unless it succeeds.
    fn sh(&self, script: &str) -> String {
        let output = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(output.status.success(), "{script}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Where this process sees `path` of the namespace.
    fn view(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id())).join(path.strip_prefix("/").unwrap())
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn skip(why: &str) -> Option<MountNamespace> {
    assert!(!std::env::var("CI").is_ok_and(|ci| ci == "true"), "CI=true but {why}");
    eprintln!("skipping: {why}");
    None
}

/// Every file under `dir` (relative paths) with its bytes.
fn snapshot(dir: &Path) -> BTreeSet<(String, Vec<u8>)> {
    let mut files = BTreeSet::new();
    for name in ["credentials", "config.toml", "tools/fix.json", "tools/what.json", "tools/review.json"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            files.insert((name.to_owned(), bytes));
        }
    }
    files
}

/// The names in the home and its tools directory, but for the test's filler.
fn listing(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for sub in ["", "tools"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            names.insert(format!("{sub}/{}", entry.file_name().to_string_lossy()));
        }
    }
    names.remove("/filler");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_home_fails_cleanly_and_loses_nothing() {
    let Some(ns) = MountNamespace::new() else { return };
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut client = Client::new(&stack, "d");
    let home = client.home.clone();
    ns.sh(&format!("mount -t tmpfs -o size=4m,mode=0700 aniate-test {}", home.display()));
    client.wrapper = ns.wrapper();
    client.view = ns.view(&home);
    assert!(!client.view.join("d").exists() && std::fs::read_dir(&client.view).unwrap().next().is_none());

    client.ready("disk@example.test", &["fix", "what"]).await;
    client.ant(&["config", "set", "update_check_secs", "3600"]).await.ok();
    let second_token = stack.signup("disk-2@example.test").await.unwrap();
    let admin = stack.admin_token().await.unwrap();
    stack
        .push_tool(
            &admin,
            json!({"slug": "fix", "name": "Fix", "description": "Fix it, v2", "system_prompt": "v2", "output": "code"}),
        )
        .await
        .unwrap();
    let before = snapshot(&client.view);
    let names = listing(&client.view);
    assert_eq!(before.len(), 4, "{names:?}");

    for (state, make, cause) in [
        (
            "full",
            format!("dd if=/dev/zero of={}/filler bs=64k 2>/dev/null || true", home.display()),
            "No space left on device",
        ),
        // A read-only bind mount over the home: the daemon's open log and cache stay writable
        // (a tmpfs with open writers cannot go read-only), everything opened anew is not.
        (
            "read-only",
            format!("rm {0}/filler && mount --bind {0} {0} && mount -o remount,bind,ro {0}", home.display()),
            "Read-only file system",
        ),
    ] {
        ns.sh(&make);
        for args in [
            vec!["login", "--token", second_token.as_str()],
            vec!["install", "review"],
            vec!["update"],
            vec!["config", "set", "update_check_secs", "60"],
        ] {
            let run = client.ant(&args).await;
            assert_ne!(run.code, Some(0), "{state}: {args:?} succeeded\n{}", run.stdout);
            assert!(run.stderr.contains(cause), "{state}: {args:?} does not say why: {}", run.stderr);
            // It names the file, and says that nothing was lost.
            assert!(run.stderr.contains(&format!("cannot write {}", home.display())), "{}", run.stderr);
            if args[0] != "config" {
                assert!(run.stderr.contains("nothing stored was changed"), "{}", run.stderr);
            }
            assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
            assert_eq!(snapshot(&client.view), before, "{state}: {args:?} changed a file");
            assert_eq!(listing(&client.view), names, "{state}: {args:?} left a file behind");
        }
        // Answers need no disk: a run still works (its result is just not cached).
        let run = client.ant(&["what", "-i", "what is a monad?", "--fresh"]).await;
        assert_eq!(run.code, Some(0), "{state}: a run failed: {}", run.stderr);
    }

    // Room again: everything works, with the same daemon.
    let pid = client.daemon_pid().expect("the daemon is running");
    ns.sh(&format!("mount -o remount,bind,rw {}", home.display()));
    client.ant(&["update"]).await.ok();
    client.ant(&["install", "review"]).await.ok();
    assert!(client.view.join("tools/review.json").is_file());
    client.ant(&["login", "--token", &second_token]).await.ok();
    let whoami = client.ant(&["whoami", "--json"]).await;
    assert!(whoami.ok().stdout.contains("disk-2@example.test"), "{}", whoami.stdout);
    let fix = std::fs::read_to_string(client.view.join("tools/fix.json")).unwrap();
    assert!(fix.contains("Fix it, v2"), "{fix}");
    assert_eq!(client.daemon_pid(), Some(pid));
    client.ant(&["daemon", "stop"]).await.ok();
}
