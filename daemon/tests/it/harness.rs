//! Starts `aniated` for a home of a [`Stack`], and a raw NDJSON client for its socket.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aniate_testkit::{TestProcess, stack::Stack};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// `aniated`, as built for the workspace (its binary target lives in packaging/pypi).
pub fn daemon_bin() -> String {
    aniate_testkit::stack::workspace_bin("aniated").display().to_string()
}

pub struct Daemon {
    pub process: TestProcess,
    pub home: PathBuf,
}

impl Daemon {
    pub fn start(stack: &Stack, home: &Path) -> Daemon {
        Daemon::start_with(stack, home, &[])
    }

    /// [`Daemon::start`] with `extra` in its environment.
    pub fn start_with(stack: &Stack, home: &Path, extra: &[(&str, &str)]) -> Daemon {
        let env = stack.client_env(home);
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        let process = TestProcess::spawn(Path::new(&daemon_bin()), &["--foreground"], &env, &home.join("stderr.log"))
            .expect("spawn aniated");
        let socket = home.join("aniated.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "aniated did not listen on its socket: {}",
                read(&home.join("stderr.log"))
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { process, home: home.to_owned() }
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("aniated.sock")
    }

    pub fn log(&self) -> String {
        read(&self.home.join("aniated.log"))
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A hand-rolled client: frames in, frames out, nothing hidden.
pub struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(socket: &Path) -> Raw {
        Raw::over(UnixStream::connect(socket).await.expect("connect to aniated"))
    }

    /// A client of whatever is at the other end of `stream`.
    pub fn over(stream: UnixStream) -> Raw {
        let (read, writer) = stream.into_split();
        Raw { reader: BufReader::new(read), writer }
    }

    /// Connects and exchanges hellos.
    pub async fn greeted(socket: &Path) -> Raw {
        let mut raw = Raw::connect(socket).await;
        raw.greet().await;
        raw
    }

    /// Exchanges hellos; the daemon's hello.
    pub async fn greet(&mut self) -> Value {
        self.send(json!({"hello": {"protocol": 1, "client": "test/0"}})).await;
        let hello = self.recv().await.expect("hello");
        assert_eq!(hello["hello"]["protocol"], 1, "{hello}");
        hello
    }

    pub async fn send(&mut self, frame: Value) {
        let mut line = serde_json::to_vec(&frame).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    pub async fn request(&mut self, id: u64, method: &str, params: Value) {
        let mut request = json!({"id": id, "method": method});
        if !params.is_null() {
            request["params"] = params;
        }
        self.send(json!({"request": request})).await;
    }

    /// The next frame; `None` when the daemon closed the connection (or after 20 s).
    pub async fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => None,
            Ok(Ok(_)) => Some(serde_json::from_str(&line).expect("a JSON frame")),
        }
    }

    /// Reads frames until request `id` has its final reply; returns that request's replies.
    pub async fn replies_of(&mut self, id: u64) -> Vec<Value> {
        let mut replies = Vec::new();
        while let Some(frame) = self.recv().await {
            if frame["reply"]["id"] == id {
                let event = frame["reply"]["event"].as_str().unwrap().to_owned();
                replies.push(frame["reply"].clone());
                if matches!(event.as_str(), "done" | "error" | "result") {
                    return replies;
                }
            }
        }
        panic!("the connection closed before request {id} finished: {replies:?}");
    }

    /// One-shot request: its `result` (or panics with its error).
    pub async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.request(id, method, params).await;
        let replies = self.replies_of(id).await;
        let last = replies.last().unwrap();
        assert_eq!(last["event"], "result", "{method}: {last}");
        last["data"].clone()
    }
}

/// Logs in with a fresh account and installs `tools`.
pub async fn login_and_install(stack: &Stack, raw: &mut Raw, email: &str, tools: &[&str]) {
    let token = stack.signup(email).await.unwrap();
    let me = raw.call(900, "login", json!({"token": token})).await;
    assert_eq!(me["email"], email);
    if !tools.is_empty() {
        let installed = raw.call(901, "install", json!({"slugs": tools})).await;
        assert_eq!(installed["installed"].as_array().unwrap().len(), tools.len());
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
