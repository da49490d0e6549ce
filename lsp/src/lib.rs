//! `ant-lsp`: Aniate's tools as code actions in any editor. An LSP server on stdio, built on
//! `tower-lsp-server`, and a client of `aniated` like `ant`: it never talks to the server
//! itself.
//!
//! ```text
//! editor ──LSP/stdio──> ant-lsp ──local socket──> aniated ══> ant-server ──> model
//! ```
//!
//! Layout:
//! - [`server`]: [`server::Backend`], the `LanguageServer`: documents, code actions, runs, and
//!   what each output kind becomes (an edit, diagnostics, a message or a document).
//! - [`text`]: documents with incremental sync and UTF-16 positions.
//! - [`edits`]: a corrected text → the smallest edits (a line diff, trimmed).
//! - [`findings`]: review findings → diagnostics and their quick fixes.
//! - [`actions`]: the tool actions' titles, kinds and run data.
//! - [`tools`]: the installed tools, read from `$ANIATE_HOME/tools` and watched.
//! - [`daemon`]: the connection to `aniated`, made (and the daemon started) on demand.
//! - [`progress`]: work-done progress and its cancellation.
//! - [`settings`]: `reviewOnSave`, `tools`, `maxFileSize`.
//! - [`textout`]: where a `text` answer is shown.
//! - [`cli`]: the command line (`--version`, `--help`).
//!
//! **Architecture Invariant:** listing code actions does no I/O at all: the installed tools
//! are in memory, and only resolving an action or executing its command reaches the daemon.
//!
//! **Architecture Invariant:** this is the only crate that knows LSP.

pub mod actions;
pub mod cli;
pub mod daemon;
pub mod edits;
pub mod findings;
pub mod progress;
pub mod server;
pub mod settings;
pub mod text;
pub mod textout;
pub mod tools;

use aniated::home::Home;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_lsp_server::{LspService, Server};

/// The version of `ant-lsp`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How many requests are handled at once. A tool run holds its request open until the model
/// has answered, so this is well above the number of runs a person starts at once; past it,
/// further messages (even `$/cancelRequest`) would wait.
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Serves LSP on `input`/`output` (stdin/stdout for the binary) until the client exits, with
/// the client files of `home`.
pub async fn serve<I, O>(input: I, output: O, home: Home)
where
    I: AsyncRead + Unpin,
    O: AsyncWrite,
{
    let (service, socket) = LspService::build(|client| server::Backend::new(client, home))
        .custom_method("window/workDoneProgress/cancel", server::Backend::work_done_progress_cancel)
        .finish();
    Server::new(input, output, socket).concurrency_level(MAX_CONCURRENT_REQUESTS).serve(service).await;
}
