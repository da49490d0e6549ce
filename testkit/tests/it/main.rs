//! Integration tests for aniate-testkit: the fake LLM over real sockets, the binary, and
//! the process helpers.

mod binary;
mod cancel;
mod client;
mod fake_llm;
mod process;
mod tidy;
