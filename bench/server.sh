#!/usr/bin/env bash
# Builds ant-server, aniate-fake-llm and bench-server in release mode, runs the ant-server
# streaming-overhead bench, and records its results in docs/benchmarks.md.
# Extra arguments go to bench-server, e.g. `bash bench/server.sh --quick`.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --release -p ant-server -p aniate-testkit --bins
target/release/bench-server --out docs/benchmarks.md "$@"
