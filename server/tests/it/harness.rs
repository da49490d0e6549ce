//! Starts a real `ant-server` on a free loopback port, against the in-process fake LLM and a
//! fresh database (a SQLite file in a temp dir, or a new PostgreSQL database), and talks to it
//! over real HTTP.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aniate_proto::{event::StreamEvent, sse::SseParser};
use aniate_testkit::{FakeLlm, FakeLlmConfig, TestProcess};
use serde_json::{Value, json};
use sqlx::Connection;

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_ant-server");
pub const UPSTREAM_KEY: &str = "test-upstream-key";
pub const ADMIN_EMAIL: &str = "root@example.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A PostgreSQL database made for one test and dropped after it.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs outside any async context we can block on, so use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&sql).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}

/// A service URL for tests from `var`; `None` means skip. Under `CI=true` a missing URL is a
/// failure, not a skip.
fn service_url(var: &str, service: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {var} is not set: {service} tests must run in CI")
        }
        _ => {
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

pub fn redis_url() -> Option<String> {
    service_url("ANIATE_TEST_REDIS_URL", "Redis")
}

pub fn postgres_url() -> Option<String> {
    service_url("ANIATE_TEST_POSTGRES_URL", "PostgreSQL")
}

/// This machine's address on a non-loopback interface, if it has one: the local end of a UDP
/// socket "connected" to an outside address (nothing is sent).
pub fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A key prefix no other test run uses.
pub fn unique_prefix() -> String {
    format!("aniate-test-{}", rand_suffix())
}

#[derive(Default)]
pub struct ServerOptions {
    pub env: Vec<(String, String)>,
    pub fake: FakeLlmConfig,
    /// Start on a database made by the previous release (server/tests/fixtures), not an empty one.
    pub previous_release: bool,
}

impl ServerOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

pub struct Harness {
    pub base: String,
    pub fake: FakeLlm,
    pub http: reqwest::Client,
    pub db_url: String,
    pub dir: tempfile::TempDir,
    server: Option<TestProcess>,
    pg: Option<PgDatabase>,
}

impl Harness {
    /// `None` when the backend is not available here (PostgreSQL outside CI).
    pub async fn start(backend: Backend) -> Option<Harness> {
        Harness::start_with(backend, ServerOptions::default()).await
    }

    pub async fn start_with(backend: Backend, options: ServerOptions) -> Option<Harness> {
        let dir = tempfile::tempdir().expect("temp dir");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let (db_url, pg) = match backend {
            Backend::Sqlite => {
                let path = dir.path().join("it.db");
                if options.previous_release {
                    std::fs::copy(fixtures.join("previous-release.sqlite"), &path).expect("copy the SQLite fixture");
                }
                (format!("sqlite://{}?mode=rwc", path.display()), None)
            }
            Backend::Postgres => {
                let admin_url = postgres_url()?;
                let name = format!("aniate_it_{}", rand_suffix());
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create database");
                let url = replace_database(&admin_url, &name);
                if options.previous_release {
                    let dump =
                        std::fs::read_to_string(fixtures.join("previous-release.postgres.sql")).expect("read the dump");
                    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect to the new database");
                    sqlx::raw_sql(&dump).execute(&mut conn).await.expect("load the PostgreSQL fixture");
                }
                (url, Some(PgDatabase { admin_url, name }))
            }
        };
        let fake = FakeLlm::start(options.fake).await.expect("start fake LLM");
        let mut harness = Harness {
            base: String::new(),
            fake,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            db_url,
            dir,
            server: None,
            pg,
        };
        harness.spawn_server(&options.env);
        Some(harness)
    }

    fn spawn_server(&mut self, extra_env: &[(String, String)]) {
        let extra_env: Vec<(&str, &str)> = extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (server, base) = self.start_server(&self.log_path(), &extra_env);
        self.base = base;
        self.server = Some(server);
    }

    /// Another replica on the same database (and the given extra environment): its process
    /// and base URL.
    pub fn extra_server(&self, name: &str, extra_env: &[(&str, &str)]) -> (TestProcess, String) {
        self.start_server(&self.dir.path().join(format!("{name}.log")), extra_env)
    }

    /// `ant-server serve` on this harness's database, fake and data dir, logging to `log`.
    fn start_server(&self, log: &Path, extra_env: &[(&str, &str)]) -> (TestProcess, String) {
        let upstream = self.fake.base_url();
        let data_dir = self.dir.path().join("data").display().to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("ANIATE_DATABASE_URL", &self.db_url),
            ("ANIATE_DATA_DIR", &data_dir),
            ("ANIATE_BIND", "127.0.0.1:0"),
            ("ANIATE_UPSTREAM_URL", &upstream),
            ("ANIATE_UPSTREAM_API_KEY", UPSTREAM_KEY),
            ("ANIATE_LOG", "debug"),
        ];
        env.extend_from_slice(extra_env);
        let server = TestProcess::spawn(Path::new(SERVER_BIN), &["serve"], &env, log).expect("spawn ant-server");
        let line = server
            .wait_for_stdout_line("ant-server listening on ", Duration::from_secs(30))
            .expect("ant-server did not start");
        let base = line.trim_start_matches("ant-server listening on ").trim().to_owned();
        (server, base)
    }

    pub fn server_mut(&mut self) -> &mut TestProcess {
        self.server.as_mut().expect("server running")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs `ant-server admin ARGS` against this harness's database.
    pub fn admin(&self, args: &[&str], stdin: &str) -> std::process::Output {
        aniate_testkit::stack::run_admin(Path::new(SERVER_BIN), &self.db_url, args, stdin)
            .expect("run ant-server admin")
    }

    pub async fn signup(&self, email: &str) -> String {
        let response = self
            .http
            .post(self.url("/auth/signup"))
            .json(&json!({"email": email, "password": "password-123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "signup {email}");
        response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// Creates the admin through the admin CLI (as an operator would) and logs in.
    pub async fn admin_token(&self) -> String {
        let output = self.admin(
            &["create-user", "--email", ADMIN_EMAIL, "--admin", "--password-stdin"],
            &format!("{ADMIN_PASSWORD}\n"),
        );
        assert!(output.status.success(), "create-user: {}", String::from_utf8_lossy(&output.stderr));
        let response = self
            .http
            .post(self.url("/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    pub async fn push_tool(&self, admin: &str, tool: Value) -> reqwest::Response {
        self.http.post(self.url("/admin/tools")).bearer_auth(admin).json(&tool).send().await.unwrap()
    }

    pub async fn run(&self, token: &str, slug: &str, body: Value, sse: bool) -> reqwest::Response {
        let mut request = self.http.post(self.url(&format!("/tool/{slug}"))).bearer_auth(token).json(&body);
        if sse {
            request = request.header("accept", "text/event-stream");
        }
        request.send().await.unwrap()
    }

    /// Reads the database directly (tests check what is stored, not only what is served).
    pub async fn query_strings(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.db_url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|idx| {
                        row.try_get::<Option<String>, _>(idx)
                            .ok()
                            .flatten()
                            .or_else(|| row.try_get::<Option<i64>, _>(idx).ok().flatten().map(|n| n.to_string()))
                    })
                    .collect()
            })
            .collect()
    }

    /// Polls the usage table until `request_id` has a settled row (not `running`, which holds
    /// a run's token reservation while it is in flight), returning its status.
    pub async fn usage_status(&self, request_id: &str) -> String {
        for _ in 0..200 {
            let rows = self.query_strings(&format!("SELECT status FROM usage WHERE request_id = '{request_id}'")).await;
            if let Some(status) = rows.first().and_then(|row| row[0].clone())
                && status != "running"
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no usage row for {request_id}");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The server holds database connections; stop it before dropping its database.
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
        self.pg.take();
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}_{nanos}", std::process::id())
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Reads a whole SSE response into events.
pub async fn sse_events(response: reqwest::Response) -> Vec<StreamEvent> {
    let bytes = response.bytes().await.unwrap();
    let mut parser = SseParser::default();
    parser
        .push(&bytes)
        .unwrap()
        .iter()
        .map(|event| StreamEvent::from_sse(event).expect("a valid stream event"))
        .collect()
}

/// The concatenated text of the `delta` events.
pub fn delta_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::Delta(delta) => Some(delta.text.as_str()),
            _ => None,
        })
        .collect()
}

/// Asserts an error response: status, JSON body `{"error": {"code", "message"}}`.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status, "status");
    assert!(response.headers().get("x-request-id").is_some(), "x-request-id on errors too");
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    message
}

/// Unix milliseconds, the clock the fake LLM records its requests' ends with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Waits for the fake's first request to end cancelled, and asserts it ended within 100 ms of
/// `left_at`, when the client went away (invariant 3). Returns the fake's requests.
pub async fn assert_cancelled_within_100ms(fake: &FakeLlm, left_at: u64) -> Vec<aniate_testkit::RecordedRequest> {
    let (requests, cancelled) = fake
        .wait_until(Duration::from_secs(2), |requests| {
            requests.first().is_some_and(|r| r.outcome == aniate_testkit::Outcome::Cancelled)
        })
        .await;
    assert!(cancelled, "{requests:?}");
    let ended = requests[0].ended_at_ms.unwrap();
    assert!(
        ended.saturating_sub(left_at) < 100,
        "cancelled {} ms after the client left",
        ended.saturating_sub(left_at)
    );
    requests
}

/// Polls `check` until it holds, and returns how long that took; fails after a second, the
/// longest a change made by another replica or by `ant-server admin` may take to reach a
/// running server (tokens' users and tools are cached: docs/architecture.md, `db::cache`).
pub async fn within_a_second(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    const WITHIN: Duration = Duration::from_secs(1);
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < WITHIN, "{what}: not seen within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Declares each test once, run against SQLite always and PostgreSQL when configured.
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use db_tests;

#[test]
fn database_names_are_replaced() {
    assert_eq!(replace_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
    assert_eq!(replace_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
}
