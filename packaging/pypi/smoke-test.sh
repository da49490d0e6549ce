#!/usr/bin/env bash
# The smoke test of a pair of built wheels, run here by test-wheel.sh and on each release
# runner by .github/workflows/release.yml: installs `aniate` and `aniate-server` from DIST into
# a fresh virtualenv, checks that the wheels and every program carry the workspace version, then
# runs them end to end: `ant-server serve` on its embedded SQLite default in front of the fake
# provider, `ant signup`, `ant install what`, `ant what -i ...` through the `aniated` the wheel
# installed, `ant-lsp` answering an LSP `initialize`.
#
#   bash packaging/pypi/smoke-test.sh DIST
#
# FAKE_LLM: the fake provider to start [default: target/debug/aniate-fake-llm, built if missing].
# PYTHON: the interpreter to make the virtualenv with [default: python3].
set -euo pipefail
cd "$(dirname "$0")/../.."
dist="${1:?usage: smoke-test.sh DIST (a directory holding the aniate and aniate-server wheels)}"
dist=$(cd "$dist" && pwd)
python="${PYTHON:-python3}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
work=$(mktemp -d)
pids=()
cleanup() {
  [ -x "${venv_bin:-/nonexistent}/ant${exe:-}" ] && ANIATE_HOME="$work/home" "$venv_bin/ant$exe" daemon stop >/dev/null 2>&1
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
die() { echo "FAIL: $*"; echo "smoke: $passed passed, $((failed + 1)) failed"; exit 1; }

wait_for_line() { # FILE PREFIX -> the rest of the line
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "^$2" "$1" 2>/dev/null); then
      echo "${line#"$2"}" | tr -d '\r'
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

# The wheels: one of each, named with the workspace version.
shopt -s nullglob
client_wheels=("$dist"/aniate-*.whl)
server_wheels=("$dist"/aniate_server-*.whl)
shopt -u nullglob
[ "${#client_wheels[@]}" -eq 1 ] || die "expected one aniate wheel in $dist, found ${#client_wheels[@]}"
[ "${#server_wheels[@]}" -eq 1 ] || die "expected one aniate-server wheel in $dist, found ${#server_wheels[@]}"
for wheel in "${client_wheels[0]}" "${server_wheels[0]}"; do
  name=$(basename "$wheel")
  case "$name" in
    aniate-"$version"-*.whl | aniate_server-"$version"-*.whl) ok "$name carries the workspace version $version" ;;
    *) fail "$name does not carry the workspace version $version" ;;
  esac
done

"$python" -m venv "$work/venv"
venv_bin="$work/venv/bin"
exe=""
if [ -d "$work/venv/Scripts" ]; then
  venv_bin="$work/venv/Scripts"
  exe=".exe"
fi
"$venv_bin/python" -m pip install --quiet --disable-pip-version-check "${client_wheels[0]}" "${server_wheels[0]}"

for program in ant aniated ant-lsp ant-server; do
  path="$venv_bin/$program$exe"
  if [ ! -x "$path" ]; then
    fail "the wheels did not install $program"
    continue
  fi
  out=$("$path" --version | tr -d '\r')
  if [ "$out" = "$program $version" ]; then ok "$program --version -> $out"; else fail "$program --version printed '$out', expected '$program $version'"; fi
done
[ "$failed" -eq 0 ] || die "the programs are not all there"

# The fake provider: its only reply is a sentence no real model would write.
fake="${FAKE_LLM:-target/debug/aniate-fake-llm}"
if [ ! -x "$fake" ] && [ -z "${FAKE_LLM:-}" ]; then
  cargo build --quiet -p aniate-testkit --bin aniate-fake-llm
fi
reply="smoke test reply from the fake provider: closures capture their environment"
"$fake" --bind 127.0.0.1:0 --reply "$reply" >"$work/fake.out" 2>"$work/fake.log" &
pids+=($!)
upstream=$(wait_for_line "$work/fake.out" "aniate-fake-llm listening on ") || die "the fake provider did not start: $(cat "$work/fake.log")"

# The server from the server wheel, on its defaults but for a free port: the SQLite file in its
# data dir under XDG_DATA_HOME.
export XDG_DATA_HOME="$work/xdg"
ANIATE_BIND=127.0.0.1:0 ANIATE_UPSTREAM_URL="$upstream" "$venv_bin/ant-server$exe" serve >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
server=$(wait_for_line "$work/server.out" "ant-server listening on ") || die "ant-server serve did not start: $(tail -n 20 "$work/server.log")"
health=$(curl -fsS "$server/healthz") || die "GET /healthz failed"
if "$python" -c 'import json, sys; h = json.loads(sys.argv[1]); sys.exit(not (h["status"] == "ok" and h["version"] == sys.argv[2]))' "$health" "$version"; then
  ok "ant-server serve answers /healthz with version $version: $health"
