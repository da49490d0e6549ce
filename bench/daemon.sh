#!/usr/bin/env bash
# Builds ant, aniated, ant-server and aniate-fake-llm in release mode (`ant` static, as in the
# manylinux wheel, and dynamic beside it), runs the warm-path bench (bench/daemon.py), and
# records its results in docs/benchmarks.md.
# Extra arguments go to bench/daemon.py, e.g. `bash bench/daemon.sh --quick`; with `--peers` it first
# installs `llm` and `aichat` (see below) and times them too.
# Part 3 (network namespaces) needs root, iproute2 and openssl, and iptables where the kernel has
# no sch_netem; as root with apt-get, the missing ones are installed first.
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null && command -v tc >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "bench/daemon.sh: installing ${missing[*]} for part 3" >&2
    apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } \
        || echo "bench/daemon.sh: could not install ${missing[*]}; part 3 may be skipped" >&2
fi

# `--peers`: install the peer command lines the bench times next to `ant` (only when asked, and
# into target/bench-peers, not the system): `llm` from PyPI in a virtualenv, `aichat` from
# crates.io (a long build, so at low priority).
peer_args=()
for arg in "$@"; do
    if [[ $arg == --peers ]]; then
        peers=target/bench-peers
        mkdir -p "$peers"
        if [[ ! -x $peers/venv/bin/llm ]]; then
            echo "bench/daemon.sh: installing llm into $peers/venv" >&2
            python3 -m venv "$peers/venv"
            "$peers/venv/bin/pip" install -q llm
        fi
        if [[ ! -x $peers/bin/aichat ]]; then
            echo "bench/daemon.sh: building aichat into $peers (several minutes)" >&2
            nice -n 10 cargo install --quiet --locked --root "$peers" aichat \
                || echo "bench/daemon.sh: could not install aichat; its row is left out" >&2
        fi
        peer_args=(--peers-dir "$peers")
    fi
done

cargo build --release -p ant-server -p aniate -p aniate-testkit --bins
# `ant` as the manylinux wheel ships it: static (packaging/pypi/static-ant.sh). The dynamically
# linked one `cargo build` made is kept beside it, and timed too.
cp target/release/ant target/release/ant-dynamic
bash packaging/pypi/static-ant.sh >/dev/null
python3 bench/daemon.py --bin-dir target/release --dynamic-ant target/release/ant-dynamic --out docs/benchmarks.md \
    --command "bash bench/daemon.sh${*:+ $*}" "${peer_args[@]}" "$@"
