//! Ctrl-C while a request runs: listened for from before the request is sent until it ends.
//!
//! A fresh `tokio::signal::ctrl_c()` per loop turn would miss a Ctrl-C that arrives while the
//! previous turn is still writing output; a signal stream registered once does not.

/// Resolves on each Ctrl-C (SIGINT) delivered after it was made.
#[derive(Debug)]
pub struct Interrupt {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub fn new() -> Interrupt {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
            Interrupt { signal }
        }
        #[cfg(not(unix))]
        Interrupt {}
    }

    /// Waits for the next Ctrl-C.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            signal.recv().await;
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt::new()
    }
}
