//! Test helpers for Aniate.
//!
//! Layout:
//! - [`fake_llm`]: `aniate-fake-llm`, a FAKE, offline OpenAI-compatible model server for
//!   tests, benchmarks and the offline demo; its main types are re-exported here.
//! - [`process`]: [`TestProcess`], for integration tests that run the real binaries.
//! - [`stack`]: a running `ant-server` + fake LLM + a client home, for end-to-end tests of
//!   the daemon, the CLI and the LSP adapter; [`tls`]: a test CA and server certificate.
//! - [`bench`]: benchmarks that drive the real binaries, e.g. `bench-server`.
//!
//! The `aniate-fake-llm` binary (`src/bin/aniate-fake-llm.rs`) only parses flags and calls
//! [`fake_llm::run`]; `bench-server` (`src/bin/bench-server.rs`) calls [`bench::server::run`].

pub mod bench;
pub mod fake_llm;
pub mod process;
pub mod stack;
pub mod tls;

pub use fake_llm::{FakeLlm, FakeLlmConfig, FakeLlmState, Fault, Outcome, RecordedMessage, RecordedRequest, Rule};
pub use process::{TestProcess, clear_aniate_env, read_log_tail};
