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
# the `ant` crate alone (`cargo rustc`): given to every crate (RUSTFLAGS), it would also reach
# the proc-macro crates, which cannot be built static. zig, which links the manylinux2014
# wheels, has no static glibc; the system's C toolchain links this one (glibc's libc.a,
# Debian's libc6-dev). A static program needs no glibc at run time, so the manylinux wheel
# stays installable wherever it was (glibc-floor.sh checks that it holds no dynamic dependency
# at all); it needs Linux 3.2 or later. It must stay position-independent (static-pie), which
# Rust offers on x86_64 but not on aarch64, so only the x86_64 wheel gets it. glibc is
# LGPL-2.1-or-later: the wheel gets a notice saying so (dist-info/licenses/GLIBC-NOTICE.txt).
# docs/release.md has the rest, and the known limit (old container seccomp profiles, clone3).
#
#   bash packaging/pypi/static-ant.sh [--target TRIPLE] [WHEEL...]
#
# --target: the cargo target to build for, as maturin did for the wheels (its target dir is
# reused) [default: none, i.e. target/release]. Prints the static program's path on stdout.
set -euo pipefail
# The wheels' paths as given, made absolute before the cd below.
args=()
for arg in "$@"; do
  case "$arg" in
    *.whl) args+=("$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg")") ;;
    *) args+=("$arg") ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
cd "$(dirname "$0")/../.."
. packaging/pypi/elf.sh

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

# Static: no program interpreter (the dynamic loader) and no shared library needed. And still
# position-independent (ELF type DYN, "static-pie"), so that it is loaded at a random address:
# where the Rust target has no static-pie (aarch64-unknown-linux-gnu, as of Rust 1.95), rustc
# links `+crt-static` as a fixed-address program, which this refuses.
if ! is_static "$ant"; then
  echo "static-ant.sh: $ant is not static:" >&2
  readelf -dW "$ant" | grep '(NEEDED)' >&2 || true
  exit 1
fi
if ! readelf -hW "$ant" | grep -E 'Type:[[:space:]]+DYN' >/dev/null; then
  echo "static-ant.sh: $ant is static but not position-independent (no static-pie for this target); the wheel keeps its dynamically linked ant" >&2
  exit 1
fi
machine=$(readelf -hW "$ant" | sed -n 's/^ *Machine: *//p')

# glibc is LGPL-2.1-or-later: a wheel that carries it linked in says so, and where the sources
# are (glibc's, and Aniate's, from which `ant` can be relinked with another glibc).
glibc_version=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo "glibc")
build_system=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}")
notice="The \`ant\` program in this wheel is statically linked with the GNU C Library ($glibc_version,
the libc.a of ${build_system:-the build machine}), which is free software under the GNU Lesser
General Public License, version 2.1 or later: https://www.gnu.org/licenses/old-licenses/lgpl-2.1.html
glibc's source is at https://ftp.gnu.org/gnu/glibc/ and in that distribution's source package.
Aniate's source, from which \`ant\` can be rebuilt and relinked with another glibc
(packaging/pypi/static-ant.sh), is the aniate sdist on PyPI and https://github.com/aniate/aniate.
The wheel's other programs link glibc dynamically, as the system provides it."

for wheel in "$@"; do
  case "$(basename "$wheel")" in
    *manylinux*) ;;
    *) echo "static-ant.sh: $wheel is not a manylinux wheel" >&2; exit 1 ;;
  esac
  case "$(basename "$wheel"):$machine" in
    *_x86_64.whl:*X86-64* | *_aarch64.whl:AArch64) ;;
    *) echo "static-ant.sh: $wheel is not for this program's machine ($machine)" >&2; exit 1 ;;
  esac
  # Replaces `<name>-<version>.data/scripts/ant` and its RECORD line (hash and size), keeping
  # every other entry as it was (the programs' mode bits too); the new wheel is written beside
  # the old one and renamed over it.
  python3 - "$wheel" "$ant" "$notice" <<'PY'
import base64, hashlib, os, sys, zipfile

wheel, program, notice = sys.argv[1], sys.argv[2], (sys.argv[3] + "\n").encode()


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


data = open(program, "rb").read()
with zipfile.ZipFile(wheel) as old:
    names = old.namelist()
    scripts = [n for n in names if n.endswith(".data/scripts/ant")]
    records = [n for n in names if n.endswith(".dist-info/RECORD")]
    if len(scripts) != 1 or len(records) != 1:
        sys.exit(f"static-ant.sh: {wheel} has {len(scripts)} ant program(s) and {len(records)} RECORD file(s), not one of each")
    script, record = scripts[0], records[0]
    notice_name = record.rsplit("/", 1)[0] + "/licenses/GLIBC-NOTICE.txt"
    lines = old.read(record).decode().splitlines()
    if not any(line.split(",")[0] == script for line in lines):
        sys.exit(f"static-ant.sh: the RECORD of {wheel} does not list {script}")
    replaced = [record_line(script, data) if line.split(",")[0] == script else line for line in lines]
    # The notice's line goes before RECORD's own (`RECORD,,`), which stays last.
    replaced = [line for line in replaced if line.split(",")[0] != notice_name]
    replaced.insert(len(replaced) - 1, record_line(notice_name, notice))
    partial = wheel + ".partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename == script:
                new.writestr(info, data)
            elif info.filename == record:
                # The notice first, so that RECORD is still the last entry.
                notice_info = zipfile.ZipInfo(notice_name, date_time=info.date_time)
                notice_info.external_attr = 0o644 << 16
                new.writestr(notice_info, notice, zipfile.ZIP_DEFLATED)
                new.writestr(info, "\n".join(replaced) + "\n")
            elif info.filename != notice_name:
                new.writestr(info, old.read(info.filename))
os.replace(partial, wheel)
print(f"static-ant.sh: {os.path.basename(wheel)} now holds the static ant ({len(data)} bytes)", file=sys.stderr)
PY
done
echo "$ant"
