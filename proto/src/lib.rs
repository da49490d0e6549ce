//! The types both sides of Aniate share, and nothing else.
//!
//! Layout:
//! - [`tool`]: public tool metadata ([`tool::ToolMeta`]) and the structured results of each
//!   output kind. The public metadata type has no prompt field, so a system prompt cannot be
//!   serialized to a client by mistake.
//! - [`api`]: HTTP request and response bodies.
//! - [`event`]: the events of a streamed answer (`meta`, `delta`, `done`, `error`).
//! - [`error`]: error codes and the `{"error": {"code", "message"}}` body.
//! - [`sse`]: an incremental Server-Sent Events parser and encoder.
//!
//! **Architecture Invariant:** this crate does no I/O. It is the only crate whose types are
//! serialized onto a wire that another Aniate program reads.

pub mod api;
pub mod error;
pub mod event;
pub mod ipc;
pub mod sse;
pub mod tool;

/// The version of the Aniate programs, shared so that every binary reports the same one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
