//! [`TestProcess`]: a real binary run by an integration test, with its stdout captured
//! line by line and its stderr appended to a log file, killed when the test lets go of it.
//!
//! Blocking (`std::process`), so it works the same from plain and from tokio tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Lines of the log file quoted in errors.
const LOG_TAIL_LINES: usize = 40;
/// How often waits re-check whether the child is still alive.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long to wait for the last stdout lines after the child exited; they can arrive
/// after the exit is visible, since the reader thread drains the pipe on its own schedule.
const STDOUT_DRAIN_GRACE: Duration = Duration::from_millis(500);

/// A spawned child process; killed with SIGKILL when dropped.
#[derive(Debug)]
pub struct TestProcess {
    /// Behind a mutex because `try_wait` needs `&mut` and waits take `&self`.
    child: Mutex<Child>,
    pid: u32,
    /// For error messages.
    program: PathBuf,
    log_path: PathBuf,
    stdout: Arc<Stdout>,
}

/// The child's stdout as read so far, shared with the reader thread.
#[derive(Debug, Default)]
struct Stdout {
    state: Mutex<StdoutState>,
    /// Signalled on every new line and at end of stream.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct StdoutState {
    lines: Vec<String>,
    /// The pipe reached end of stream: every process holding it has exited or closed it.
    closed: bool,
}

impl TestProcess {
    /// Spawns `program` with `args` and `envs`, with every inherited env var starting with
    /// `ANIATE_` removed first (so a developer's environment can't leak in), stdin null,
    /// stdout captured line by line, stderr appended to `log_path` (created if missing).
    pub fn spawn(
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log_path: &Path,
    ) -> std::io::Result<TestProcess> {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
        let mut command = Command::new(program);
        command.args(args);
        clear_aniate_env(&mut command);
        command.envs(envs.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log_file));
        let mut child = command.spawn()?;
        let pid = child.id();
        let stdout = Arc::new(Stdout::default());
        if let Some(pipe) = child.stdout.take() {
            let stdout = Arc::clone(&stdout);
            std::thread::Builder::new().name(format!("stdout-{pid}")).spawn(move || read_stdout(pipe, &stdout))?;
        } else {
            // Cannot happen with `Stdio::piped()`; recorded as an empty, closed stdout.
            lock(&stdout.state).closed = true;
        }
        Ok(TestProcess {
            child: Mutex::new(child),
            pid,
            program: program.to_owned(),
            log_path: log_path.to_owned(),
            stdout,
        })
    }

    /// Waits until a stdout line starts with `prefix` and returns it. Fails, quoting the
    /// log file's last lines, if the process exits first or `timeout` passes.
    pub fn wait_for_stdout_line(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut exited: Option<(ExitStatus, Instant)> = None;
        let mut state = lock(&self.stdout.state);
        loop {
            if let Some(line) = state.lines.iter().find(|line| line.starts_with(prefix)) {
                return Ok(line.clone());
            }
            if exited.is_none()
                && let Ok(Some(status)) = lock(&self.child).try_wait()
            {
                exited = Some((status, Instant::now()));
            }
            if let Some((status, exited_at)) = exited
                && (state.closed || exited_at.elapsed() >= STDOUT_DRAIN_GRACE)
            {
                bail!(
                    "{} (pid {}) exited with {status} before printing a line starting with {prefix:?}\n{}",
                    self.program.display(),
                    self.pid,
                    self.describe_output(&state.lines)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{} (pid {}) printed no line starting with {prefix:?} within {timeout:?}\n{}",
                    self.program.display(),
                    self.pid,
                    self.describe_output(&state.lines)
                );
            }
            let wait = POLL_INTERVAL.min(deadline - now);
            state = self.stdout.changed.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Every stdout line so far, without line endings.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout.state).lines.clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Kills the process with SIGKILL (if still running) and reaps it.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Ok(None) = child.try_wait() {
            // Fails only if the process already exited, which is what we want anyway.
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit
    /// status. On timeout the process is killed and an error returned.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // `kill(1)` rather than libc: the workspace denies unsafe code.
        let kill_status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running kill -TERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if !kill_status.success() {
                bail!("kill -TERM {} failed with {kill_status}", self.pid);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "{} (pid {}) did not exit within {timeout:?} of SIGTERM, killed it\n{}",
                    self.program.display(),
                    self.pid,
                    self.describe_output(&self.stdout_lines())
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn try_wait(&self) -> anyhow::Result<Option<ExitStatus>> {
        lock(&self.child).try_wait().with_context(|| format!("waiting for pid {}", self.pid))
    }

    fn describe_output(&self, stdout_lines: &[String]) -> String {
        let first_lines: Vec<&str> = stdout_lines.iter().take(10).map(String::as_str).collect();
        format!(
            "stdout (first lines): {first_lines:?}\nlast {LOG_TAIL_LINES} lines of {}:\n{}",
            self.log_path.display(),
            read_log_tail(&self.log_path, LOG_TAIL_LINES)
        )
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_stdout(pipe: std::process::ChildStdout, stdout: &Stdout) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while line.last().is_some_and(|&byte| byte == b'\n' || byte == b'\r') {
                    line.pop();
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                lock(&stdout.state).lines.push(text);
                stdout.changed.notify_all();
            }
        }
    }
    lock(&stdout.state).closed = true;
    stdout.changed.notify_all();
}

/// Removes every `ANIATE_*` variable `command` would inherit, so a test's processes see only the
/// environment it gives them, whatever the developer's shell has set.
pub fn clear_aniate_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANIATE_") {
            command.env_remove(key);
        }
    }
}

/// The last `lines` lines of the file at `path`, or a note saying why it can't be read.
pub fn read_log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// Locks ignoring poisoning: a panicking test thread must not hide the process state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
