"""Runs a command on a pseudo-terminal for the CLI tests.

The test drives it through this script's stdin, one command per line:
`send HEX` writes bytes to the terminal (as typed keys), `close` ends the session.
Everything the program shows is copied to this script's stdout; the last line is
`EXIT <code>`.
"""
import os
import pty
import select
import sys
import time

pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])

stdin = sys.stdin.buffer
out = sys.stdout.buffer
pending = b""
open_input = True
while True:
    readers = [fd] + ([stdin] if open_input else [])
    ready, _, _ = select.select(readers, [], [], 0.05)
    if fd in ready:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out.write(data)
        out.flush()
    if open_input and stdin in ready:
        line = stdin.readline()
        if not line or line.strip() == b"close":
            open_input = False
            deadline = time.time() + 10
        elif line.startswith(b"send "):
            os.write(fd, bytes.fromhex(line[5:].strip().decode()))
    if not open_input and time.time() > deadline:
        os.kill(pid, 9)
        break
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
out.write(f"\nEXIT {code}\n".encode())
out.flush()
