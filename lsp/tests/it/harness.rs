//! A user's machine for end-to-end tests: a [`Stack`] (real `ant-server` and fake LLM), a
//! client home prepared with the real `ant`, and `ant-lsp` started on it the way an editor
//! would, with `aniated` started on demand. The daemon is killed when the test lets go.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aniate_testkit::{
    FakeLlmConfig,
    stack::{Stack, StackOptions, workspace_bin},
};

use crate::{
    client::{LspClient, file_uri, full_capabilities},
    procs::daemons_of,
};

/// `ant-lsp`, as built for the workspace (its binary target lives in packaging/pypi).
pub fn ant_lsp() -> String {
    aniate_testkit::stack::workspace_bin("ant-lsp").display().to_string()
}

pub struct Machine {
    pub stack: Stack,
    pub home: PathBuf,
    /// Where the test's source files live.
    pub work: PathBuf,
    pub env: Vec<(String, String)>,
}

/// What one `ant` run printed.
#[derive(Debug)]
pub struct AntRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Machine {
    pub async fn start(fake: FakeLlmConfig) -> Machine {
        let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.expect("start the stack");
        Machine::with_stack(stack)
    }

    /// A machine on a stack the test started itself.
    pub fn with_stack(stack: Stack) -> Machine {
        let home = stack.new_home("h");
        let work = stack.new_home("work");
        let mut env = stack.client_env(&home);
        env.push(("ANIATE_DAEMON_EXE".to_owned(), workspace_bin("aniated").display().to_string()));
        Machine { stack, home, work, env }
    }

    /// Runs `ant ARGS` for this home.
    pub async fn ant(&self, args: &[&str]) -> AntRun {
        let mut command = tokio::process::Command::new(workspace_bin("ant"));
        aniate_testkit::clear_aniate_env(command.as_std_mut());
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("ant finished within 60 s")
            .expect("run ant");
        let run = AntRun {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert_eq!(run.code, Some(0), "ant {args:?} failed: {run:?}");
        run
    }

    /// Signs up a user on the server and logs this home in with `ant login --token`.
    pub async fn login(&self) {
        let token = self.stack.signup("lsp@example.test").await.expect("signup");
        self.ant(&["login", "--token", &token]).await;
    }

    pub async fn install(&self, slugs: &[&str]) {
        let mut args = vec!["install"];
        args.extend_from_slice(slugs);
        self.ant(&args).await;
    }

    /// Starts `ant-lsp` for this home and initializes it as a capable editor.
    pub async fn lsp(&self) -> LspClient {
        self.lsp_with(full_capabilities(), None).await
    }

    pub async fn lsp_with(
        &self,
        capabilities: tower_lsp_server::lsp_types::ClientCapabilities,
        options: Option<serde_json::Value>,
    ) -> LspClient {
        let log = self.stack.dir.path().join("ant-lsp.log");
        let client = LspClient::spawn(Path::new(&ant_lsp()), &self.env, &self.work, &log);
        client.initialize(capabilities, options).await;
        client
    }

    /// Writes a source file and returns its path and URI.
    pub fn file(&self, name: &str, content: &str) -> (PathBuf, tower_lsp_server::lsp_types::Uri) {
        let path = self.work.join(name);
        std::fs::write(&path, content).expect("write a source file");
        let uri = file_uri(&path);
        (path, uri)
    }

    pub fn lsp_log(&self) -> String {
        std::fs::read_to_string(self.stack.dir.path().join("ant-lsp.log")).unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.home.join("aniated.lock")).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // ant-lsp starts a daemon as soon as it is initialized, which may still be starting
        // (not yet in aniated.lock) when a short test ends: find them all by their home.
        let mut pids = daemons_of(&self.home);
        pids.extend(self.daemon_pid());
        for pid in pids {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
