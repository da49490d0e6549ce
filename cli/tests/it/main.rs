//! End-to-end tests through the real binaries: `ant` → `aniated` → `ant-server` → the fake LLM,
//! each test on its own temporary home and free ports.

#![cfg(unix)]

mod harness;

mod bad_input;
mod brews;
mod console_browser;
mod daemon;
mod disk;
mod doc_examples;
mod faults;
mod flow;
mod guard;
mod help_docs;
mod kinds;
mod logins;
mod untrusted;
mod versions;
