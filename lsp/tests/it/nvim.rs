//! A real editor end to end: headless Neovim runs `lsp/tests/nvim/fix_and_review.lua`, which
//! starts `ant-lsp` through `vim.lsp`, applies "Aniate: fix" from the code action menu and
//! checks the buffer, then runs "Aniate: review" and checks `vim.diagnostic.get`.
//!
//! Without `nvim` on PATH the test fails under `CI=true` and is skipped (with a message)
//! otherwise.

use std::{path::Path, process::Stdio, time::Duration};

use aniate_testkit::{FakeLlmConfig, Rule};

use crate::harness::{Machine, ant_lsp};

const BUGGY: &str = "# fix-me\ndef add(a, b):\n    return a - b\n\n\nprint(add(2, 3))\n";
const FIXED: &str = "# fix-me\ndef add(a, b):\n    return a + b\n\n\nprint(add(2, 3))\n";
const REVIEW: &str = concat!(
    "{\"line\": 2, \"severity\": \"hint\", \"message\": \"add a docstring\"}\n",
    "{\"line\": 3, \"severity\": \"warning\", \"message\": \"returns the sum\"}\n",
);

fn nvim_version() -> Option<String> {
    let output = std::process::Command::new("nvim").arg("--version").output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neovim_fixes_and_reviews_through_ant_lsp() {
    let Some(version) = nvim_version() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nvim is not installed, and CI=true: the real-editor test must run (apt-get install -y neovim)"
        );
        eprintln!("SKIPPED neovim_fixes_and_reviews_through_ant_lsp: nvim is not installed (apt-get install neovim)");
        return;
    };
    eprintln!("using {version}");
    let rules = vec![
        // Review requests number their lines ("1: # fix-me"); fix requests do not.
        Rule { when_contains: "1: # fix-me".to_owned(), reply: REVIEW.to_owned() },
        Rule { when_contains: "fix-me".to_owned(), reply: format!("```python\n{FIXED}```") },
    ];
    let machine = Machine::start(FakeLlmConfig { rules, ..Default::default() }).await;
    machine.login().await;
    machine.install(&["fix", "review"]).await;
    let (path, _) = machine.file("calc.py", BUGGY);
    let out = machine.work.join("nvim-result.txt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvim/fix_and_review.lua");

    let mut command = tokio::process::Command::new("nvim");
    aniate_testkit::clear_aniate_env(command.as_std_mut());
    command
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "--noplugin", "-c"])
        .arg(format!("luafile {}", script.display()))
        .envs(machine.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ANT_LSP_EXE", ant_lsp())
        .env("ANT_LSP_TEST_FILE", &path)
        .env("ANT_LSP_TEST_EXPECTED", FIXED)
        .env("ANT_LSP_TEST_OUT", &out)
        // Neovim's own state (LSP log) stays in the test's directory.
        .env("XDG_STATE_HOME", machine.work.join("state"))
        .env("XDG_CACHE_HOME", machine.work.join("cache"))
        .env("XDG_DATA_HOME", machine.work.join("data"))
        .env("XDG_CONFIG_HOME", machine.work.join("config"))
        .current_dir(&machine.work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("nvim finished within 90 s")
        .expect("run nvim");
    let log = std::fs::read_to_string(&out).unwrap_or_else(|_| "(no result file)".to_owned());
    assert!(
        output.status.success() && log.contains("PASS"),
        "nvim: {:?}\nresult:\n{log}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // The file on disk is untouched: the fix went to the buffer (the user saves).
    assert_eq!(std::fs::read_to_string(&path).unwrap(), BUGGY);
}
