//! Integration tests of `aniated` through its socket, speaking the documented NDJSON protocol
//! with a plain Unix socket client, against a real `ant-server` and the fake LLM.

#![cfg(unix)]

mod harness;
mod lifecycle;
mod protocol;
mod soak;
