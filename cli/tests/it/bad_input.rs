//! Bad input: a clear message, the contract's exit code, no network call where none is
//! needed, and nothing stored lost.

use aniate_testkit::stack::{Stack, StackOptions};

use crate::harness::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_locally_with_the_right_exit_codes() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");

    // Not installed: exit 4, the install hint, and no request at all (no daemon needed either).
    let requests_before = stack.server_log().matches("response").count();
    client.ant(&["fix", "app.py"]).await.failed_with(4, "ant install fix");
    assert_eq!(client.daemon_pid(), None, "no daemon was started for a tool that is not installed");
    assert_eq!(stack.server_log().matches("response").count(), requests_before, "no server request");

    // Not logged in: exit 3.
    client.ant(&["whoami"]).await.failed_with(3, "ant login");
    client.ant(&["install", "fix"]).await.ok();
    client.write("app.py", "print('hi')\n");
    client.ant(&["fix", "app.py"]).await.failed_with(3, "not logged in");

    client
        .ant_with_stdin(&["login", "--email", "nobody@example.test", "--password-stdin"], "wrong-password\n")
        .await
        .failed_with(3, "wrong email or password");
    client.ready("bad@example.test", &[]).await;

    // Unknown tool on install: exit 4.
    client.ant(&["install", "no-such-tool"]).await.failed_with(4, "no-such-tool");
    // Files refused before sending: missing, a directory, binary, too large.
    client.ant(&["fix", "missing.py"]).await.failed_with(1, "no such file");
    client.ant(&["fix", "."]).await.failed_with(1, "is a directory");
    std::fs::write(client.home.join("blob.bin"), [0u8, 159, 146, 150, 0, 1, 2]).unwrap();
    client.ant(&["fix", "blob.bin"]).await.failed_with(1, "binary");
    std::fs::write(client.home.join("huge.py"), "x".repeat(1024 * 1024 + 1)).unwrap();
    client.ant(&["fix", "huge.py"]).await.failed_with(1, "1 MiB");
    assert!(stack.fake.requests().is_empty(), "none of it reached the provider");
    // Usage errors: exit 2.
    client.ant(&["fix"]).await.failed_with(2, "needs a file");
    client.ant(&["install"]).await.failed_with(2, "");
    client.ant(&["--bogus-flag"]).await.failed_with(2, "");

    // A corrupt tools/*.json or config.toml is warned about, not a crash.
    std::fs::write(client.home.join("tools/fix.json"), "{not json").unwrap();
    client.ant(&["fix", "app.py"]).await.failed_with(4, "corrupt");
    client.ant(&["install", "fix"]).await.ok();
    std::fs::write(client.home.join("config.toml"), "server = [").unwrap();
    let config = client.ant(&["config", "list"]).await;
    assert!(config.ok().stderr.contains("ignoring"), "{}", config.stderr);
    std::fs::remove_file(client.home.join("config.toml")).unwrap();
    client.ant(&["config", "set", "server", "ftp://x"]).await.failed_with(1, "http://");
    client.ant(&["config", "set", "cache_ttl_secs", "60"]).await.ok();
    assert_eq!(client.ant(&["config", "get", "cache_ttl_secs"]).await.ok().stdout.trim(), "60");

    // Server down: exit 5 with what failed.
    let down = Client::new(&stack, "d");
    let mut env = down.env.clone();
    for (key, value) in &mut env {
        if key == "ANIATE_SERVER" {
            *value = "http://127.0.0.1:9".to_owned();
        }
    }
    let down = Client { home: down.home.clone(), env, wrapper: Vec::new(), view: down.view.clone() };
    down.ant(&["--no-daemon", "marketplace"]).await.failed_with(5, "cannot reach the Aniate server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_version_and_completions() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let client = Client::new(&stack, "u");
    let version = client.ant(&["--version"]).await;
    assert_eq!(version.ok().stdout.trim(), format!("ant {}", env!("CARGO_PKG_VERSION")));
    let help = client.ant(&["--help"]).await;
    assert!(help.ok().stdout.contains("marketplace") && help.stdout.contains("Exit"), "{}", help.stdout);
    // Without a daemon, `ant version` says so and starts none.
    let alone = client.ant(&["version"]).await;
    assert_eq!(
        alone.ok().stdout,
        format!(
            "ant {}\naniated is not running (it starts with the next command that needs it)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(!client.home.join("aniated.sock").exists(), "ant version started a daemon");

    client.ant(&["install", "fix"]).await;
    let completions = client.ant(&["completions", "bash"]).await;
    assert!(completions.ok().stdout.contains("complete"), "bash completions");

    // With a daemon running, --version is still the client's version alone (no socket), and
    // `ant version` also names the daemon's and the server's versions.
    client.ant(&["daemon", "start"]).await.ok();
    let version = client.ant(&["--version"]).await;
    assert_eq!(version.ok().stdout, format!("ant {}\n", env!("CARGO_PKG_VERSION")));
    let mut versions = String::new();
    for _ in 0..50 {
        versions = client.ant(&["version"]).await.ok().stdout.clone();
        if versions.contains("ant-server 0.1.0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lines: Vec<&str> = versions.lines().collect();
    assert_eq!(lines[0], format!("ant {}", env!("CARGO_PKG_VERSION")));
    assert!(lines[1].starts_with(&format!("aniated {} (pid ", env!("CARGO_PKG_VERSION"))), "{versions}");
    assert_eq!(lines[2], format!("ant-server {} at {}", env!("CARGO_PKG_VERSION"), stack.url));
    let json = client.ant(&["version", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(json["ant"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["aniated"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["server"]["url"], stack.url.as_str());

    // Man pages for packagers, from the clap definitions.
    let dir = client.home.join("man");
    let man = client.ant(&["manpages", dir.to_str().unwrap()]).await;
    assert!(man.ok().stdout.contains("man pages"), "{}", man.stdout);
    for page in ["ant.1", "ant-install.1", "aniated.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}: {}", &text[..text.len().min(200)]);
    }
}
