//! The process tests of `ant-lsp`: the real binary over LSP against a real daemon, server and
//! fake LLM, and a real editor (headless Neovim) driving it.
//!
//! The workspace's binaries must be built first (`cargo build --workspace`): the tests run
//! `ant`, `aniated` and `ant-server` from the target directory.

mod client;
mod harness;
mod nvim;
mod procs;
mod protocol;
mod secrets;
