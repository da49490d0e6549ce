//! The fake's shared state: the live config and the record of every chat completion,
//! which is what tests inspect to see what reached the "provider" and how it ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::config::{FakeLlmConfig, Fault};

/// One chat completion request as the fake received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Sequential from 1 for the life of the fake; clearing the record does not reset it.
    pub id: u64,
    pub model: String,
    pub messages: Vec<RecordedMessage>,
    pub stream: bool,
    /// `stream_options.include_usage` as sent; false when absent.
    pub include_usage: bool,
    /// `max_tokens` as sent; `None` when absent.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The other sampling settings as sent (`temperature`, `top_p`, `stop`, `seed`), by name;
    /// absent ones are left out.
    #[serde(default)]
    pub sampling: std::collections::BTreeMap<String, serde_json::Value>,
    /// The `Authorization` header exactly as received, e.g. `Bearer sk-...`.
    pub authorization: Option<String>,
    /// Unix epoch milliseconds at which the request (head and body) had been read.
    pub received_at_ms: u64,
    pub outcome: Outcome,
    /// Unix epoch milliseconds at which the outcome stopped being `InProgress`.
    pub ended_at_ms: Option<u64>,
    /// Content chunks written to the socket (streaming only; 0 for non-streaming).
    pub chunks_sent: usize,
    /// Which TCP connection the request came on: sequential from 1 in the order the fake
    /// accepted them, so that a test can see a client reuse (or not reuse) a connection.
    #[serde(default)]
    pub connection: u64,
}

/// One message of a recorded request; content arrays are flattened to their text parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub role: String,
    pub content: String,
}

/// How a recorded request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The fake is still answering (or stalling, by design of the fault).
    InProgress,
    /// The whole response was written to the socket.
    Completed,
    /// The client went away (EOF or reset seen, or a write failed) before the response
    /// was complete, or the fake shut down while answering.
    Cancelled,
    /// The configured fault was delivered (error status, disconnect or garbage).
    Faulted,
}

/// How many requests the record keeps: the newest ones. A fake that serves a long bench or the
/// demo for days must not grow without bound; tests that look at more clear the record between
/// batches.
pub const RECORD_LIMIT: usize = 10_000;

/// The state shared by every connection of one fake: cheap to clone, all clones see the
/// same config and record.
#[derive(Clone, Debug, Default)]
pub struct FakeLlmState {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    config: Mutex<FakeLlmConfig>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// The last id handed out; ids start at 1.
    last_id: AtomicU64,
    /// The last connection number handed out; they start at 1.
    last_connection: AtomicU64,
    /// Woken on every change to the record so `wait_until` reacts without waiting a full poll.
    changed: Notify,
}

impl FakeLlmState {
    pub fn new(config: FakeLlmConfig) -> FakeLlmState {
        FakeLlmState { inner: Arc::new(Inner { config: Mutex::new(config), ..Inner::default() }) }
    }

    /// The number of a newly accepted connection ([`RecordedRequest::connection`]).
    pub(crate) fn next_connection(&self) -> u64 {
        self.inner.last_connection.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// A snapshot of the current config; each request takes one at its start.
    pub fn config(&self) -> FakeLlmConfig {
        lock(&self.inner.config).clone()
    }

    pub fn set_config(&self, config: FakeLlmConfig) {
        *lock(&self.inner.config) = config;
    }

    pub fn update_config(&self, f: impl FnOnce(&mut FakeLlmConfig)) {
        f(&mut lock(&self.inner.config));
    }

    pub fn set_fault(&self, fault: Fault) {
        lock(&self.inner.config).fault = fault;
    }

    /// A snapshot of the record, oldest first: at most the newest [`RECORD_LIMIT`] requests.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
        self.inner.changed.notify_waiters();
    }