else
  fail "/healthz answered $health, expected status ok and version $version"
fi
if [ -f "$XDG_DATA_HOME/aniate-server/aniate.db" ]; then ok "the embedded SQLite default is at \$XDG_DATA_HOME/aniate-server/aniate.db"; else fail "no SQLite database in $XDG_DATA_HOME/aniate-server"; fi

# The client programs against it, with a home of their own.
export ANIATE_HOME="$work/home" ANIATE_SERVER="$server"
unset ANIATE_TOKEN ANIATE_SOCKET ANIATE_DAEMON_EXE
echo "smoke-test-password-1" | "$venv_bin/ant$exe" signup --email smoke@aniate.local --password-stdin >/dev/null || die "ant signup failed"
"$venv_bin/ant$exe" install what >/dev/null || die "ant install what failed"
answer=$("$venv_bin/ant$exe" what -i "what is a closure?" | tr -d '\r') || die "ant what failed"
if [ "$answer" = "$reply" ]; then ok "ant what -i ... printed the provider's answer"; else fail "ant what -i ... printed '$answer', expected '$reply'"; fi

status=$("$venv_bin/ant$exe" --json daemon status) || die "ant daemon status failed"
if "$python" -c 'import json, sys; s = json.loads(sys.argv[1]); sys.exit(not (s["version"] == sys.argv[2] and s["logged_in"] and s["installed_tools"] == 1))' "$status" "$version"; then
  ok "aniated $version served the run (ant daemon status)"
else
  fail "ant daemon status: $status"
fi
daemon_pid=$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["pid"])' "$status")
if [ -e "/proc/$daemon_pid/exe" ]; then
  if [ "$(readlink "/proc/$daemon_pid/exe")" = "$(cd "$venv_bin" && pwd -P)/aniated" ]; then
    ok "the daemon is the wheel's aniated"
  else
    fail "the daemon is $(readlink "/proc/$daemon_pid/exe"), not the wheel's aniated"
  fi
fi

# `--no-daemon`: the wheel's ant runs the aniated next to it as a private daemon (`--stdio`); a Unix
# socket pair carries it, so not on Windows yet.
if [ -z "$exe" ]; then
  answer=$("$venv_bin/ant$exe" --no-daemon what -i "what is a closure?" | tr -d '\r') || die "ant --no-daemon what failed"
  if [ "$answer" = "$reply" ]; then ok "ant --no-daemon what -i ... printed the provider's answer"; else fail "ant --no-daemon what -i ... printed '$answer', expected '$reply'"; fi
fi

# ant links no HTTP client and no TLS (docs/architecture.md): none of their crates' source paths,
# which every linked crate leaves in its panic messages, is in it; aniated, which does the HTTP, has them.
linked() { { grep -a -o -E "/(reqwest|hyper|rustls|ring)-[0-9][^/]*/" "$1" || true; } | sed -E 's|/([a-z]+)-.*|\1|' | sort -u | tr '\n' ' '; }
in_ant=$(linked "$venv_bin/ant$exe")
in_aniated=$(linked "$venv_bin/aniated$exe")
if [ -n "$exe" ]; then
  :  # Windows paths in panic messages use `\`: not checked there.
elif [ -z "$in_ant" ] && [ -n "$in_aniated" ]; then
  ok "ant links no HTTP client or TLS (aniated links: $in_aniated)"
else
  fail "ant links '$in_ant' (expected nothing), aniated '$in_aniated' (expected reqwest, hyper, rustls, ring)"
fi

# ant-lsp over stdio: initialize, shutdown, exit.
if "$python" - "$venv_bin/ant-lsp$exe" "$version" <<'PY'; then ok "ant-lsp answers initialize with its name and version, and shuts down on request"; else fail "ant-lsp did not answer initialize as expected"; fi
import json, subprocess, sys

program, version = sys.argv[1], sys.argv[2]
lsp = subprocess.Popen([program], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

def send(message):
    body = json.dumps(message).encode()
    lsp.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    lsp.stdin.flush()

def receive(wanted_id):
    while True:
        length = None
        while True:
            line = lsp.stdout.readline()
            if not line:
                sys.exit("ant-lsp closed its stdout")
            if line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        message = json.loads(lsp.stdout.read(length))
        if message.get("id") == wanted_id and "method" not in message:
            return message

send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "rootUri": None, "capabilities": {}}})
result = receive(1)["result"]
info = result.get("serverInfo", {})
print("ant-lsp serverInfo:", info)
send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
send({"jsonrpc": "2.0", "id": 2, "method": "shutdown"})
receive(2)
send({"jsonrpc": "2.0", "method": "exit"})
lsp.wait(timeout=10)
sys.exit(not (info.get("name") == "ant-lsp" and info.get("version") == version))
PY

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
