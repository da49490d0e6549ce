//! Work-done progress for a tool run: `begin` when it starts, `report`s with what has been
//! received so far (throttled), `end` when it ends, however it ends, and a way for the user
//! to cancel it (`window/workDoneProgress/cancel`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::oneshot;
use tower_lsp_server::{
    Client,
    lsp_types::{
        NumberOrString, ProgressParams, ProgressParamsValue, ProgressToken, WorkDoneProgress, WorkDoneProgressBegin,
        WorkDoneProgressCreateParams, WorkDoneProgressEnd, WorkDoneProgressReport, notification::Progress,
        request::WorkDoneProgressCreate,
    },
};

/// Reports closer together than this are skipped (the first one always goes).
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// How long to wait for the client to accept a progress token.
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// The cancel switches of running progresses, by token.
#[derive(Debug, Default, Clone)]
pub struct Cancels {
    switches: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    next_token: Arc<AtomicU64>,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.switches.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cancels the run whose progress has `token`; false if there is none.
    pub fn cancel(&self, token: &ProgressToken) -> bool {
        match self.lock().remove(&token_key(token)) {
            Some(switch) => switch.send(()).is_ok(),
            None => false,
        }
    }

    fn new_token(&self) -> ProgressToken {
        NumberOrString::String(format!("aniate/{}", self.next_token.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

fn token_key(token: &ProgressToken) -> String {
    match token {
        NumberOrString::Number(n) => format!("n:{n}"),
        NumberOrString::String(s) => format!("s:{s}"),
    }
}

/// The progress of one run; sends `end` when dropped if nobody ended it (a run whose request
/// was cancelled is dropped mid-way).
#[derive(Debug)]
pub struct RunProgress {
    client: Client,
    token: Option<ProgressToken>,
    cancels: Cancels,
    last_report: Option<Instant>,
    ended: bool,
}

impl RunProgress {
    /// Starts a progress: with `token` if the client gave one, else with one we create if the
    /// client supports `window/workDoneProgress`, else none (the run still works, silently).
    /// Also returns what resolves when the user cancels it.
    pub async fn begin(
        client: &Client,
        cancels: &Cancels,
        token: Option<ProgressToken>,
        client_supports_progress: bool,
        title: String,
        message: String,
    ) -> (RunProgress, oneshot::Receiver<()>) {
        let token = match token {
            Some(token) => Some(token),
            None if client_supports_progress => {
                let token = cancels.new_token();
                let create = client
                    .send_request::<WorkDoneProgressCreate>(WorkDoneProgressCreateParams { token: token.clone() });
                // A client that does not answer must not hold the run up.
                match tokio::time::timeout(CREATE_TIMEOUT, create).await {
                    Ok(Ok(())) => Some(token),
                    Ok(Err(err)) => {
                        tracing::debug!(cause = %err, "the client refused a progress");
                        None
                    }
                    Err(_) => {
                        tracing::debug!("the client did not answer window/workDoneProgress/create");
                        None
                    }
                }
            }
            None => None,
        };
        let (switch, cancelled) = oneshot::channel();
        if let Some(token) = &token {
            cancels.lock().insert(token_key(token), switch);
            send(
                client,
                token.clone(),
                WorkDoneProgress::Begin(WorkDoneProgressBegin {
                    title,
                    cancellable: Some(true),
                    message: Some(message),
                    percentage: None,
                }),
            )
            .await;
        }
        let progress =
            RunProgress { client: client.clone(), token, cancels: cancels.clone(), last_report: None, ended: false };
        (progress, cancelled)
    }

    /// Reports `message`, unless the last report was very recent.
    pub async fn report(&mut self, message: impl FnOnce() -> String) {
        let Some(token) = self.token.clone() else { return };
        let now = Instant::now();
        if self.last_report.is_some_and(|last| now.duration_since(last) < REPORT_INTERVAL) {
            return;
        }
        self.last_report = Some(now);
        let report = WorkDoneProgressReport { cancellable: Some(true), message: Some(message()), percentage: None };
        send(&self.client, token, WorkDoneProgress::Report(report)).await;
    }

    pub async fn end(mut self, message: impl Into<String>) {
        self.ended = true;
        if let Some(token) = self.token.take() {
            self.cancels.lock().remove(&token_key(&token));
            send(&self.client, token, WorkDoneProgress::End(WorkDoneProgressEnd { message: Some(message.into()) }))
                .await;
        }
    }
}

impl Drop for RunProgress {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else { return };
        self.cancels.lock().remove(&token_key(&token));
        if self.ended {
            return;
        }
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let end = WorkDoneProgressEnd { message: Some("cancelled".to_owned()) };
                send(&client, token, WorkDoneProgress::End(end)).await;
            });
        }
    }
}

async fn send(client: &Client, token: ProgressToken, value: WorkDoneProgress) {
    client.send_notification::<Progress>(ProgressParams { token, value: ProgressParamsValue::WorkDone(value) }).await;
}

/// `1.2 KiB`, `340 B`, `3.4 MiB`.
pub fn format_size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let size = bytes as f64;
    if size < KIB {
        format!("{bytes} B")
    } else if size < KIB * KIB {
        format!("{:.1} KiB", size / KIB)
    } else {
        format!("{:.1} MiB", size / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1229), "1.2 KiB");
        assert_eq!(format_size(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
    }

    #[test]
    fn token_keys_tell_numbers_from_strings() {
        assert_ne!(token_key(&NumberOrString::Number(1)), token_key(&NumberOrString::String("1".into())));
    }
}
