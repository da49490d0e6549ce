# ELF checks shared by the packaging scripts (static-ant.sh, glibc-floor.sh, test-wheel.sh),
# which source this file. Needs readelf (binutils).

# Whether PROGRAM is statically linked: no program interpreter (the dynamic loader) and no
# shared library it needs. (grep reads readelf's whole output rather than stopping at the first
# match, so that readelf is never cut off by SIGPIPE, which pipefail would count as a failure.)
is_static() {
  ! readelf -lW "$1" | grep 'Requesting program interpreter' >/dev/null \
    && ! readelf -dW "$1" | grep '(NEEDED)' >/dev/null
}
