#!/usr/bin/env bash
# Builds ant-server, aniate-fake-llm and bench-server in release mode, runs the ant-server
# streaming-overhead bench, and records its results in docs/benchmarks.md.
# Extra arguments go to bench-server, e.g. `bash bench/server.sh --quick`.
# With `--peers` it first installs the LiteLLM proxy (`pip install 'litellm[proxy]'`, pinned
# below, into target/bench-peers/litellm-venv, not the system) and, after the main run, runs
# ant-server and the proxy (one worker) side by side in front of the same fake
# (`bench-server --versus-litellm`), recorded in docs/benchmarks.md too. Without `--peers`
# nothing is installed.
set -euo pipefail

cd "$(dirname "$0")/.."

LITELLM_VERSION=1.108.7
args=()
peers=false
for arg in "$@"; do
    if [[ $arg == --peers ]]; then peers=true; else args+=("$arg"); fi
done
litellm=target/bench-peers/litellm-venv/bin/litellm
if $peers && [[ ! -x $litellm ]]; then
    echo "bench/server.sh: installing litellm[proxy]==$LITELLM_VERSION into target/bench-peers/litellm-venv" >&2
    mkdir -p target/bench-peers
    python3 -m venv target/bench-peers/litellm-venv
    target/bench-peers/litellm-venv/bin/pip install -q "litellm[proxy]==$LITELLM_VERSION"
fi

cargo build --release -p ant-server -p aniate-testkit --bins
target/release/bench-server --out docs/benchmarks.md "${args[@]}"
if $peers; then
    # The proxy relays about 15 streams a second on one worker: fewer runs than the main bench.
    target/release/bench-server --versus-litellm "$litellm" --runs 768 --rounds 4 --sequential-runs 64 \
        --warmup-runs 32 --out docs/benchmarks.md
fi
