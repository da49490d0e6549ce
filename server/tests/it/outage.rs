//! The database goes away and comes back: PostgreSQL reached through a TCP proxy in this test,
//! which can cut every connection and refuse new ones, as a network partition or a database
//! restart would. While it is down requests fail cleanly (503 `unavailable`, never a 500 or a
//! hang) and `/healthz` says not ready; when it is back the same server process recovers on its
//! own. Also: backends killed with `pg_terminate_backend` are replaced without a failed request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::harness::{Backend, Harness, assert_error, postgres_url};

/// A loopback TCP proxy to PostgreSQL that can be switched off (every open connection is cut
/// and new ones are closed at once) and on again.
struct Proxy {
    port: u16,
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(watch::Sender::new(true));
        let task = tokio::spawn({
            let up = Arc::clone(&up);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !*up.borrow() {
                        drop(client);
                        continue;
                    }
                    let mut down = up.subscribe();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&target).await else { return };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = down.wait_for(|up| !*up) => {}
                        }
                    });
                }
            }
        });
        Proxy { port, up, task }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` and the URL with its address replaced by the proxy's.
fn via_proxy(db_url: &str, port: u16) -> (String, String) {
    let rest = db_url.strip_prefix("postgres://").expect("a postgres:// URL");
    let (userinfo, after_at) = rest.split_once('@').expect("user@host in the URL");
    let (host_port, path) = after_at.split_once('/').expect("a database in the URL");
    let target = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    (target, format!("postgres://{userinfo}@127.0.0.1:{port}/{path}"))
}

async fn healthz(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let response = http.get(format!("{base}/healthz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn run(h: &Harness, base: &str, token: &str) -> reqwest::Response {
    h.http
        .post(format!("{base}/tool/what"))
        .bearer_auth(token)
        .json(&json!({"instructions": "hi"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_and_back_fails_cleanly_then_recovers() {
    let Some(h) = Harness::start(Backend::Postgres).await else { return };
    let token = h.signup("outage@example.test").await;
    let (target, _) = via_proxy(&h.db_url, 0);
    let proxy = Proxy::start(target).await;
    let (_, proxied_url) = via_proxy(&h.db_url, proxy.port);
    let (server, base) = h.extra_server("proxied", &[("ANIATE_DATABASE_URL", &proxied_url)]);
    assert_eq!(healthz(&h.http, &base).await.0, 200);
    assert_eq!(run(&h, &base, &token).await.status(), 200);

    proxy.set_up(false);
    let down_since = Instant::now();
    let (status, health) = healthz(&h.http, &base).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "not_ready");
    assert_eq!(health["database"], false);
    let answered_within = down_since.elapsed();
    assert!(answered_within < Duration::from_secs(10), "health check took {answered_within:?}");
    let log = || std::fs::read_to_string(h.dir.path().join("proxied.log")).unwrap();
    // A token seen in the last second may still be served from memory (db::cache); past that,
    // with no poll of the database succeeding, the server serves nothing from memory.
    tokio::time::sleep(Duration::from_millis(1_100).saturating_sub(down_since.elapsed())).await;
    for _ in 0..3 {
        let started = Instant::now();
        let tools = h.http.get(format!("{base}/tools")).bearer_auth(&token).send().await.unwrap();
        let me = h.http.get(format!("{base}/me")).bearer_auth(&token).send().await.unwrap();
        for response in [run(&h, &base, &token).await, tools, me] {
            let url = response.url().clone();
            let status = response.status().as_u16();
            assert_eq!(status, 503, "{url}: {}\n{}", response.text().await.unwrap(), log());
            assert_error(response, 503, "unavailable").await;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "requests hung while the database was down");
    }
    // Requests that fail for want of a database never reach the provider.
    let provider_calls = h.fake.requests().len();

    proxy.set_up(true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthz(&h.http, &base).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready 15 s after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = run(&h, &base, &token).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(h.fake.requests().len(), provider_calls + 1);
    // The same process answered throughout: it was never restarted.
    assert!(std::path::Path::new(&format!("/proc/{}", server.pid())).exists());

    assert!(!log().contains("panicked"), "{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_without_a_failed_request() {
    let Some(h) = Harness::start(Backend::Postgres).await else { return };
    let token = h.signup("terminate@example.test").await;
    for _ in 0..3 {
        assert_eq!(run(&h, &h.base, &token).await.status(), 200);
    }
    let admin_url = postgres_url().unwrap();
    let database = h.db_url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the server held no connection to terminate");
    for n in 0..5 {
        let response = run(&h, &h.base, &token).await;
        assert_eq!(response.status(), 200, "request {n} after the backends died: {}", response.text().await.unwrap());
    }
    assert_eq!(healthz(&h.http, &h.base).await.0, 200);
}
