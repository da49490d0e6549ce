//! Benchmarks of the Aniate binaries, run as real processes against the fake LLM.
//!
//! Layout:
//! - [`server`]: the ant-server streaming-overhead bench (`bench-server`): runs through the
//!   server against runs straight at the fake, interleaved, and its report.
//! - [`fallback`]: what a provider fallback adds to the time to first token (`bench-server
//!   --fallback`): a first provider that answers 500 at once, against the second alone.
//! - [`load`]: the load generator: streamed runs in either mode, timed to the first token
//!   and to the end.
//! - [`stats`]: percentiles and per-mode totals.
//! - [`procfs`]: memory and CPU time of processes, and the CPU model, from `/proc`.
//! - [`report`]: machine description, number formatting, and rewriting one bench's section
//!   of `docs/benchmarks.md`.
//!
//! Benchmarks are not timed tests: they report figures measured side by side in one run,
//! and the binaries (`src/bin/bench-*.rs`) only parse flags, call the bench and print.

pub mod fallback;
pub mod load;
pub mod procfs;
pub mod report;
pub mod server;
pub mod stats;
pub mod versus;
