//! Test helpers for Aniate.
//!
//! Layout:
//! - [`fake_llm`]: `aniate-fake-llm`, a FAKE, offline OpenAI-compatible model server for
//!   tests, benchmarks and the offline demo; its main types are re-exported here.
//! - [`process`]: [`TestProcess`], for integration tests that run the real binaries.
//!
//! The `aniate-fake-llm` binary (`src/bin/aniate-fake-llm.rs`) only parses flags and calls
//! [`fake_llm::run`].

pub mod fake_llm;
pub mod process;

pub use fake_llm::{FakeLlm, FakeLlmConfig, FakeLlmState, Fault, Outcome, RecordedMessage, RecordedRequest, Rule};
pub use process::{TestProcess, read_log_tail};
