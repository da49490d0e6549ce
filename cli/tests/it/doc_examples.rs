//! The command examples of README.md, docs/cli.md, docs/admin.md and docs/api.md, run as
//! tests (issue 20), so that the docs cannot drift from what the programs do.
//!
//! The convention, also in docs/architecture.md ("Testing"):
//!
//! - Every fenced block in those files whose info string is `sh`, `bash`, `shell` or `console`
//!   is a test. Other blocks (`text`, `json`, `toml`, none) are not run.
//! - A `sh` block is run as a script, with `set -e -o pipefail`: it passes when every command
//!   in it succeeds. Its output is not compared (it shows none).
//! - A `console` block shows output: a line `$ COMMAND` is a command (continued on the next
//!   line after a trailing `\` or inside an open quote), and the lines under it, up to the next
//!   `$ `, are what it prints on stdout and stderr together. In those lines `[..]` stands for
//!   any part of a line and a line `...` for any number of lines. The command must exit 0,
//!   unless the last line of its output is `? N`, the exit code it must end with.
//! - An HTML comment right before a block, invisible in the rendered page, changes that:
//!   `<!-- doc-test: skip: REASON -->` does not run it (the reason is required), and
//!   `<!-- doc-test: file NAME -->` before any block writes the block to the file NAME.
//!   `<!-- doc-test: setup` … `-->` on lines of its own is a hidden script, run where it stands,
//!   for what a reader is assumed to have (a file to fix, a git repository, another user).
//!
//! Each document runs top to bottom in one bash, like a reader pasting its blocks into one
//! terminal: variables and files carry over. Its sandbox: an empty `ANIATE_HOME`, `HOME`, a
//! working directory with `target/debug` and `demo/` linked in, `PATH` starting with
//! `target/debug` (but for the README, whose own `export` must do that). Every document but the
//! README gets a running `ant-server` on SQLite (`ANIATE_SERVER`, `ANIATE_DATABASE_URL` point
//! at it) in front of the fake provider playing `demo/fake-replies.toml`; the README starts its
//! own. The port 8787 in a document stands for its server's port, 8788 for a second free one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use aniate_testkit::{
    FakeLlmConfig,
    stack::{Stack, StackOptions, workspace_bin},
};

use crate::harness::Client;

/// How long one document may take, all blocks together.
const DOC_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// One thing a document asks the runner to do, in order.
#[derive(Debug)]
enum Step {
    /// A `sh` block, or a hidden setup script: every command must succeed.
    Script { line: usize, code: String },
    /// A `console` block's command and the output it must print.
    Command { line: usize, command: String, expected: Vec<String>, exit: i32 },
    /// `<!-- doc-test: file NAME -->`: the block written to a file.
    File { name: String, content: String },
}

/// A document's steps and the shell blocks it skips (with their reasons).
#[derive(Debug, Default)]
struct Plan {
    steps: Vec<Step>,
    skipped: Vec<(usize, String)>,
}

fn is_shell(info: &str) -> bool {
    matches!(info.split_whitespace().next(), Some("sh" | "bash" | "shell" | "console"))
}

