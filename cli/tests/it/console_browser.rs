//! The console in a real browser: `console_browser.py` drives headless Chromium (Debian's
//! `chromium` and `chromium-driver`, Selenium pinned in `cli/tests/console-requirements.txt`)
//! against a real server, and runs `ant` for the client side, through the whole
//! scenario: sign in as admin, push a tool, see it in `GET /tools` and `ant marketplace`, edit
//! its prompt, diff versions 1 and 2, roll back, `ant update` gets the rollback, the usage chart
//! has a point per day with usage, a user's session gets 403 on admin pages and never a prompt,
//! and a form posted without its CSRF token is refused.
//!
//! Outside CI the test is skipped when Chromium, its driver or Selenium is missing; under
//! `CI=true` it fails (`.ci/run` installs them). Screenshots go to
//! `target/console-screenshots` (docs/console.md shows a few).

use std::path::{Path, PathBuf};

use aniate_testkit::stack::{Stack, StackOptions};

use crate::harness::Client;

/// The chromedriver binary, if this machine has one.
fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].iter().map(PathBuf::from).find(|path| path.is_file())
}

fn selenium_installed() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let driver = chromedriver();
    if driver.is_none() || !selenium_installed() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true but Chromium's driver or Selenium is missing: .ci/run installs them"
        );
        eprintln!(
            "skipping: install chromium, chromium-driver and `pip install -r cli/tests/console-requirements.txt`"
        );
        return;
    }
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    stack
        .admin(&["create-user", "--email", "admin@console.test", "--admin", "--password-stdin"], "console-admin-pw-1\n")
        .unwrap();
    let client = Client::new(&stack, "u");
    client.ready("user@console.test", &[]).await;

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/console_browser.py");
    let mut command = tokio::process::Command::new("python3");
    command.arg(script);
    aniate_testkit::clear_aniate_env(command.as_std_mut());
    let output = command
        .envs(client.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("CONSOLE_URL", &stack.url)
        .env("ADMIN_EMAIL", "admin@console.test")
        .env("ADMIN_PASSWORD", "console-admin-pw-1")
        .env("USER_EMAIL", "user@console.test")
        .env("USER_PASSWORD", "password-123")
        .env("ANT", crate::harness::ant())
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMEDRIVER", driver.unwrap())
        .current_dir(&client.home)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), output)
        .await
        .expect("the browser test finished within 240 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}\nserver log tail: {}",
        tail(&stack.server_log())
    );
    assert!(stdout.contains("console browser test passed"), "{stdout}");
    for shot in ["tools", "diff", "rollback-confirm", "usage", "my-usage"] {
        assert!(screenshots.join(format!("{shot}.png")).is_file(), "screenshot {shot}");
    }
    assert!(!stack.server_log().contains("BROWSER-PROMPT-MARKER"), "no prompt in the server log");
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
