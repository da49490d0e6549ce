#!/usr/bin/env bash
# Builds the `aniate` wheel with maturin for this machine (not manylinux2014: that is
# test-wheel.sh), installs it into a fresh virtualenv, and runs the three programs it must put on
# PATH. Called by .ci/run until test-wheel.sh has run end to end; needs python3 and PyPI.
#
#   bash packaging/pypi/test-wheel.sh            # dev profile (fast, reuses the test build)
#   PROFILE=release bash packaging/pypi/test-wheel.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-dev}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/build"
"$work/build/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.5,<2"
"$work/build/bin/maturin" build --profile "$profile" --manifest-path packaging/pypi/Cargo.toml \
  --compatibility linux --skip-auditwheel --out "$work/dist"

python3 -m venv "$work/user"
"$work/user/bin/pip" install --quiet --disable-pip-version-check "$work"/dist/aniate-*.whl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
failed=0
for program in ant aniated ant-lsp; do
  path="$work/user/bin/$program"
  if [ ! -x "$path" ]; then
    echo "FAIL: the wheel did not install $program"
    failed=$((failed + 1))
    continue
  fi
  out=$("$path" --version)
  if [ "$out" = "$program $version" ]; then
    echo "ok: $program --version -> $out"
  else
    echo "FAIL: $program --version printed '$out', expected '$program $version'"
    failed=$((failed + 1))
  fi
done
echo "wheel: $((3 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