/// Parses a document's blocks and markers; an error names the line of a misplaced marker.
fn parse_plan(doc: &str, text: &str) -> Result<Plan, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut plan = Plan::default();
    // A marker waiting for its block: (line, marker).
    let mut pending: Option<(usize, String)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let number = i + 1;
        if let Some(rest) = line.trim().strip_prefix("<!-- doc-test:") {
            if let Some((marker_line, _)) = &pending {
                return Err(format!("{doc}:{marker_line}: a doc-test marker not followed by a block"));
            }
            let rest = rest.trim();
            if rest == "setup" {
                let mut code = String::new();
                i += 1;
                while i < lines.len() && lines[i].trim() != "-->" {
                    code.push_str(lines[i]);
                    code.push('\n');
                    i += 1;
                }
                if i == lines.len() {
                    return Err(format!("{doc}:{number}: a doc-test setup without its closing `-->`"));
                }
                plan.steps.push(Step::Script { line: number, code });
                i += 1;
                continue;
            }
            let Some(marker) = rest.strip_suffix("-->") else {
                return Err(format!("{doc}:{number}: a doc-test marker must end on its line with `-->`"));
            };
            let marker = marker.trim();
            let known = marker.strip_prefix("skip:").is_some_and(|reason| !reason.trim().is_empty())
                || marker.strip_prefix("file ").is_some_and(|name| !name.trim().is_empty());
            if !known {
                return Err(format!(
                    "{doc}:{number}: unknown doc-test marker `{marker}` (skip: REASON, file NAME, or setup)"
                ));
            }
            pending = Some((number, marker.to_owned()));
            i += 1;
            continue;
        }
        // Fences may be indented (in a list); their lines are, by as much.
        if let Some(info) = line.trim_start().strip_prefix("```") {
            let indent = &line[..line.len() - line.trim_start().len()];
            let info = info.trim();
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push(lines[i].strip_prefix(indent).unwrap_or(lines[i]));
                i += 1;
            }
            if i == lines.len() {
                return Err(format!("{doc}:{number}: a code block that is never closed"));
            }
            i += 1;
            let marker = pending.take().map(|(_, marker)| marker);
            match marker.as_deref() {
                Some(marker) if marker.starts_with("skip:") => {
                    if !is_shell(info) {
                        return Err(format!("{doc}:{number}: `skip` before a block that is not run anyway"));
                    }
                    plan.skipped.push((number, marker["skip:".len()..].trim().to_owned()));
                }
                Some(marker) => {
                    let name = marker["file ".len()..].trim().to_owned();
                    let mut content = body.join("\n");
                    content.push('\n');
                    plan.steps.push(Step::File { name, content });
                }
                None if !is_shell(info) => {}
                None if info.starts_with("console") => plan.steps.extend(console_steps(doc, number, &body)?),
                None => plan.steps.push(Step::Script { line: number, code: body.join("\n") + "\n" }),
            }
            continue;
        }
        if pending.is_some() && !line.trim().is_empty() {
            let (marker_line, _) = pending.take().unwrap();
            return Err(format!("{doc}:{marker_line}: a doc-test marker not followed by a block"));
        }
        i += 1;
    }
    if let Some((marker_line, _)) = pending {
        return Err(format!("{doc}:{marker_line}: a doc-test marker not followed by a block"));
    }
    Ok(plan)
}

/// Whether a shell line leaves a quote open or ends with a `\`, so the command goes on.
fn continues(command: &str) -> bool {
    let (mut single, mut double, mut escaped) = (false, false, false);
    for c in command.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single || double || escaped
}

fn console_steps(doc: &str, block_line: usize, body: &[&str]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut i = 0;
    if body.first().is_some_and(|line| !line.starts_with("$ ")) {
        return Err(format!("{doc}:{block_line}: a console block must start with a `$ ` command"));
    }
    while i < body.len() {
        let line = block_line + 1 + i;
        let mut command = body[i]["$ ".len()..].to_owned();
        i += 1;
        while continues(&command) && i < body.len() {
            command.push('\n');
            command.push_str(body[i]);
            i += 1;
        }
        let mut expected = Vec::new();
        while i < body.len() && !body[i].starts_with("$ ") {
            expected.push(body[i].to_owned());
            i += 1;
        }
        let mut exit = 0;
        if let Some(code) = expected.last().and_then(|last| last.strip_prefix("? ")) {
            exit = code.trim().parse().map_err(|_| format!("{doc}:{line}: `? {code}` is not an exit code"))?;
            expected.pop();
        }
        while expected.last().is_some_and(|last| last.trim().is_empty()) {
            expected.pop();
        }
        steps.push(Step::Command { line, command, expected, exit });
    }
    Ok(steps)
}

/// Whether `actual` matches `pattern`, where `[..]` is any text. White space at the ends of lines
/// does not count: editors strip it from docs.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let (pattern, actual) = (pattern.trim_end(), actual.trim_end());
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (idx, part) in parts.iter().enumerate() {
        if idx == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether the `actual` lines match the `expected` ones, where a line `...` is any lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((first, rest)) => {
            actual.split_first().is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more))
        }
    }
}

/// The bash script for a plan; markers on stdout delimit each step's output.
fn script(plan: &Plan) -> String {
    let mut out = String::from("exec 2>&1\nset -e -o pipefail\n");
    for (idx, step) in plan.steps.iter().enumerate() {
        out.push_str(&format!("printf '@@doc-test:start {idx}\\n'\n"));
        match step {
            Step::Script { code, .. } => {
                // `{ }` and not `( )`: variables must outlive the block. stdin is the null device, so
                // that nothing reads the rest of this script.
                out.push_str(&format!("{{\n{code}\n}} </dev/null\n"));
            }
            Step::Command { command, .. } => {
                out.push_str(&format!(
                    "set +e\n{{\n{command}\n}} </dev/null\n__doc_test_exit=$?\nset -e\nprintf '\\n@@doc-test:exit %s\\n' \"$__doc_test_exit\"\n"
                ));
            }
            Step::File { name, content } => {
                out.push_str(&format!("cat > '{name}' <<'DOC_TEST_EOF'\n{content}DOC_TEST_EOF\n"));
            }
        }
    }
    out.push_str("printf '@@doc-test:end\\n'\n");
    out
}

