//! What `ant` prints: pure functions from data to text, with no I/O beyond a given writer.
//!
//! - [`style`]: whether to colour, and the [`style::Palette`].
//! - [`table`]: aligned tables (`marketplace`, `list`), `daemon status`, one-shot result lines.
//! - [`diff`]: the unified diff of a `code` tool's answer.
//! - [`findings`]: `file:line: severity: message` lines of a `findings` tool.
//! - [`sarif`]: the same findings as SARIF 2.1.0.
//! - [`command`]: a `command` tool's proposal, and the confirmation before running it.
//! - [`message`]: `error:` and `warning:` lines with hints.
//! - [`json`]: `--json` documents and NDJSON lines.
//!
//! Renderers that print text from the server or a model strip control characters from it, so an
//! answer cannot drive the user's terminal; `--json` output carries the raw text.

pub mod account;
pub mod command;
pub mod diff;
pub mod findings;
pub mod json;
pub mod message;
pub mod sarif;
pub mod style;
pub mod table;
