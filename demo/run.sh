#!/usr/bin/env bash
# Aniate in one command, from a fresh clone: builds the programs, starts ant-server on SQLite,
# creates a local user, logs in, installs `fix` and runs it on a buggy file.
#
#   bash demo/run.sh          # the demo; leaves the server running so you can try more
#   bash demo/run.sh stop     # stops what the demo started
#
# The model is the OFFLINE DEMO MODEL (aniate-fake-llm, scripted answers, no network) unless
# ANIATE_UPSTREAM_API_KEY is set, in which case the real provider answers (Groq by default;
# ANIATE_UPSTREAM_URL picks another OpenAI-compatible one).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="$PWD/.demo"
BIN="$PWD/target/debug"

stop() {
  if [ -d "$STATE" ]; then
    ANIATE_HOME="$STATE/home" "$BIN/ant" daemon stop >/dev/null 2>&1 || true
    for pid_file in "$STATE"/*.pid; do
      [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null || true
    done
    rm -rf "$STATE"
    echo "demo stopped"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop
  exit 0
fi

wait_for_line() { # FILE PREFIX -> the rest of the line
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "^$2" "$1" 2>/dev/null); then
      echo "${line#"$2"}"
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

echo "==> building (first time: a few minutes)"
cargo build --quiet -p ant-server -p aniate -p aniate-testkit --bins

stop >/dev/null
mkdir -p "$STATE"

if [ -n "${ANIATE_UPSTREAM_API_KEY:-}" ]; then
  UPSTREAM="${ANIATE_UPSTREAM_URL:-https://api.groq.com/openai/v1}"
  echo "==> model: the real provider at $UPSTREAM"
else
  "$BIN/aniate-fake-llm" --bind 127.0.0.1:0 --script demo/fake-replies.toml >"$STATE/fake.out" 2>"$STATE/fake.log" &
  echo $! >"$STATE/fake.pid"
  UPSTREAM=$(wait_for_line "$STATE/fake.out" "aniate-fake-llm listening on ")
  echo "==> model: the OFFLINE DEMO MODEL (scripted answers; set ANIATE_UPSTREAM_API_KEY for a real one)"
fi

ANIATE_DATA_DIR="$STATE/server" ANIATE_BIND=127.0.0.1:0 ANIATE_UPSTREAM_URL="$UPSTREAM" \
  "$BIN/ant-server" serve >"$STATE/server.out" 2>"$STATE/server.log" &
echo $! >"$STATE/server.pid"
SERVER=$(wait_for_line "$STATE/server.out" "ant-server listening on ")
echo "==> ant-server on $SERVER (SQLite in .demo/server)"

# An admin for the web console (tools, history, rollback).
echo "demo-admin-password-1" | ANIATE_DATA_DIR="$STATE/server" \
  "$BIN/ant-server" admin create-user --email admin@aniate.local --admin --password-stdin >/dev/null

export ANIATE_HOME="$STATE/home" ANIATE_SERVER="$SERVER"
echo "demo-password-1" | "$BIN/ant" signup --email demo@aniate.local --password-stdin
"$BIN/ant" install fix review what
cp demo/buggy.py "$STATE/buggy.py"
echo
echo "==> ant fix buggy.py"
(cd "$STATE" && "$BIN/ant" fix buggy.py --color always) || true

cat <<NEXT

==> Try next (the server keeps running; \`bash demo/run.sh stop\` ends it):

  export ANIATE_HOME=$ANIATE_HOME ANIATE_SERVER=$SERVER PATH=$BIN:\$PATH
  cd $STATE
  ant fix buggy.py --apply          # write the fix (buggy.py.orig keeps the original)
  cp ../demo/buggy.py review-me.py && ant review review-me.py   # findings; --format sarif for code-scanning tools
  ant what -i "what is a closure?"
  ant marketplace
  ant daemon status

==> The web console: $SERVER/console
  sign in as admin@aniate.local / demo-admin-password-1 to push, diff and roll back tools,
  or as demo@aniate.local / demo-password-1 to see a user's usage and tokens
NEXT
