#!/usr/bin/env bash
# `pip install aniate` and `pipx install aniate-server` on the Linux machines people have: builds
# both wheels for manylinux2014 (glibc 2.17 and later) with maturin and zig from PyPI, makes
# the client wheel's `ant` static (static-ant.sh), proves that no binary in them needs a newer
# glibc, runs them end to end from a fresh virtualenv (smoke-test.sh), then builds both sdists
# and checks that `pip install` of each builds and runs.
# Called by .ci/run; needs python3, objdump, readelf, glibc's libc.a (libc6-dev), curl and PyPI
# (for maturin and ziglang).
#
#   bash packaging/pypi/test-wheel.sh
#
# The wheels are release builds (as published); the sdist builds use the dev profile through
# maturin's PEP 517 build-args, so that they reuse the test build instead of doubling CI time.
# Every cargo step shares CARGO_TARGET_DIR [default: target/] and runs under `nice -n 10`.
set -euo pipefail
cd "$(dirname "$0")/../.."
. packaging/pypi/elf.sh
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
glibc_floor="2.17"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
seconds() { date +%s; }

# The pinned build tools, in the venv .ci/run keeps under target/ci-tools (pip is a no-op when
# they are there already).
tools="$CARGO_TARGET_DIR/ci-tools"
[ -x "$tools/bin/pip" ] || python3 -m venv "$tools"
"$tools/bin/pip" install --quiet --disable-pip-version-check -r packaging/pypi/build-requirements.txt
export PATH="$tools/bin:$PATH"
maturin --version

# 1. The wheels, as the release workflow builds them on Linux.
dist="$work/dist"
start=$(seconds)
nice -n 10 maturin build --release --locked --zig --compatibility manylinux2014 \
  --manifest-path packaging/pypi/Cargo.toml --out "$dist"
client_secs=$(($(seconds) - start))
start=$(seconds)
(cd packaging/pypi-server && nice -n 10 maturin build --release --locked --zig --compatibility manylinux2014 --out "$dist")
server_secs=$(($(seconds) - start))
echo "built the aniate wheel in ${client_secs} s and the aniate-server wheel in ${server_secs} s"

# 1b. The aniate wheel's `ant` made static (static-ant.sh: zig links no static glibc, so the
# system's toolchain does), as the release workflow does; maturin's target dir is reused.
start=$(seconds)
client_wheel=$(ls "$dist"/aniate-"$version"-*manylinux*.whl)
nice -n 10 bash packaging/pypi/static-ant.sh --target "$(rustc -vV | sed -n 's/^host: //p')" "$client_wheel" >/dev/null
echo "made the aniate wheel's ant static in $(($(seconds) - start)) s"
static_check="$work/static-check"
python3 -m zipfile -e "$client_wheel" "$static_check"
static_ant="$static_check/aniate-$version.data/scripts/ant"
if [ -f "$static_ant" ] && is_static "$static_ant"; then
  ok "the aniate wheel's ant is statically linked (no dynamic loader, no shared library)"
else
  fail "the aniate wheel's ant is not statically linked"
fi
if grep -q 'licenses/old-licenses/lgpl-2.1' "$static_check/aniate-$version.dist-info/licenses/GLIBC-NOTICE.txt" 2>/dev/null; then
  ok "the aniate wheel says it carries glibc, under the LGPL (dist-info/licenses/GLIBC-NOTICE.txt)"
else
  fail "the aniate wheel has no GLIBC-NOTICE.txt for the glibc linked into its ant"
fi

# 2. Their tags, and their glibc floor: no binary in them needs a GLIBC_ symbol above 2.17.
for wheel in "$dist"/*.whl; do
  name=$(basename "$wheel")
  case "$name" in
    *manylinux_2_17_x86_64*.whl) ok "$name is tagged manylinux_2_17 (manylinux2014)" ;;
    *) fail "$name is not tagged manylinux_2_17_x86_64" ;;
  esac
done
if bash packaging/pypi/glibc-floor.sh "$glibc_floor" "$dist"/*.whl; then ok "glibc floor $glibc_floor of both wheels"; else fail "glibc floor $glibc_floor of both wheels"; fi

# 3. Both wheels from a fresh virtualenv, end to end.
if bash packaging/pypi/smoke-test.sh "$dist"; then ok "smoke test of both wheels"; else fail "smoke test of both wheels"; fi

# 4. The sdists: `pip install` of each builds it (dev profile) and puts its programs on PATH.
# maturin in pip's isolated build environment is held to the pinned version.
sdists="$work/sdist"
maturin sdist --manifest-path packaging/pypi/Cargo.toml --out "$sdists"
(cd packaging/pypi-server && maturin sdist --out "$sdists")
export PIP_CONSTRAINT="$root/packaging/pypi/build-requirements.txt"
for sdist in "$sdists"/aniate-"$version".tar.gz:"ant aniated ant-lsp" "$sdists"/aniate_server-"$version".tar.gz:"ant-server"; do
  file=${sdist%%:*}
  programs=${sdist#*:}
  name=$(basename "$file")
  if [ ! -f "$file" ]; then
    fail "maturin sdist made no $name"
    continue
  fi
  venv="$work/sdist-venv-$name"
  python3 -m venv "$venv"
  start=$(seconds)
  if ! nice -n 10 "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --config-settings=maturin.build-args=--profile=dev "$file"; then
    fail "pip install $name"
    continue
  fi
  echo "pip install $name built and installed it in $(($(seconds) - start)) s"
  for program in $programs; do
    out=$("$venv/bin/$program" --version 2>&1 || true)
    if [ "$out" = "$program $version" ]; then ok "$program from $name: $out"; else fail "$program from $name printed '$out'"; fi
  done
done
unset PIP_CONSTRAINT

echo "wheel: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
