//! Runs `ant` for a client home of a [`Stack`], and stops the daemon it started.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use aniate_testkit::stack::{Stack, workspace_bin};
use tokio::io::AsyncWriteExt;

/// `ant`, as built for the workspace (its binary target lives in packaging/pypi).
pub fn ant() -> String {
    workspace_bin("ant").display().to_string()
}

/// A user's machine: an `ANIATE_HOME` pointed at the stack's server.
pub struct Client {
    pub home: PathBuf,
    pub env: Vec<(String, String)>,
    /// A command `ant` runs under, e.g. `nsenter -t PID -m --` to run it in another mount
    /// namespace; empty to run it directly.
    pub wrapper: Vec<String>,
    /// Where this test process sees `home` (differs when `ant` runs in another mount namespace).
    pub view: PathBuf,
}

/// What one `ant` run did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "ant failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    pub fn failed_with(&self, code: i32, needle: &str) -> &Run {
        assert_eq!(self.code, Some(code), "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Client {
    pub fn new(stack: &Stack, name: &str) -> Client {
        let home = stack.new_home(name);
        let mut env = stack.client_env(&home);
        env.push(("ANIATE_DAEMON_EXE".to_owned(), workspace_bin("aniated").display().to_string()));
        env.push(("NO_COLOR".to_owned(), "1".to_owned()));
        Client { view: home.clone(), home, env, wrapper: Vec::new() }
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(wrapper_args).arg(ant());
                command
            }
            None => tokio::process::Command::new(ant()),
        };
        aniate_testkit::clear_aniate_env(command.as_std_mut());
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.view)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `ant ARGS` with `stdin`, waiting at most 60 s.
    pub async fn ant_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self.command(args).spawn().expect("spawn ant");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.as_bytes()).await.unwrap();
        drop(pipe);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("ant finished within 60 s")
            .unwrap();
        output.into()
    }

    pub async fn ant(&self, args: &[&str]) -> Run {
        self.ant_with_stdin(args, "").await
    }

    /// Runs `ant ARGS` on a pseudo-terminal (`pty_driver.py`) with `typed` as the keys typed,
    /// waiting at most 60 s; returns everything the terminal showed and the exit code.
    pub async fn ant_on_terminal(&self, args: &[&str], typed: &[u8]) -> (String, Option<i32>) {
        let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/pty_driver.py");
        let mut terminal = tokio::process::Command::new("python3");
        terminal.arg(driver).arg(ant()).args(args);
        aniate_testkit::clear_aniate_env(terminal.as_std_mut());
        let mut child = terminal
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.view)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let mut pipe = child.stdin.take().unwrap();
        let hex: String = typed.iter().map(|b| format!("{b:02x}")).collect();
        let script = if typed.is_empty() { "close\n".to_owned() } else { format!("send {hex}\nclose\n") };
        pipe.write_all(script.as_bytes()).await.unwrap();
        drop(pipe);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the terminal session finished within 60 s")
            .unwrap();
        let screen = String::from_utf8_lossy(&output.stdout).into_owned();
        let code = screen.trim_end().rsplit_once("EXIT ").and_then(|(_, code)| code.trim().parse().ok());
        (screen, code)
    }

    /// Signs up through `ant signup` and installs `tools`.
    pub async fn ready(&self, email: &str, tools: &[&str]) {
        self.ant_with_stdin(&["signup", "--email", email, "--password-stdin"], "password-123\n").await.ok();
        if !tools.is_empty() {
            let mut args = vec!["install"];
            args.extend_from_slice(tools);
            self.ant(&args).await.ok();
        }
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.view.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The pid of the daemon serving this home, if one is running.
    pub fn daemon_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.view.join("aniated.lock")).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.view.join("aniated.log")).unwrap_or_default()
    }

    /// Every byte stored under the home, for leak checks.
    pub fn all_files_text(&self) -> String {
        fn walk(dir: &Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        let mut out = String::new();
        walk(&self.view, &mut out);
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

pub fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
