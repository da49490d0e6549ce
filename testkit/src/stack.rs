//! [`Stack`]: a real `ant-server` (SQLite, optionally HTTPS with a test CA) in front of the
//! fake LLM, plus an empty client home, for end-to-end tests of `aniated`, `ant` and `ant-lsp`.
//!
//! The binaries are found in the workspace's target directory ([`workspace_bin`]), so run the
//! tests with `cargo nextest run --workspace` (or build the binaries first).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{FakeLlm, FakeLlmConfig, TestProcess, tls::TestCa};

/// The password of every user a [`Stack`] creates.
pub const PASSWORD: &str = "stack-password-1";

/// Runs `SERVER admin ARGS` against the database at `db_url`, with `stdin` as its input.
pub fn run_admin(server: &Path, db_url: &str, args: &[&str], stdin: &str) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    let mut child = std::process::Command::new(server)
        .arg("admin")
        .args(args)
        .env("ANIATE_DATABASE_URL", db_url)
        .env_remove("ANIATE_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("a piped stdin").write_all(stdin.as_bytes())?;
    child.wait_with_output()
}

/// A binary of this workspace, next to the running test executable's `deps/` directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/test-binary -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} is missing: build the workspace first (cargo build --workspace)", path.display());
    path
}

#[derive(Debug, Default)]
pub struct StackOptions {
    pub fake: FakeLlmConfig,
    /// Serve HTTPS with a certificate from a test CA.
    pub tls: bool,
    /// Extra environment for `ant-server serve`.
    pub server_env: Vec<(String, String)>,
}

fn spawn_server(env: &[(String, String)], dir: &Path) -> anyhow::Result<(TestProcess, String)> {
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestProcess::spawn(&workspace_bin("ant-server"), &["serve"], &env_refs, &dir.join("server.log"))?;
    let line = server.wait_for_stdout_line("ant-server listening on ", Duration::from_secs(30))?;
    let listening = line.trim_start_matches("ant-server listening on ").trim().to_owned();
    Ok((server, listening))
}

/// A running server with its fake provider, and a directory for client homes.
#[derive(Debug)]
pub struct Stack {
    pub fake: FakeLlm,
    pub server: TestProcess,
    server_env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    pub dir: tempfile::TempDir,
    pub ca: Option<TestCa>,
    pub http: reqwest::Client,
    db_url: String,
}

impl Stack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let fake = FakeLlm::start(options.fake).await?;
        let ca = if options.tls { Some(TestCa::create(dir.path())?) } else { None };
        let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("server.db").display());
        let upstream = fake.base_url();
        let mut env: Vec<(String, String)> = vec![
            ("ANIATE_DATABASE_URL".into(), db_url.clone()),
            ("ANIATE_DATA_DIR".into(), dir.path().join("data").display().to_string()),
            ("ANIATE_BIND".into(), "127.0.0.1:0".into()),
            ("ANIATE_UPSTREAM_URL".into(), upstream),
            ("ANIATE_UPSTREAM_API_KEY".into(), "stack-key".into()),
            ("ANIATE_LOG".into(), "debug".into()),
        ];
        if let Some(ca) = &ca {
            env.push(("ANIATE_TLS_CERT".into(), ca.server_cert.display().to_string()));
            env.push(("ANIATE_TLS_KEY".into(), ca.server_key.display().to_string()));
        }
        env.extend(options.server_env);
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server =
            TestProcess::spawn(&workspace_bin("ant-server"), &["serve"], &env_refs, &dir.path().join("server.log"))?;
        let line = server.wait_for_stdout_line("ant-server listening on ", Duration::from_secs(30))?;
        let listening = line.trim_start_matches("ant-server listening on ").trim();
        // Certificates name localhost; clients must use that name over HTTPS.
        let url = if ca.is_some() {
            listening.replace("https://127.0.0.1", "https://localhost")
        } else {
            listening.to_owned()
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = &ca {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes())?);
        }
        Ok(Stack { fake, server, server_env: env, url, dir, ca, http: http.build()?, db_url })
    }

    /// Stops the server (SIGKILL, as a crash) and starts it again on the same address, with the
    /// same database.
    pub fn restart_server(&mut self) -> anyhow::Result<()> {
        self.server.kill();
        let port = self.url.rsplit(':').next().context("a port in the URL")?.trim_end_matches('/').to_owned();
        let mut env = self.server_env.clone();
        for (key, value) in &mut env {
            if key == "ANIATE_BIND" {
                *value = format!("127.0.0.1:{port}");
            }
        }
        let (server, _) = spawn_server(&env, self.dir.path())?;
        self.server = server;
        Ok(())
    }

    /// A fresh, empty `ANIATE_HOME` inside the stack's directory. Kept short: Unix socket
    /// paths are limited to about 100 bytes.
    pub fn new_home(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).expect("create home");
        home
    }

    /// The environment a client (`ant`, `aniated`, `ant-lsp`) needs for `home`.
    pub fn client_env(&self, home: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("ANIATE_HOME".to_owned(), home.display().to_string()),
            ("ANIATE_SERVER".to_owned(), self.url.clone()),
            ("ANIATE_LOG".to_owned(), "debug".to_owned()),
        ];
        if let Some(ca) = &self.ca {
            env.push(("ANIATE_CA_CERT".to_owned(), ca.ca_cert.display().to_string()));
        }
        env
    }

    /// The server's database, for `ant-server admin` run by a test or a document's example.
    pub fn db_url(&self) -> &str {
        &self.db_url
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Creates a user and returns their token.
    pub async fn signup(&self, email: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/auth/signup", self.url))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "signup answered {}", response.status());
        let body: Value = response.json().await?;
        body["token"].as_str().map(str::to_owned).context("no token in the signup answer")
    }

    /// Runs `ant-server admin ARGS` against the stack's database, with `stdin` as its input;
    /// fails unless it succeeds.
    pub fn admin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let output = run_admin(&workspace_bin("ant-server"), &self.db_url, args, stdin)?;
        anyhow::ensure!(output.status.success(), "admin {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates an admin through the admin CLI and returns their token.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let email = "admin@stack.test";
        self.admin(&["create-user", "--email", email, "--admin", "--password-stdin"], &format!("{PASSWORD}\n"))?;
        let response = self
            .http
            .post(format!("{}/auth/login", self.url))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        let body: Value = response.json().await?;
        body["token"].as_str().map(str::to_owned).context("no token in the login answer")
    }

    /// Pushes a tool as an admin; returns the answer's JSON.
    pub async fn push_tool(&self, admin_token: &str, tool: Value) -> anyhow::Result<Value> {
        let response =
            self.http.post(format!("{}/admin/tools", self.url)).bearer_auth(admin_token).json(&tool).send().await?;
        anyhow::ensure!(response.status().is_success(), "push answered {}", response.status());
        Ok(response.json().await?)
    }

    pub async fn deactivate_tool(&self, admin_token: &str, slug: &str) -> anyhow::Result<()> {
        let response =
            self.http.delete(format!("{}/admin/tools/{slug}", self.url)).bearer_auth(admin_token).send().await?;
        anyhow::ensure!(response.status() == 204, "deactivate answered {}", response.status());
        Ok(())
    }
}