    /// Waits until `pred` holds for the record, or `timeout` passes; returns the last
    /// snapshot and whether `pred` held. Checks on every change and at least every 2 ms.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[RecordedRequest]) -> bool,
    ) -> (Vec<RecordedRequest>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before taking the snapshot, so a change in between still wakes us.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let requests = self.requests();
            if pred(&requests) {
                return (requests, true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return (requests, false);
            }
            let poll_at = deadline.min(now + Duration::from_millis(2));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(poll_at) => {}
            }
        }
    }

    /// Adds a request to the record as `InProgress`; the guard settles its outcome.
    pub(crate) fn record(&self, mut request: RecordedRequest) -> RecordGuard {
        let id = self.inner.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        request.id = id;
        request.outcome = Outcome::InProgress;
        request.ended_at_ms = None;
        request.chunks_sent = 0;
        let mut requests = lock(&self.inner.requests);
        if requests.len() >= RECORD_LIMIT {
            // Drop the oldest tenth at once, so that trimming costs O(1) per request on average.
            requests.drain(..RECORD_LIMIT / 10);
        }
        requests.push(request);
        drop(requests);
        self.inner.changed.notify_waiters();
        RecordGuard { state: self.clone(), id, settled: false }
    }

    fn modify(&self, id: u64, f: impl FnOnce(&mut RecordedRequest)) {
        let mut requests = lock(&self.inner.requests);
        // Newest last, and the request being answered is almost always among the newest.
        if let Some(request) = requests.iter_mut().rev().find(|request| request.id == id) {
            f(request);
        }
        drop(requests);
        self.inner.changed.notify_waiters();
    }
}

/// Settles one recorded request. Dropping it unsettled marks the request `Cancelled`:
/// that is how a connection task that is dropped because the client left (or because a
/// write failed, or the fake shut down) gets recorded, at the moment it happens.
#[derive(Debug)]
pub(crate) struct RecordGuard {
    state: FakeLlmState,
    id: u64,
    settled: bool,
}

impl RecordGuard {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn set_chunks_sent(&self, chunks_sent: usize) {
        self.state.modify(self.id, |request| request.chunks_sent = chunks_sent);
    }

    pub(crate) fn settle(mut self, outcome: Outcome) {
        self.settle_inner(outcome);
    }

    fn settle_inner(&mut self, outcome: Outcome) {
        if self.settled {
            return;
        }
        self.settled = true;
        let ended_at_ms = now_ms();
        self.state.modify(self.id, |request| {
            request.outcome = outcome;
            request.ended_at_ms = Some(ended_at_ms);
        });
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        self.settle_inner(Outcome::Cancelled);
    }
}

/// Unix epoch milliseconds; 0 if the clock is before 1970, which only a broken clock does.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Locks ignoring poisoning: the data is plain values that a panicking test thread cannot
/// leave half-updated in a way that matters, and the fake must keep answering.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RecordedRequest {
        RecordedRequest {
            id: 0,
            model: "m".to_owned(),
            messages: Vec::new(),
            stream: true,
            include_usage: false,
            max_tokens: None,
            sampling: Default::default(),
            authorization: None,
            received_at_ms: 0,
            outcome: Outcome::InProgress,
            ended_at_ms: None,
            chunks_sent: 0,
            connection: 1,
        }
    }

    #[test]
    fn the_record_keeps_only_the_newest_requests() {
        let state = FakeLlmState::default();
        let total = RECORD_LIMIT as u64 * 3 + 7;
        for _ in 0..total {
            state.record(request()).settle(Outcome::Completed);
        }
        let kept = state.requests();
        assert!(kept.len() <= RECORD_LIMIT && kept.len() >= RECORD_LIMIT * 9 / 10, "{}", kept.len());
        assert_eq!(kept.last().unwrap().id, total, "the newest is kept");
        assert!(kept.windows(2).all(|pair| pair[1].id == pair[0].id + 1), "a contiguous tail");
        assert!(kept.iter().all(|request| request.outcome == Outcome::Completed));
    }
}
