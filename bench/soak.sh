#!/usr/bin/env bash
# The long soak: 20,000 streamed runs, 64 at a time, through aniated → ant-server → the fake
# LLM, release build; writes its figures into docs/reliability.md (the part between the soak
# markers). The same test runs in CI with 6,000 runs (daemon/tests/it/soak.rs).
# Knobs: ANIATE_SOAK_RUNS (default 20000), ANIATE_SOAK_CONCURRENCY (default 64).
set -euo pipefail

cd "$(dirname "$0")/.."
export ANIATE_SOAK_RUNS="${ANIATE_SOAK_RUNS:-20000}"
export ANIATE_SOAK_CONCURRENCY="${ANIATE_SOAK_CONCURRENCY:-64}"
export ANIATE_SOAK_REPORT="$PWD/docs/reliability.md"
cargo build --release -p ant-server -p aniate -p aniate-testkit --bins
cargo nextest run --release -p aniated --no-capture -E 'test(soak)'
