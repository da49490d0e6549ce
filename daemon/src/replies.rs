//! [`Replies`]: the replies to one request, whether it runs in this process (`Engine`) or in
//! the daemon (`DaemonClient`), so `ant` renders both the same way.

use std::time::Duration;

use aniate_proto::ipc::{IpcError, IpcErrorCode, Reply};
use tokio::sync::mpsc;

/// The sending side of a [`Replies`].
pub type ReplySender = mpsc::Sender<Reply>;

/// The replies to one request. Dropping it before the final reply cancels the request.
pub struct Replies {
    rx: mpsc::Receiver<Reply>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
    finished: bool,
    /// How long to wait for the next reply before giving up on the other side, and what to
    /// say then.
    silence: Option<(Duration, IpcError)>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl Replies {
    pub fn channel(capacity: usize) -> (ReplySender, Replies) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Replies { rx, on_drop: None, finished: false, silence: None })
    }

    /// Replies that are just `reply`.
    pub fn single(reply: Reply) -> Replies {
        let (tx, replies) = Replies::channel(1);
        // The channel has room for exactly this one reply.
        let _ = tx.try_send(reply);
        replies
    }

    /// Runs `cancel` if these replies are dropped before the final one.
    pub fn on_cancel(mut self, cancel: impl FnOnce() + Send + Sync + 'static) -> Replies {
        self.on_drop = Some(Box::new(cancel));
        self
    }

    /// Gives up when the other side sends nothing for `limit`: the next reply is then `error`,
    /// the request is cancelled, and the replies end.
    pub fn with_silence_limit(mut self, limit: Duration, error: IpcError) -> Replies {
        self.silence = Some((limit, error));
        self
    }

    /// The next reply; `None` after the final one (or if the other side went away, which
    /// [`Replies::next`] reports as an `internal` error first).
    pub async fn next(&mut self) -> Option<Reply> {
        if self.finished {
            return None;
        }
        let received = match &self.silence {
            Some((limit, error)) => match tokio::time::timeout(*limit, self.rx.recv()).await {
                Ok(received) => received,
                Err(_) => {
                    let error = error.clone();
                    self.finished = true;
                    if let Some(cancel) = self.on_drop.take() {
                        cancel();
                    }
                    return Some(Reply::Error(error));
                }
            },
            None => self.rx.recv().await,
        };
        let reply = match received {
            Some(reply) => reply,
            None => Reply::Error(IpcError::new(IpcErrorCode::Internal, "the request ended without an answer")),
        };
        if reply.is_final() {
            self.finished = true;
        }
        Some(reply)
    }

    /// Whether a reply has arrived that [`Replies::next`] would return without waiting: a caller
    /// that prints replies as they come writes out what it has only when nothing more is ready,
    /// one write for replies that arrived together.
    pub fn has_ready(&self) -> bool {
        !self.finished && !self.rx.is_empty()
    }

    /// Waits for the result of a one-shot request.
    pub async fn result<T: serde::de::DeserializeOwned>(mut self) -> Result<T, IpcError> {
        while let Some(reply) = self.next().await {
            match reply {
                Reply::Result(value) => {
                    return serde_json::from_value(value).map_err(|err| {
                        IpcError::new(IpcErrorCode::Internal, format!("unexpected answer from the daemon: {err}"))
                    });
                }
                Reply::Error(error) => return Err(error),
                _ => {}
            }
        }
        Err(IpcError::new(IpcErrorCode::Internal, "the request ended without an answer"))
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        if !self.finished
            && let Some(cancel) = self.on_drop.take()
        {
            cancel();
        }
    }
}
