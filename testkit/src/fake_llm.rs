//! `aniate-fake-llm`: a FAKE, offline stand-in for an OpenAI-compatible LLM provider.
//! It does not run a model; it answers from a script, deterministically, and records
//! every request so tests can check what reached the "provider" and how it ended.
//!
//! Endpoints:
//! - `POST /v1/chat/completions`: OpenAI chat completions, streamed (server-sent events,
//!   `data: [DONE]` at the end, a usage chunk with `stream_options.include_usage`) or not.
//! - `GET /v1/models`: the configured model ids, `owned_by: "aniate-fake-llm (offline fake)"`.
//! - `GET /_fake/requests`, `DELETE /_fake/requests`: the record of chat completions.
//! - `GET /_fake/config`, `PUT /_fake/config`: the live [`FakeLlmConfig`] as JSON.
//!
//! Layout:
//! - `config`: [`FakeLlmConfig`], [`Rule`], [`Fault`], the one serde shape for all inputs.
//! - `record`: [`FakeLlmState`], [`RecordedRequest`] and the guard that records cancels.
//! - `reply`: the deterministic reply, token counts and OpenAI JSON encoding.
//! - `http`: a minimal HTTP/1.1 reader and writer (why not hyper: see there).
//! - `server`: [`run`], routing, streaming, faults, and detecting clients that leave.

mod config;
mod http;
mod record;
mod reply;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{DEFAULT_MODEL, FakeLlmConfig, Fault, Rule};
pub use record::{FakeLlmState, Outcome, RECORD_LIMIT, RecordedMessage, RecordedRequest};
pub use reply::LEAK_DISGUISES;
pub use server::{OWNED_BY, run};

/// A fake LLM provider running on a tokio task, for in-process tests.
///
/// Stops when dropped (connections are aborted at once) or on [`FakeLlm::shutdown`].
/// Must be started inside a tokio runtime.
#[derive(Debug)]
pub struct FakeLlm {
    addr: SocketAddr,
    state: FakeLlmState,
    /// Tells `run` to stop; `None` once used.
    shutdown_tx: Option<oneshot::Sender<()>>,
    /// The task running `run`; aborted on drop so no connection outlives the fake.
    task: Option<JoinHandle<()>>,
}

impl FakeLlm {
    /// Starts a fake on `127.0.0.1` with a free port.
    pub async fn start(config: FakeLlmConfig) -> std::io::Result<FakeLlm> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        FakeLlm::serve(listener, config).await
    }

    /// Starts a fake on an already bound listener.
    pub async fn serve(listener: TcpListener, config: FakeLlmConfig) -> std::io::Result<FakeLlm> {
        let addr = listener.local_addr()?;
        let state = FakeLlmState::new(config);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // An error means the sender was dropped, which also means stop.
            let _ = shutdown_rx.await;
        };
        let task = tokio::spawn(run(listener, state.clone(), shutdown));
        Ok(FakeLlm { addr, state, shutdown_tx: Some(shutdown_tx), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The shared state, e.g. to hand to code that takes a [`FakeLlmState`].
    pub fn state(&self) -> &FakeLlmState {
        &self.state
    }

    pub fn config(&self) -> FakeLlmConfig {
        self.state.config()
    }

    /// Replaces the config; requests already being answered keep the config they started with.
    pub fn set_config(&self, config: FakeLlmConfig) {
        self.state.set_config(config);
    }

    pub fn update_config(&self, f: impl FnOnce(&mut FakeLlmConfig)) {
        self.state.update_config(f);
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.set_fault(fault);
    }

    /// A snapshot of every recorded chat completion, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Waits until `pred` holds for the request list, checking on every change and every
    /// ~2 ms, or the timeout passes; returns the final list and whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[RecordedRequest]) -> bool,
    ) -> (Vec<RecordedRequest>, bool) {
        self.state.wait_until(timeout, pred).await
    }

    /// Stops accepting, drops open connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(shutdown_tx) = self.shutdown_tx.take() {
            let _ = shutdown_tx.send(());
        }
        if let Some(task) = self.task.take() {
            // The task only ends by finishing or by abort; neither is worth reporting.
            let _ = task.await;
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
