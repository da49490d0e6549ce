//! Integration tests: the real `ant-server` binary over real HTTP, on SQLite and PostgreSQL,
//! against the fake LLM.

mod harness;

mod accounts;
mod brews;
mod console;
mod files;
mod guard;
mod hostile;
mod hot_path;
mod limits;
mod openai;
mod ops;
mod outage;
mod providers;
mod registry;
mod runs;
mod schema_fuzz;
mod secrets;
mod tls;
mod upgrade;
mod versions;
