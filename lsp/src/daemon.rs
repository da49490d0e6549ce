//! The connection to `aniated`, made on first need (starting the daemon if it is not running,
//! like `ant` does) and made again if the daemon went away since.
//!
//! **Architecture Invariant:** `ant-lsp` never talks to the server itself; every tool run is a
//! `run_tool` request to the daemon.

use aniate_proto::ipc::{IpcError, Request, RunToolParams};
use aniated::{
    client::{ClientOptions, DaemonClient},
    home::Home,
    replies::Replies,
};

/// A lazily made, shared connection to the daemon.
#[derive(Debug)]
pub struct Daemon {
    home: Home,
    options: ClientOptions,
    /// Behind an async mutex: connecting may start the daemon and take a while, and two runs
    /// that need a connection at once must not start two daemons.
    connection: tokio::sync::Mutex<Option<DaemonClient>>,
}

impl Daemon {
    pub fn new(home: Home) -> Daemon {
        Daemon {
            home,
            options: ClientOptions::new(format!("ant-lsp/{}", crate::VERSION)),
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The current connection, or a new one.
    pub async fn client(&self) -> Result<DaemonClient, IpcError> {
        let mut connection = self.connection.lock().await;
        if let Some(client) = connection.as_ref() {
            return Ok(client.clone());
        }
        let client = DaemonClient::connect(&self.home, &self.options).await.map_err(|err| err.into_ipc())?;
        tracing::info!(daemon = %client.hello().daemon, pid = client.hello().pid, "connected to aniated");
        *connection = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection, so the next request makes a new one.
    pub async fn forget(&self) {
        self.connection.lock().await.take();
    }

    /// Starts a tool run. A connection that turns out to be dead (the daemon was stopped or
    /// restarted since) is replaced once.
    pub async fn run_tool(&self, params: RunToolParams) -> Result<Replies, IpcError> {
        let client = self.client().await?;
        match client.request(Request::RunTool(params.clone())).await {
            Ok(replies) => Ok(replies),
            Err(err) => {
                tracing::info!(cause = %err, "the daemon connection is gone; connecting again");
                self.forget().await;
                let client = self.client().await?;
                client.request(Request::RunTool(params)).await.map_err(|err| err.into_ipc())
            }
        }
    }
}
