#!/usr/bin/env bash
# Proves the glibc floor of manylinux wheels: every program in each wheel must need no
# `GLIBC_` symbol version above FLOOR (objdump -T), or be statically linked (no dynamic
# loader, no shared library). Fails naming each symbol over it.
# Run by test-wheel.sh here and by .github/workflows/release.yml on the manylinux runners.
#
#   bash packaging/pypi/glibc-floor.sh FLOOR WHEEL...     # e.g. 2.17 dist/*.whl
set -euo pipefail
. "$(dirname "$0")/elf.sh"
floor="${1:?usage: glibc-floor.sh FLOOR WHEEL...}"
shift
[ "$#" -gt 0 ] || { echo "glibc-floor.sh: no wheel given"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
for wheel in "$@"; do
  name=$(basename "$wheel")
  unpacked="$work/$name"
  python3 -m zipfile -e "$wheel" "$unpacked"
  binaries=$(find "$unpacked" -path '*.data/scripts/*' -type f)
  if [ -z "$binaries" ]; then
    echo "FAIL: $name holds no program"
    failed=$((failed + 1))
  fi
  for binary in $binaries; do
    program=$(basename "$binary")
    # A static program (no program interpreter, no shared library; static-ant.sh makes `ant`
    # so) needs no glibc at run time at all.
    if is_static "$binary"; then
      echo "ok: $program in $name is statically linked: it needs no glibc at run time"
      passed=$((passed + 1))
      continue
    fi
    # objdump -T prints an undefined symbol's version as `(GLIBC_2.2.5)  getenv`.
    versions=$(objdump -T "$binary" | sed -n 's/.*[( ]GLIBC_\([0-9][0-9.]*\))\{0,1\}[[:space:]]\{1,\}\([^[:space:]]\{1,\}\)$/\1 \2/p')
    newest=$(echo "$versions" | sort -V | tail -n1 | cut -d' ' -f1)
    over=$(echo "$versions" | awk -v floor="$floor" '$1 != "" { split($1, v, "."); split(floor, f, ".");
      if (v[1] + 0 > f[1] + 0 || (v[1] + 0 == f[1] + 0 && v[2] + 0 > f[2] + 0)) print $2 "@GLIBC_" $1 }' | sort -u)
    if [ -n "$over" ]; then
      echo "FAIL: $program in $name needs a glibc newer than $floor: $(echo "$over" | tr '\n' ' ')"
      failed=$((failed + 1))
    elif [ -z "$newest" ]; then
      echo "FAIL: $program in $name has no GLIBC_ symbol versions (objdump -T found none)"
      failed=$((failed + 1))
    else
      echo "ok: $program in $name needs at most GLIBC_$newest (floor $floor)"
      passed=$((passed + 1))
    fi
  done
done
echo "glibc floor: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