/// A document's sandbox: the processes it started are killed when it is dropped.
struct Sandbox {
    /// Held for its `Drop`, which stops the daemon the document started.
    _client: Client,
    /// The process group of the document's bash, holding the servers it started in the background.
    group: Option<u32>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            kill_group(group);
        }
        // `client` stops the daemon when it is dropped, after this.
    }
}

/// Kills every process of a process group (the servers a document started with `&`).
fn kill_group(group: u32) {
    let _ =
        std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs one document in a fresh sandbox and fails with every difference found.
async fn run_doc(doc: &str) {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join(doc)).unwrap();
    let plan = parse_plan(doc, &text).unwrap_or_else(|err| panic!("{err}"));
    let own_server = doc == "README.md";
    for (line, reason) in &plan.skipped {
        eprintln!("{doc}:{line}: not run: {reason}");
    }

    let script_text = std::fs::read_to_string(root.join("demo/fake-replies.toml")).unwrap();
    let fake: FakeLlmConfig = toml::from_str(&script_text).unwrap();
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "home");
    let work = stack.new_home("work");
    let bin_dir = workspace_bin("ant").parent().unwrap().to_owned();
    std::fs::create_dir_all(work.join("target")).unwrap();
    std::os::unix::fs::symlink(&bin_dir, work.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(root.join("demo"), work.join("demo")).unwrap();

    let (port, second_port) = if own_server {
        (free_port(), free_port())
    } else {
        (stack.url.rsplit(':').next().unwrap().parse().unwrap(), free_port())
    };
    let substitute = |text: &str| text.replace("8787", &port.to_string()).replace("8788", &second_port.to_string());

    let mut env: Vec<(String, String)> =
        client.env.iter().filter(|(key, _)| key != "ANIATE_LOG" && key != "ANIATE_SERVER").cloned().collect();
    let path = std::env::var("PATH").unwrap_or_default();
    if own_server {
        env.push(("ANIATE_BIND".into(), format!("127.0.0.1:{port}")));
        env.push(("ANIATE_DATA_DIR".into(), work.join("demo-data").display().to_string()));
        env.push(("PATH".into(), path));
    } else {
        env.push(("ANIATE_SERVER".into(), stack.url.clone()));
        env.push(("ANIATE_DATABASE_URL".into(), stack.db_url().to_owned()));
        env.push(("PATH".into(), format!("{}:{path}", bin_dir.display())));
    }
    env.push(("HOME".into(), work.display().to_string()));
    for (key, value) in [
        ("GIT_AUTHOR_NAME", "Ada"),
        ("GIT_AUTHOR_EMAIL", "ada@example.com"),
        ("GIT_COMMITTER_NAME", "Ada"),
        ("GIT_COMMITTER_EMAIL", "ada@example.com"),
    ] {
        env.push((key.into(), value.into()));
    }

    let script_path = stack.dir.path().join("doc-test.sh");
    std::fs::write(&script_path, substitute(&script(&plan))).unwrap();
    let output_path = stack.dir.path().join("doc-test.out");
    let mut command = std::process::Command::new("bash");
    aniate_testkit::clear_aniate_env(&mut command);
    for key in ["VISUAL", "EDITOR", "COLUMNS"] {
        command.env_remove(key);
    }
    // A file, not a pipe: servers the document starts in the background keep their stdout open.
    let output_file = std::fs::File::create(&output_path).unwrap();
    command
        .arg(&script_path)
        .envs(env)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(output_file)
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().unwrap();
    let mut sandbox = Sandbox { _client: client, group: Some(child.id()) };

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DOC_TIMEOUT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some(group) = sandbox.group.take() {
        kill_group(group);
    }
    let _ = child.wait();
    let output = std::fs::read_to_string(&output_path).unwrap();

    let mut failures = Vec::new();
    let mut finished = 0;
    let mut chunks = output.split("@@doc-test:start ").skip(1).peekable();
    while let Some(chunk) = chunks.next() {
        let (idx, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let idx: usize = idx.trim().parse().unwrap();
        let step = &plan.steps[idx];
        let is_last = chunks.peek().is_none();
        match step {
            Step::Command { line, command, expected, exit } => {
                let Some((printed, code)) = rest.rsplit_once("\n@@doc-test:exit ") else {
                    failures.push(format!("{doc}:{line}: `{command}` did not finish:\n{rest}"));
                    break;
                };
                let code: i32 = code.lines().next().unwrap_or("").trim().parse().unwrap_or(-1);
                let printed = substitute_back(printed, port, second_port);
                let actual: Vec<&str> = printed.trim_end_matches('\n').lines().collect();
                let actual: Vec<&str> = {
                    let mut actual = actual;
                    while actual.last().is_some_and(|last| last.trim().is_empty()) {
                        actual.pop();
                    }
                    actual
                };
                if code != *exit {
                    failures.push(format!("{doc}:{line}: `{command}` exited {code}, the doc says {exit}:\n{printed}"));
                } else if !lines_match(expected, &actual) {
                    failures.push(format!(
                        "{doc}:{line}: `{command}` printed something else\n--- the doc shows:\n{}\n--- it printed:\n{}",
                        expected.join("\n"),
                        actual.join("\n")
                    ));
                }
            }
            Step::Script { line, .. } if is_last && !rest.contains("@@doc-test:end") => {
                failures
                    .push(format!("{doc}:{line}: this block failed:\n{}", substitute_back(rest, port, second_port)));
            }
            Step::File { name, .. } if is_last && !rest.contains("@@doc-test:end") => {
                failures.push(format!("{doc}: writing {name} failed:\n{rest}"));
            }
            _ => {}
        }
        finished = idx + 1;
    }
    if status.is_none() {
        failures.push(format!("{doc}: did not finish within {DOC_TIMEOUT:?}; the last step started was #{finished}"));
    } else if finished < plan.steps.len() && failures.is_empty() {
        failures.push(format!("{doc}: stopped after step #{finished} of {}:\n{output}", plan.steps.len()));
    }
    drop(sandbox);
    drop(stack);
    assert!(
        failures.is_empty(),
        "{} example(s) of {doc} do not do what it shows:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The document's own ports back, so that expected and actual output compare.
fn substitute_back(text: &str, port: u16, second_port: u16) -> String {
    text.replace(&port.to_string(), "8787").replace(&second_port.to_string(), "8788")
}

#[tokio::test]
async fn readme_examples() {
    run_doc("README.md").await;
}

#[tokio::test]
async fn cli_examples() {
    run_doc("docs/cli.md").await;
}

#[tokio::test]
async fn admin_examples() {
    run_doc("docs/admin.md").await;
}

#[tokio::test]
async fn api_examples() {
    run_doc("docs/api.md").await;
}

#[test]
fn the_runner_reads_markers_and_wildcards() {
    let doc = "Text\n\n<!-- doc-test: skip: needs systemd -->\n```sh\nsystemctl --user start x\n```\n\n```console\n$ echo 'a\nb'\na\n[..]\n$ false\n? 1\n```\n<!-- doc-test: setup\ntouch f\n-->\n";
    let plan = parse_plan("t.md", doc).unwrap();
    assert_eq!(plan.skipped, vec![(4, "needs systemd".to_owned())]);
    assert_eq!(plan.steps.len(), 3);
    assert!(
        matches!(&plan.steps[0], Step::Command { command, expected, exit: 0, .. } if command == "echo 'a\nb'" && expected.len() == 2)
    );
    assert!(matches!(&plan.steps[1], Step::Command { exit: 1, .. }));
    let listed = parse_plan("t.md", "- a list\n\n  ```sh\n  ant list\n  ```\n").unwrap();
    assert!(matches!(&listed.steps[..], [Step::Script { code, .. }] if code == "ant list\n"), "{listed:?}");
    assert!(parse_plan("t.md", "<!-- doc-test: skip -->\n```sh\nx\n```\n").is_err(), "a skip needs a reason");
    assert!(
        parse_plan("t.md", "<!-- doc-test: skip: r -->\ntext\n```sh\nx\n```\n").is_err(),
        "a marker must touch its block"
    );
    assert!(line_matches("id [..], at [..]", "id 7, at 12:00"));
    assert!(!line_matches("id [..], at", "id 7, at 12:00"));
    let expected: Vec<String> = ["a", "...", "z"].map(String::from).to_vec();
    assert!(lines_match(&expected, &["a", "b", "c", "z"]));
    assert!(lines_match(&expected, &["a", "z"]));
    assert!(!lines_match(&expected, &["a", "b"]));
}
