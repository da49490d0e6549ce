//! `ant`, the Aniate command line: a thin client of the `aniated` daemon.
//!
//! Layout:
//! - [`args`]: the clap command line, including the dynamic `ant SLUG ...` tool runs.
//! - [`render`]: everything printed, as pure functions from data to text: tables, diffs,
//!   findings, SARIF, command proposals, errors, `--json`.
//! - [`files`]: reading a tool's input file and writing `--apply` results atomically.
//! - [`exit`]: exit codes and the mapping from errors to them.
//!
//! **Architecture Invariant:** nothing here knows a tool's prompt; the CLI only ever sees tool
//! metadata and answers.

pub mod app;
pub mod args;
pub mod chat;
pub mod exit;
pub mod files;
pub mod interrupt;
pub mod manpages;
pub mod render;
pub mod service;
