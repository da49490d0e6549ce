#!/usr/bin/env bash
# Builds `ant` as a static-pie program for Linux with glibc (`-C target-feature=+crt-static`)
# and, given manylinux wheels, puts it in place of the `ant` in each of them.
#
# Why: `ant` is a short-lived command, so what it costs to start is most of what it costs.
# Linked dynamically, each run has the loader map, relocate and initialise libc, libm and
# libgcc_s (or zig's libpthread and libdl stubs) before `main`; static, it starts like
# `/bin/true` (docs/benchmarks.md: `ant --version` and `ant what` side by side, both ways).
# Only `ant` is made so: `aniated` resolves host names (getaddrinfo, NSS), which a static glibc
# cannot do portably, and `ant-lsp` runs for a whole editor session. `ant` needs no NSS: it
# reads HOME, talks to the daemon over a Unix socket and starts `aniated` by path.
#
# Its symbols are stripped, as maturin's are in the wheels' other programs. The flag goes to
# the `ant` crate alone (`cargo rustc`): given to every crate (RUSTFLAGS), it
# would also reach the proc-macro crates, which cannot be built static. zig, which links the
# manylinux2014 wheels, has no static glibc; the system's C toolchain links this one (glibc's
# libc.a, Debian's libc6-dev). A static program needs no glibc at run time, so the manylinux
# wheel stays installable wherever it was (glibc-floor.sh checks that it holds no dynamic
# dependency at all); it needs Linux 3.2 or later.
#
#   bash packaging/pypi/static-ant.sh [--target TRIPLE] [WHEEL...]
#
# --target: the cargo target to build for, as maturin did for the wheels (its target dir is
# reused) [default: none, i.e. target/release]. Prints the static program's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."

target_args=()
out_dir="${CARGO_TARGET_DIR:-target}/release"
if [ "${1:-}" = "--target" ]; then
  target_args=(--target "${2:?--target needs a target triple}")
  out_dir="${CARGO_TARGET_DIR:-target}/$2/release"
  shift 2
fi

[ -f "$(cc -print-file-name=libc.a)" ] || {
  echo "static-ant.sh: glibc's libc.a is missing (Debian and Ubuntu: apt-get install libc6-dev)" >&2
  exit 1
}
cargo rustc --release --locked "${target_args[@]}" -p aniate --bin ant -- -C target-feature=+crt-static -C strip=symbols >&2
ant="$out_dir/ant"

# Static: no program interpreter (the dynamic loader) and no shared library needed.
if readelf -lW "$ant" | grep -q 'Requesting program interpreter' || readelf -dW "$ant" | grep -q '(NEEDED)'; then
  echo "static-ant.sh: $ant is not static:" >&2
  readelf -dW "$ant" | grep '(NEEDED)' >&2 || true
  exit 1
fi

for wheel in "$@"; do
  case "$(basename "$wheel")" in
    *manylinux*) ;;
    *) echo "static-ant.sh: $wheel is not a manylinux wheel" >&2; exit 1 ;;
  esac
  # Replaces `<name>-<version>.data/scripts/ant` and its RECORD line (hash and size), keeping
  # every other entry as it was (the programs' mode bits too); the new wheel is written beside
  # the old one and renamed over it.
  python3 - "$wheel" "$ant" <<'PY'
import base64, hashlib, os, sys, zipfile

wheel, program = sys.argv[1], sys.argv[2]
data = open(program, "rb").read()
digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
with zipfile.ZipFile(wheel) as old:
    names = old.namelist()
    scripts = [n for n in names if n.endswith(".data/scripts/ant")]
    records = [n for n in names if n.endswith(".dist-info/RECORD")]
    if len(scripts) != 1 or len(records) != 1:
        sys.exit(f"static-ant.sh: {wheel} has {len(scripts)} ant program(s) and {len(records)} RECORD file(s), not one of each")
    script, record = scripts[0], records[0]
    lines = old.read(record).decode().splitlines()
    replaced = [f"{script},sha256={digest},{len(data)}" if line.split(",")[0] == script else line for line in lines]
    if replaced == lines:
        sys.exit(f"static-ant.sh: the RECORD of {wheel} does not list {script}")
    partial = wheel + ".partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename == script:
                new.writestr(info, data)
            elif info.filename == record:
                new.writestr(info, "\n".join(replaced) + "\n")
            else:
                new.writestr(info, old.read(info.filename))
os.replace(partial, wheel)
print(f"static-ant.sh: {os.path.basename(wheel)} now holds the static ant ({len(data)} bytes)", file=sys.stderr)
PY
done
echo "$ant"
