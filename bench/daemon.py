#!/usr/bin/env python3
"""The warm-path bench: what `ant` and `aniated` add to a tool run, and what they save.

Run it with `bash bench/daemon.sh` (a release build, then this script on `target/release`).
It starts `aniate-fake-llm` and `ant-server serve` in a scratch directory, signs up a user
through `ant` (which starts the daemon), installs `what`, and measures, interleaving the
compared variants round by round so that machine noise hits them alike:

1. `ant what small.py --fresh` through the warm daemon against the same request made directly
   by this script over a kept-alive HTTP connection (and `curl`, and the cached answer).
2. `ant --version` against `/bin/true`; the peak RSS of `ant` (through `/usr/bin/time -f %M`);
   the daemon's VmRSS idle and while it serves 32 concurrent runs.
3. A 50 ms round trip: the client (`ant` and its daemon) and the server (HTTPS) in two network
   namespaces joined by a veth pair with 25 ms each way; time to the first byte of output of
   `ant what -i ... --fresh` through the warm daemon against `ant --no-daemon`.

It prints one Markdown table per part and, with `--out FILE`, rewrites the part of FILE between
`<!-- bench-daemon:start -->` and `<!-- bench-daemon:end -->` (adding the section if missing).
Everything it starts is stopped, and its network namespaces deleted, when it ends, even on error.

Python 3.11, standard library only. Part 3 needs root, `ip`, `openssl`, and either `tc` with
sch_netem or, failing that, `iptables` (the delay is then added by an NFQUEUE handler that is
this same script run with `--internal-nfqueue`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import heapq
import http.client
import json
import math
import tomllib
import os
import platform
import queue
import random
import re
import select
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

MARK_START = "<!-- bench-daemon:start -->"
MARK_END = "<!-- bench-daemon:end -->"
DOC_HEADER = "# Benchmarks\n\nMeasured figures; each section says how to reproduce it.\n"
SECTION_HEADING = "## aniated and ant: the warm path"
# Written only when the section is missing; afterwards the prose is edited by hand and the bench
# rewrites what lies between the markers.
SECTION_TEMPLATE = f"""{SECTION_HEADING}

What `ant` and the `aniated` daemon add to a tool run on one machine, what they cost in start-up time and memory, and what the daemon's warm connection saves when the server is far away.

`bench/daemon.py` (Python 3.11, standard library only) starts `aniate-fake-llm` and `ant-server serve` as separate processes in a scratch directory, makes a client home, signs up with `ant signup` (which starts the daemon) and installs `what`.
Compared variants run interleaved, round by round, each round in an order of its own (shuffled, with the round as the seed).

- **Part 1, a tool run:** `ant what small.py --fresh` through the warm daemon, timed from spawn to exit, against the same request (`POST /tool/what`, plain text) made by the bench itself over a kept-alive `http.client` connection; "ant − direct" is the difference of the p50s.
  The same request with `Accept: text/event-stream` (as the daemon sends it), `curl`, and the cached answer are there for reference.
- **Part 2, start-up and memory:** `ant --version` against `/bin/true`; peak RSS through `/usr/bin/time -f %M`; the daemon's `VmRSS` idle and, sampled every 2 ms, while it serves 32 concurrent one-second streams.
- **Part 3, a far server:** the server (HTTPS, with a CA made by `openssl`) and the fake in one network namespace, `ant` and its daemon in another, joined by a veth pair with 25 ms added each way.
  Time to the first byte on ant's stdout through the warm daemon, against `ant --no-daemon`, which opens its own TCP and TLS connection.

Peak RSS comes from GNU time because the bench's own `wait4` would report at least Python's RSS: Python spawns with `vfork`, and the kernel carries the parent's high-water mark into the child at `exec`.
Where the kernel has no `sch_netem`, as on the machine below, the delay is added on ingress in each namespace by an NFQUEUE handler that is part of the bench.
It delays on ingress because a packet held on the sender's own egress still counts against TCP Small Queues and holds back the next one: a request written in two segments would pay another 25 ms, which netem does not cause.

Run it as root with `bash bench/daemon.sh` (a release build, then the bench; it installs `iproute2`, `iptables` or `openssl` with apt-get if they are missing); `bash bench/daemon.sh --quick` is a smoke run, and `python3 bench/daemon.py --help` lists the flags.
It takes about a minute, and stops everything it started and deletes its namespaces when it ends, also on an error or Ctrl-C.

{MARK_START}
Not run yet: `bash bench/daemon.sh` writes the results here.
{MARK_END}
"""

SMALL_PY = '''"""A small file for `ant what`."""


def greet(name: str) -> str:
    return f"hello, {name}"


if __name__ == "__main__":
    print(greet("world"))
'''
SHORT_REPLY = "It defines greet() and prints a greeting."
# 50 chunks of 8 characters: at 20 ms a chunk a stream lasts about a second, long enough for 32
# concurrent runs to overlap.
LONG_REPLY = ("This file defines a greet function that formats a greeting; run as a script it prints one. " * 5)[:400]
# 11 chunks of 8 characters at 10 ms a chunk: the first byte comes well before the last.
NETNS_REPLY = "A closure is a function that captures variables from the scope it was defined in."
NETNS_QUESTION = "what is a closure?"
PASSWORD = "bench-password-1"
EMAIL = "bench@example.test"

CLONE_NEWNET = 0x40000000


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the Markdown report."""
    print(f"[bench-daemon] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that makes the figures meaningless; the bench stops and says why."""


# ---------------------------------------------------------------------------------------------
# Statistics and formatting


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile: p99 of 200 samples is the 198th smallest."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def ms(value: float) -> str:
    return f"{value:.2f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def verdict(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Processes


def clean_env(**extra: str) -> dict[str, str]:
    """The inherited environment without any ANIATE_* setting, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANIATE_")}
    env.update({"NO_COLOR": "1", "RUST_BACKTRACE": "0"})
    env.update(extra)
    return env


def round_order(names: list[str], round_idx: int) -> list[str]:
    """The order of a round's variants: shuffled, the same for the same round in every run. A
    fixed rotation would keep each variant behind the same one every round, and what ran just
    before (a daemon run, or a `curl` that leaves the daemon idle) moves a variant's time."""
    order = list(names)
    random.Random(round_idx).shuffle(order)
    return order


class Service:
    """A long-running process whose first stdout lines announce where it listens."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path, pattern: str):
        self.name = name
        self.log_path = log_path
        self.stderr_file = open(log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr_file
        )
        self.lines: queue.Queue[str] = queue.Queue()
        # Keeps draining stdout for the process's whole life, so a chatty service never blocks.
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_for(pattern)

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def _wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            found = re.search(pattern, line)
            if found:
                return found.group(1)
        raise BenchError(f"{self.name} did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr_file.close()


class Runner:
    """Runs a command and times it from spawn to exit, and to its first byte on stdout."""

    def __init__(self, scratch: Path):
        self.stderr_file = open(scratch / "run.stderr", "w+b")

    def run(self, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, bytes]:
        """Returns (wall ms, first-byte ms, stdout); raises BenchError unless it exits 0."""
        self.stderr_file.seek(0)
        self.stderr_file.truncate()
        start = time.perf_counter_ns()
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr_file, bufsize=0
        )
        stdout_fd = proc.stdout.fileno()
        first_byte = None
        chunks = []
        while True:
            data = os.read(stdout_fd, 65536)
            if not data:
                break
            if first_byte is None:
                first_byte = time.perf_counter_ns()
            chunks.append(data)
        status = proc.wait()
        end = time.perf_counter_ns()
        proc.stdout.close()
        if status != 0:
            self.stderr_file.seek(0)
            stderr = self.stderr_file.read().decode(errors="replace")
            raise BenchError(f"`{' '.join(cmd)}` exited with {status}: {stderr.strip()[:2000]}")
        first_byte = first_byte if first_byte is not None else end
        return (end - start) / 1e6, (first_byte - start) / 1e6, b"".join(chunks)


def run_checked(cmd: list[str], env: dict[str, str], stdin: bytes | None = None, cwd: Path | None = None) -> str:
    """Runs a set-up command; its failure ends the bench."""
    res = subprocess.run(cmd, env=env, input=stdin, cwd=cwd, capture_output=True)
    if res.returncode != 0:
        raise BenchError(
            f"`{' '.join(cmd)}` exited with {res.returncode}: {res.stderr.decode(errors='replace').strip()[:2000]}"
        )
    return res.stdout.decode(errors="replace")


def max_rss_kib(cmd: list[str], env: dict[str, str], cwd: Path, out_file: Path) -> int:
    """Peak RSS of one run of `cmd`, in KiB, as GNU time reports it (wait4's ru_maxrss).

    Measured through /usr/bin/time because the bench cannot read it itself: Python spawns with
    vfork, and the kernel carries the parent's high-water RSS into the child at exec, so the
    child's ru_maxrss would be at least Python's own. GNU time forks from a 1 MB process.
    """
    res = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(out_file), *cmd],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if res.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` exited with {res.returncode}: {res.stderr.decode(errors='replace')[:2000]}")
    return int(out_file.read_text().strip().splitlines()[-1])


def proc_status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB, from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


class RssSampler:
    """Samples a process's VmRSS every few milliseconds on a thread, keeping the maximum."""

    def __init__(self, pid: int, every_s: float = 0.002):
        self.pid = pid
        self.every_s = every_s
        self.max_rss = 0
        self.n_samples = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.max_rss = max(self.max_rss, proc_status_kib(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return  # the process is gone; the caller notices that on its own
            self.n_samples += 1
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------------
# The client side: an ANIATE_HOME with a daemon


class Client:
    """One ANIATE_HOME: `ant` commands with its env, and the daemon they start."""

    def __init__(self, bin_dir: Path, home: Path, server_url: str, **extra_env: str):
        self.ant = str(bin_dir / "ant")
        self.home = home
        home.mkdir(mode=0o700)
        self.env = clean_env(
            ANIATE_HOME=str(home), ANIATE_SERVER=server_url, ANIATE_DAEMON_EXE=str(bin_dir / "aniated"), **extra_env
        )

    def daemon_pid(self) -> int:
        return int((self.home / "aniated.lock").read_text().split()[0])

    def token(self) -> str:
        """The API token `ant` stored: `credentials` is TOML (`origin` and `token`) since tokens
        were bound to the server that issued them; a bare token is the older form."""
        text = (self.home / "credentials").read_text()
        try:
            return tomllib.loads(text)["token"]
        except (tomllib.TOMLDecodeError, KeyError):
            return text.strip()

    def stop_daemon(self, prefix: list[str] | None = None) -> None:
        """`ant daemon stop`; kills the daemon by its pid if that did not stop it."""
        pid = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = self.daemon_pid()
        subprocess.run([*(prefix or []), self.ant, "daemon", "stop"], env=self.env, capture_output=True, timeout=20)
        if pid is None:
            return
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Part 1: a tool run through the warm daemon against a direct request


def part_tool_run(args: argparse.Namespace, ctx: Context) -> dict:
    runner, client, scratch = ctx.runner, ctx.client, ctx.scratch
    server = urllib.parse.urlsplit(ctx.server_url)
    body = json.dumps({"content": SMALL_PY, "filename": "small.py", "language": "python"}).encode()
    # One user per variant that reaches the server: the `free` plan's monthly token quota would
    # stop a single user after about 700 of these runs.
    direct_token, sse_token, curl_token, oneshot_token, no_daemon_token = (
        signup_http(ctx.server_url, f"bench-{name}@example.test")
        for name in ("direct", "sse", "curl", "oneshot", "nodaemon")
    )
    headers = {"Authorization": f"Bearer {direct_token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection(server.hostname, server.port, timeout=30)
    n_connects = 0

    def direct() -> float:
        nonlocal n_connects
        if connection.sock is None:
            n_connects += 1
        start = time.perf_counter_ns()
        connection.request("POST", "/tool/what", body=body, headers=headers)
        response = connection.getresponse()
        text = response.read()
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if response.status != 200 or SHORT_REPLY.encode() not in text:
            raise BenchError(f"direct request: HTTP {response.status}: {text[:500]!r}")
        return elapsed

    sse_headers = {**headers, "Authorization": f"Bearer {sse_token}", "Accept": "text/event-stream"}

    def direct_sse() -> float:
        """The request the daemon makes: the same, answered as Server-Sent Events."""
        nonlocal n_connects
        if connection.sock is None:
            n_connects += 1
        start = time.perf_counter_ns()
        connection.request("POST", "/tool/what", body=body, headers=sse_headers)
        response = connection.getresponse()
        text = response.read()
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if response.status != 200 or b"event: done" not in text:
            raise BenchError(f"direct SSE request: HTTP {response.status}: {text[:500]!r}")
        return elapsed

    def ant(*extra: str) -> float:
        wall, _, stdout = runner.run([client.ant, "what", "small.py", *extra], client.env, cwd=scratch)
        if SHORT_REPLY.encode() not in stdout:
            raise BenchError(f"ant what printed {stdout[:500]!r}")
        return wall

    no_daemon_env = {**client.env, "ANIATE_TOKEN": no_daemon_token}

    def no_daemon() -> float:
        """`ant --no-daemon`: the same run through a private `aniated --stdio`, over a connection of its own."""
        cmd = [client.ant, "--no-daemon", "what", "small.py", "--fresh"]
        wall, _, stdout = runner.run(cmd, no_daemon_env, cwd=scratch)
        if SHORT_REPLY.encode() not in stdout:
            raise BenchError(f"ant --no-daemon what printed {stdout[:500]!r}")
        return wall

    oneshot_cmd = [str(ctx.bin_dir / "bench-oneshot"), ctx.server_url, "what", "small.py", "--language", "python"]
    oneshot_env = {**client.env, "ANIATE_TOKEN": oneshot_token}

    def oneshot() -> float:
        """The minimal one-shot Rust HTTP client (testkit's `bench-oneshot`): std only, a fresh connection."""
        wall, _, stdout = runner.run(oneshot_cmd, oneshot_env, cwd=scratch)
        if SHORT_REPLY.encode() not in stdout:
            raise BenchError(f"bench-oneshot printed {stdout[:500]!r}")
        return wall

    ipc_cmd = [str(ctx.bin_dir / "bench-ipc"), "what", "small.py", "--language", "python", "--server", ctx.server_url]

    def ipc() -> float:
        """The minimal client of the daemon's socket (testkit's `bench-ipc`): std only, blocking reads."""
        wall, _, stdout = runner.run(ipc_cmd, client.env, cwd=scratch)
        if SHORT_REPLY.encode() not in stdout:
            raise BenchError(f"bench-ipc printed {stdout[:500]!r}")
        return wall

    body_file = scratch / "body.json"
    body_file.write_bytes(body)
    curl_cmd = None
    if shutil.which("curl"):
        curl_cmd = [
            "curl", "-sS", "--fail", "-N", "-X", "POST", f"{ctx.server_url}/tool/what",
            "-H", f"authorization: Bearer {curl_token}", "-H", "content-type: application/json",
            "--data-binary", f"@{body_file}",
        ]  # fmt: skip

    def curl() -> float:
        wall, _, stdout = runner.run(curl_cmd, client.env)
        if SHORT_REPLY.encode() not in stdout:
            raise BenchError(f"curl printed {stdout[:500]!r}")
        return wall

    def dynamic_ant() -> float:
        """The same `ant`, linked dynamically (as `cargo build` links it), through the same daemon."""
        wall, _, stdout = runner.run([str(args.dynamic_ant), "what", "small.py", "--fresh"], client.env, cwd=scratch)
        if SHORT_REPLY.encode() not in stdout:
            raise BenchError(f"the dynamically linked ant printed {stdout[:500]!r}")
        return wall

    variants = {
        "fresh": lambda: ant("--fresh"),
        "oneshot": oneshot,
        "ipc": ipc,
        "no_daemon": no_daemon,
        "direct": direct,
        "direct_sse": direct_sse,
        "cached": lambda: ant(),
    }
    if curl_cmd:
        variants["curl"] = curl
    if args.dynamic_ant:
        variants["fresh_dynamic"] = dynamic_ant
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    log(f"part 1: {args.warmup} warm-up and {args.runs} measured rounds of {', '.join(names)}")
    for round_idx in range(args.warmup + args.runs):
        order = round_order(names, round_idx)
        for name in order:
            elapsed = variants[name]()
            if round_idx >= args.warmup:
                samples[name].append(elapsed)
    connection.close()
    return {"samples": samples, "n_connects": n_connects}


def render_tool_run(res: dict, startup: dict, args: argparse.Namespace) -> str:
    samples = res["samples"]
    fresh, direct = samples["fresh"], samples["direct"]
    added_p50 = p50(fresh) - p50(direct)
    added_p99 = percentile(fresh, 99) - percentile(direct, 99)
    oneshot, no_daemon = samples["oneshot"], samples["no_daemon"]
    over_oneshot = p50(fresh) - p50(oneshot)
    rows = [
        ["`ant what small.py --fresh`, through the warm daemon", ms(p50(fresh)), ms(percentile(fresh, 99)), "", ""],
        [
            "`bench-oneshot`: a minimal one-shot Rust HTTP client (std only, a new process and connection each time)",
            ms(p50(oneshot)), ms(percentile(oneshot, 99)), "", "",
        ],  # fmt: skip
        [
            "**ant − the one-shot client** (difference of the p50s)",
            f"**{ms(over_oneshot)}**", "", "p50 ≤ +0.3 ms", verdict(over_oneshot <= 0.3),
        ],  # fmt: skip
        [
            "`bench-ipc`: a minimal client of the daemon's socket (std only, blocking reads), through the same warm daemon",
            ms(p50(samples["ipc"])), ms(percentile(samples["ipc"], 99)), "", "",
        ],  # fmt: skip
        ["ant − `bench-ipc`: what `ant` adds around the daemon's answer", ms(p50(fresh) - p50(samples["ipc"])), "", "", ""],
        ["`bench-ipc` − the one-shot client: what the daemon's hop costs", ms(p50(samples["ipc"]) - p50(oneshot)), "", "", ""],
        *(
            [[
                "the same `ant what small.py --fresh`, `ant` linked dynamically (as `cargo build` links it)",
                ms(p50(samples["fresh_dynamic"])), ms(percentile(samples["fresh_dynamic"], 99)), "", "",
            ]]
            if "fresh_dynamic" in samples
            else []
        ),  # fmt: skip
        [
            "`ant --no-daemon what small.py --fresh` (a private `aniated --stdio`, its own connection)",
            ms(p50(no_daemon)), ms(percentile(no_daemon, 99)), "faster than through the daemon",
            verdict(p50(fresh) < p50(no_daemon)),
        ],  # fmt: skip
        [
            "`POST /tool/what` by the bench itself, kept-alive connection (the baseline)",
            ms(p50(direct)), ms(percentile(direct, 99)), "", "",
        ],  # fmt: skip
        [
            "ant − direct (difference of the percentiles)",
            ms(added_p50), ms(added_p99), "p50 ≤ 3 ms", verdict(added_p50 <= 3.0),
        ],  # fmt: skip
        [
            "the same direct request with `Accept: text/event-stream`, as the daemon sends it",
            ms(p50(samples["direct_sse"])), ms(percentile(samples["direct_sse"], 99)), "", "",
        ],  # fmt: skip
        ["ant ÷ direct", f"{p50(fresh) / p50(direct):.1f}×", f"{percentile(fresh, 99) / percentile(direct, 99):.1f}×", "", ""],
        [
            "`ant what small.py`, answered from the daemon's cache",
            ms(p50(samples["cached"])), ms(percentile(samples["cached"], 99)), "", "",
        ],  # fmt: skip
    ]
    if "curl" in samples:
        rows.append([
            "`curl` of the same request (a new process and connection each time)",
            ms(p50(samples["curl"])), ms(percentile(samples["curl"], 99)), "", "",
        ])  # fmt: skip
    spawn = p50(startup["version"]["true"])
    version = p50(startup["version"]["ant"])
    connects = "once" if res["n_connects"] == 1 else f"{res['n_connects']} times"
    note = [
        f"{args.runs} runs of each, interleaved round by round (each round in a shuffled order) after {args.warmup} warm-up rounds.",
        "Wall time is from spawn to exit for a process, and from the request to the end of the body for the bench's "
        f"own requests (its connection was opened {connects}).",
        "The variants that go through the daemon (`ant`, the dynamically linked `ant`, `bench-ipc`, the cached run) "
        "run as the daemon's user, on a plan without a monthly token limit; each of the others runs as a user of its "
        "own, so that none reaches the `free` plan's monthly token quota.",
        f"The fake model answers {len(SHORT_REPLY)} characters at once (no delay between chunks).",
        "`bench-oneshot` (`testkit/src/bin/bench-oneshot.rs`) reads the file, sends the same `POST /tool/what` "
        "(plain text) over a new TCP connection with the standard library alone, and prints the answer: "
        "the floor a separate client process can reach against this server.",
        "`bench-ipc` (`testkit/src/bin/bench-ipc.rs`) sends the same request as `ant what small.py --fresh` to the "
        "same daemon, in the same frames, and prints the answer, with the standard library and serde_json alone.",
        f"For scale (part 2): spawning `/bin/true` from the bench takes {ms(spawn)} ms and `ant --version` "
        f"{ms(version)} ms, so of the {ms(added_p50)} ms that `ant` adds, about {ms(spawn)} ms is creating a process, "
        f"{ms(version - spawn)} ms is ant's start-up, and {ms(added_p50 - version)} ms is the rest: "
        "the socket round trips, the daemon's work, and the difference between its request and the bench's.",
    ]
    return "\n".join([
        "### 1. A tool run: `ant` through the warm daemon against a direct request",
        "",
        table(["what", "p50 (ms)", "p99 (ms)", "target", "result"], rows),
        "",
        *note,
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Peers (`--peers`): other one-shot LLM command lines against the same fake model

PEER_QUESTION = "What does this file do?"


def find_peer(name: str, peers_dir: Path | None) -> str | None:
    """A peer's program: where `bench/daemon.sh --peers` installed it, else on PATH."""
    if peers_dir:
        for candidate in (peers_dir / "bin" / name, peers_dir / "venv" / "bin" / name):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which(name)


def peer_version(cmd: list[str], env: dict[str, str]) -> str:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return (res.stdout or res.stderr).strip().splitlines()[0] if res.returncode == 0 else "unknown version"


def part_peers(args: argparse.Namespace, ctx: Context) -> dict:
    """`ant what` through the warm daemon, the one-shot client, `aichat` and `llm`, interleaved.

    The peers send the file and a question straight to the fake model (no ant-server between):
    each is a process that reads its configuration, builds an HTTP client and makes one request.
    """
    runner, client, scratch = ctx.runner, ctx.client, ctx.scratch
    peers_dir = args.peers_dir.resolve() if args.peers_dir else None
    home = scratch / "peers"
    home.mkdir()
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "ant": ([client.ant, "what", "small.py", "--fresh"], client.env),
    }
    versions = {}
    missing = []
    aichat = find_peer("aichat", peers_dir)
    if aichat:
        config_dir = home / "aichat"
        config_dir.mkdir()
        (config_dir / "config.yaml").write_text(
            "model: fake:bench-model\nsave: false\nhighlight: false\nstream: true\n"
            "clients:\n- type: openai-compatible\n  name: fake\n"
            f"  api_base: {ctx.fake_url}\n  api_key: bench\n  models:\n  - name: bench-model\n"
        )
        env = clean_env(AICHAT_CONFIG_DIR=str(config_dir))
        commands["aichat"] = ([aichat, "-f", "small.py", PEER_QUESTION], env)
        versions["aichat"] = peer_version([aichat, "--version"], env)
    else:
        missing.append("aichat")
    llm = find_peer("llm", peers_dir)
    if llm:
        user_dir = home / "llm"
        user_dir.mkdir()
        (user_dir / "extra-openai-models.yaml").write_text(
            f"- model_id: bench-fake\n  model_name: bench-model\n  api_base: {ctx.fake_url}\n"
        )
        env = clean_env(LLM_USER_PATH=str(user_dir), OPENAI_API_KEY="bench")
        commands["llm"] = ([llm, "prompt", "-n", "-m", "bench-fake", f"{PEER_QUESTION}\n\n{SMALL_PY}"], env)
        versions["llm"] = peer_version([llm, "--version"], env)
    else:
        missing.append("llm")
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}
    log(f"peers: 2 warm-up and {args.peer_runs} measured rounds of {', '.join(names)}")
    for round_idx in range(2 + args.peer_runs):
        order = round_order(names, round_idx)
        for name in order:
            cmd, env = commands[name]
            wall, _, stdout = runner.run(cmd, env, cwd=scratch)
            if SHORT_REPLY.encode() not in stdout:
                raise BenchError(f"{name} printed {stdout[:500]!r}")
            if round_idx >= 2:
                samples[name].append(wall)
    return {"samples": samples, "versions": versions, "missing": missing}


def render_peers(res: dict | None, args: argparse.Namespace) -> str:
    heading = "### Peers: other LLM command lines, one-shot, against the same fake model"
    if res is None:
        return "\n".join([heading, "", "Not measured in this run: run `bash bench/daemon.sh --peers` to install and measure them."])
    samples = res["samples"]
    labels = {
        "ant": "`ant what small.py --fresh`, through the warm daemon and ant-server",
        "aichat": f"`aichat -f small.py \"{PEER_QUESTION}\"` ({res['versions'].get('aichat', '')}), straight to the fake",
        "llm": f"`llm prompt -n -m … \"{PEER_QUESTION} …\"` ({res['versions'].get('llm', '')}), straight to the fake",
    }
    rows = [
        [label, ms(p50(samples[name])), ms(percentile(samples[name], 99)), f"{p50(samples[name]) / p50(samples['ant']):.1f}×"]
        for name, label in labels.items()
        if name in samples
    ]
    note = [
        f"{args.peer_runs} runs of each, interleaved round by round after 2 warm-up rounds, in the same run as the tables above.",
        "The peers send the file and a question to the fake model directly, so they skip ant-server and its work; "
        "`ant` goes through the daemon and the server.",
    ]
    if res["missing"]:
        note.append(f"Not installed, so not measured: {', '.join(res['missing'])}.")
    return "\n".join([
        heading,
        "",
        table(["what", "p50 (ms)", "p99 (ms)", "÷ ant"], rows),
        "",
        *note,
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Part 2: start-up, memory


def part_startup_memory(args: argparse.Namespace, ctx: Context, idle_after_start: dict[str, int]) -> dict:
    runner, client, scratch = ctx.runner, ctx.client, ctx.scratch
    res: dict = {"idle_after_start": idle_after_start}

    # The daemon, idle after part 1's hundreds of requests.
    time.sleep(1.0)
    res["idle_after_runs"] = proc_status_kib(client.daemon_pid())

    log(f"part 2: {args.version_runs} rounds of `ant --version` and /bin/true")
    true_exe = shutil.which("true") or "/bin/true"
    commands = {"ant": [client.ant, "--version"], "true": [true_exe]}
    if args.dynamic_ant:
        commands["ant_dynamic"] = [str(args.dynamic_ant), "--version"]
    version: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_idx in range(10 + args.version_runs):
        order = round_order(names, round_idx)
        for name in order:
            wall, _, _ = runner.run(commands[name], client.env)
            if round_idx >= 10:
                version[name].append(wall)
    res["version"] = version

    res["rss"] = None
    if os.access("/usr/bin/time", os.X_OK):
        log(f"part 2: peak RSS over {args.rss_runs} runs each, through /usr/bin/time")
        rss = {"ant_version": [], "ant_what": [], "true": []}
        out_file = scratch / "time.out"
        for _ in range(args.rss_runs):
            rss["true"].append(max_rss_kib([true_exe], client.env, scratch, out_file))
            rss["ant_version"].append(max_rss_kib([client.ant, "--version"], client.env, scratch, out_file))
            rss["ant_what"].append(max_rss_kib([client.ant, "what", "small.py", "--fresh"], client.env, scratch, out_file))
        res["rss"] = rss

    # Concurrent runs: the fake now streams a long reply slowly, so every stream stays open.
    log(f"part 2: {args.concurrency} concurrent `ant what --fresh`, {args.waves} wave(s)")
    put_fake_config(ctx.fake_url, {"chunk_chars": 8, "chunk_delay_ms": 20, "default_reply": LONG_REPLY})
    pid = client.daemon_pid()
    waves = []
    with RssSampler(pid) as sampler:
        for _ in range(args.waves):
            waves.append(concurrent_wave(client, scratch, args.concurrency))
    after = proc_status_kib(pid)
    time.sleep(1.0)
    settled = proc_status_kib(pid)
    put_fake_config(ctx.fake_url, {"chunk_chars": 8, "chunk_delay_ms": 0, "default_reply": SHORT_REPLY})
    res["concurrent"] = {
        "max_rss": sampler.max_rss,
        "n_samples": sampler.n_samples,
        "after": after,
        "settled": settled,
        "waves": waves,
    }
    return res


def wait_for_plan(client: Client, scratch: Path, plan: str = "bench", timeout_s: float = 20.0) -> None:
    """Waits until the server applies the plan `ant-server admin set-plan` gave the user (a running
    server reads plan changes within seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        usage = json.loads(run_checked([client.ant, "usage", "--json"], client.env, cwd=scratch))
        if usage.get("plan") == plan:
            return
        time.sleep(0.5)
    raise BenchError(f"the server did not apply the plan `{plan}` within {timeout_s:.0f} s")


def signup_http(server_url: str, email: str) -> str:
    """Signs a user up with `POST /auth/signup` and returns its token."""
    base = urllib.parse.urlsplit(server_url)
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    body = json.dumps({"email": email, "password": PASSWORD})
    connection.request("POST", "/auth/signup", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read()
    connection.close()
    if response.status // 100 != 2:
        raise BenchError(f"POST /auth/signup: HTTP {response.status}: {text[:500]!r}")
    return json.loads(text)["token"]


def put_fake_config(fake_url: str, config: dict) -> None:
    """Replaces the fake model's configuration (`PUT /_fake/config`)."""
    base = urllib.parse.urlsplit(fake_url)
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
    connection.request("PUT", "/_fake/config", body=json.dumps(config), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read()
    connection.close()
    if response.status // 100 != 2:
        raise BenchError(f"PUT /_fake/config: HTTP {response.status}: {text[:500]!r}")


def concurrent_wave(client: Client, scratch: Path, n_runs: int) -> dict:
    """Starts `n_runs` `ant what --fresh` at once; returns the wave's wall time and overlap."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [client.ant, "what", "small.py", "--fresh"],
            env=client.env, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(n_runs)
    ]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0 or LONG_REPLY.encode() not in stdout:
            raise BenchError(f"concurrent ant what: exit {proc.returncode}: {stderr.decode(errors='replace')[:1000]}")
    # Every run is spawned before the first could end (a stream lasts about a second), so a wave
    # that takes little more than one stream shows that they overlapped.
    return {"wall_s": time.perf_counter() - start}


def render_startup_memory(res: dict, args: argparse.Namespace) -> str:
    version = res["version"]
    ant_v, true_v = version["ant"], version["true"]
    rows = [
        ["`ant --version`, wall time", f"{ms(p50(ant_v))} ms", f"{ms(percentile(ant_v, 99))} ms", "p50 ≤ 2 ms", verdict(p50(ant_v) <= 2.0)],
        ["`/bin/true`, wall time (the cost of spawning any process from the bench)", f"{ms(p50(true_v))} ms", f"{ms(percentile(true_v, 99))} ms", "", ""],
        ["**`ant --version` − `/bin/true`**: ant's own start-up", f"**{ms(p50(ant_v) - p50(true_v))} ms**", "", "p50 ≤ +0.5 ms", verdict(p50(ant_v) - p50(true_v) <= 0.5)],
    ]  # fmt: skip
    if "ant_dynamic" in version:
        dyn_v = version["ant_dynamic"]
        rows.append(["`ant --version`, `ant` linked dynamically (as `cargo build` links it)", f"{ms(p50(dyn_v))} ms", f"{ms(percentile(dyn_v, 99))} ms", "", ""])  # fmt: skip
    rss = res["rss"]
    if rss:
        for key, label, target in [
            ("ant_version", "`ant --version`, peak RSS", 8 * 1024),
            ("ant_what", "`ant what small.py --fresh` through the daemon, peak RSS", 8 * 1024),
            ("true", "`/bin/true`, peak RSS (the floor of the method)", None),
        ]:
            values = rss[key]
            rows.append([
                label, f"{mib(p50(values))} MiB", f"max {mib(max(values))} MiB",
                "≤ 8 MiB" if target else "", verdict(max(values) <= target) if target else "",
            ])  # fmt: skip
    else:
        rows.append(["`ant` peak RSS", "not measured: /usr/bin/time is missing", "", "≤ 8 MiB", "not measured"])
    conc = res["concurrent"]
    idle_start, idle_runs = res["idle_after_start"], res["idle_after_runs"]
    n_runs = args.concurrency
    wave_walls = [wave["wall_s"] for wave in conc["waves"]]
    rows += [
        ["aniated VmRSS, idle just after `ant signup` and `ant install`", f"{mib(idle_start['VmRSS'])} MiB", "", "≤ 15 MiB", verdict(idle_start["VmRSS"] <= 15 * 1024)],
        ["aniated VmRSS, idle 1 s after part 1", f"{mib(idle_runs['VmRSS'])} MiB", f"VmHWM {mib(idle_runs['VmHWM'])} MiB", "≤ 15 MiB", verdict(idle_runs["VmRSS"] <= 15 * 1024)],
        [f"aniated VmRSS, highest sample while serving {n_runs} concurrent runs", f"{mib(conc['max_rss'])} MiB", f"VmHWM after: {mib(conc['after']['VmHWM'])} MiB", "≤ 30 MiB", verdict(max(conc["max_rss"], conc["after"]["VmHWM"]) <= 30 * 1024)],
        ["aniated VmRSS, 1 s after the concurrent runs", f"{mib(conc['settled']['VmRSS'])} MiB", "", "", ""],
    ]  # fmt: skip
    note = [
        f"{args.version_runs} runs of `ant --version` and of `/bin/true`, interleaved.",
        f"Peak RSS: {args.rss_runs} runs each through `/usr/bin/time -f %M` (GNU time's `wait4` `ru_maxrss`), "
        "not the bench's own `wait4`, which would report at least Python's RSS (see above).",
        "The daemon's figures are `VmRSS` and `VmHWM` from `/proc/PID/status` (the pid is in `aniated.lock`); "
        f"during the concurrent runs it was sampled every 2 ms ({conc['n_samples']} samples).",
        f"Concurrent runs: {len(wave_walls)} wave(s) of {n_runs} `ant what small.py --fresh` started at once, "
        f"the fake streaming {len(LONG_REPLY)} characters in 8-character chunks 20 ms apart (about 1 s a stream); "
        f"a wave took {', '.join(f'{wall:.2f}' for wall in wave_walls)} s, so the streams overlapped.",
        "MiB throughout (the targets' MB read as MiB).",
    ]
    return "\n".join([
        "### 2. Start-up and memory",
        "",
        table(["what", "p50 / value", "p99 / other", "target", "result"], rows),
        "",
        *note,
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Part 3: a 50 ms round trip between two network namespaces


def libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def in_netns(name: str):
    """Moves the calling thread into network namespace `name` for the block.

    What `ip netns exec` does, without spawning `ip` around every timed command: processes
    spawned from this thread start in the namespace. Other threads are not affected.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        libc_setns(target)
        try:
            yield
        finally:
            libc_setns(original)
    finally:
        os.close(target)
        os.close(original)


def sh(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def make_certs(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `ip` (SAN IP), with the openssl command line."""
    directory.mkdir()
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, pem, ext = directory / "server.key", directory / "server.csr", directory / "server.pem", directory / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_pem, "-days", "2", "-subj", "/CN=aniate bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={ip}"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial", "-out", pem,
         "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    ext.write_text(
        f"subjectAltName=IP:{ip}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    for step in steps:
        res = sh([str(part) for part in step])
        if res.returncode != 0:
            raise BenchError(f"openssl failed: {res.stderr.strip()[:1000]}")
    return ca_pem, pem, key


class Netns:
    """Two network namespaces, server and client, joined by a veth pair with a delay each way."""

    SERVER_IP = "10.200.0.1"
    CLIENT_IP = "10.200.0.2"

    def __init__(self, stack: contextlib.ExitStack, script: Path, scratch: Path, one_way_ms: int):
        tag = f"{os.getpid()}"
        self.server_ns, self.client_ns = f"antb-s{tag}", f"antb-c{tag}"
        self.server_if, self.client_if = f"antbs{tag}"[:15], f"antbc{tag}"[:15]
        self.delay_method = None
        self._create(stack)
        self._add_delay(stack, script, scratch, one_way_ms)

    def _create(self, stack: contextlib.ExitStack) -> None:
        for ns in (self.server_ns, self.client_ns):
            res = sh(["ip", "netns", "add", ns])
            if res.returncode != 0:
                raise BenchError(f"ip netns add: {res.stderr.strip()}")
            # Deleting a namespace also deletes the veth end inside it.
            stack.callback(sh, ["ip", "netns", "del", ns])
        steps = [
            ["ip", "link", "add", self.server_if, "type", "veth", "peer", "name", self.client_if],
            ["ip", "link", "set", self.server_if, "netns", self.server_ns],
            ["ip", "link", "set", self.client_if, "netns", self.client_ns],
            ["ip", "-n", self.server_ns, "addr", "add", f"{self.SERVER_IP}/24", "dev", self.server_if],
            ["ip", "-n", self.client_ns, "addr", "add", f"{self.CLIENT_IP}/24", "dev", self.client_if],
            ["ip", "-n", self.server_ns, "link", "set", self.server_if, "up"],
            ["ip", "-n", self.client_ns, "link", "set", self.client_if, "up"],
            ["ip", "-n", self.server_ns, "link", "set", "lo", "up"],
            ["ip", "-n", self.client_ns, "link", "set", "lo", "up"],
        ]
        for step in steps:
            res = sh(step)
            if res.returncode != 0:
                raise BenchError(f"`{' '.join(step)}`: {res.stderr.strip()}")

    def _add_delay(self, stack: contextlib.ExitStack, script: Path, scratch: Path, one_way_ms: int) -> None:
        netem_errors = []
        for ns, interface in ((self.server_ns, self.server_if), (self.client_ns, self.client_if)):
            res = sh(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", interface, "root", "netem", "delay", f"{one_way_ms}ms"])
            if res.returncode != 0:
                netem_errors.append(res.stderr.strip() or f"exit {res.returncode}")
                break
        if not netem_errors:
            self.delay_method = f"`tc qdisc … netem delay {one_way_ms}ms` on both veth ends"
            return
        self.netem_error = netem_errors[0]
        if not shutil.which("iptables"):
            raise BenchError(
                f"`tc qdisc add … netem` failed ({self.netem_error}: the kernel has no sch_netem) "
                "and iptables, the fallback, is missing"
            )
        # The fallback: each namespace hands every packet that arrives on its veth end to an
        # NFQUEUE whose handler (this script) lets it through `one_way_ms` later. Delaying on
        # ingress, not egress, keeps the sender's TCP unaware of the delay: a packet held on its
        # own egress would still count against TCP Small Queues and hold back the next one.
        for ns, interface in ((self.server_ns, self.server_if), (self.client_ns, self.client_if)):
            ready = scratch / f"nfqueue.{ns}.ready"
            log_path = scratch / f"nfqueue.{ns}.log"
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, str(script),
                     "--internal-nfqueue", "0", "--delay-ms", str(one_way_ms), "--ready-file", str(ready)],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                )  # fmt: skip
            stack.callback(stop_process, proc)
            deadline = time.monotonic() + 10
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the NFQUEUE delay handler did not start: {log_path.read_text()[-1000:]}")
                time.sleep(0.02)
            res = sh(["ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-A", "PREROUTING",
                      "-i", interface, "-j", "NFQUEUE", "--queue-num", "0"])  # fmt: skip
            if res.returncode != 0:
                raise BenchError(f"iptables NFQUEUE rule: {res.stderr.strip()}")
        self.delay_method = (
            f"`tc … netem` is unavailable here (`{self.netem_error}`: this kernel has no sch_netem), so in each "
            "namespace an iptables NFQUEUE rule hands every packet arriving on the veth to a handler in "
            f"`bench/daemon.py` that releases it {one_way_ms} ms later"
        )


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def part_netns(args: argparse.Namespace, bin_dir: Path, scratch: Path, runner: Runner) -> dict:
    """Sets up the namespaces and the HTTPS stack, measures, and tears it all down."""
    missing = [tool for tool in ("ip", "openssl") if not shutil.which(tool)]
    if os.geteuid() != 0:
        return {"skipped": "not measured: network namespaces need root"}
    if missing:
        return {"skipped": f"not measured: {', '.join(missing)} missing"}
    with contextlib.ExitStack() as stack:
        net = Netns(stack, Path(__file__).resolve(), scratch, args.one_way_ms)
        ca_pem, cert, key = make_certs(scratch / "tls", Netns.SERVER_IP)

        in_server_ns = ["ip", "netns", "exec", net.server_ns]
        fake = Service(
            "aniate-fake-llm (server namespace)",
            [*in_server_ns, str(bin_dir / "aniate-fake-llm"), "--bind", "127.0.0.1:0", "--chunk-delay-ms", "10", "--reply", NETNS_REPLY],
            clean_env(), scratch / "fake3.log", r"listening on (\S+)",
        )  # fmt: skip
        stack.callback(fake.stop)
        server = Service(
            "ant-server (server namespace, HTTPS)",
            [*in_server_ns, str(bin_dir / "ant-server"), "serve"],
            clean_env(
                ANIATE_BIND=f"{Netns.SERVER_IP}:8443", ANIATE_DATA_DIR=str(scratch / "srv3"), ANIATE_UPSTREAM_URL=fake.url,
                ANIATE_TLS_CERT=str(cert), ANIATE_TLS_KEY=str(key), ANIATE_RATE_LIMIT_PER_MIN="100000",
            ),
            scratch / "server3.log", r"listening on (\S+)",
        )  # fmt: skip
        stack.callback(server.stop)

        client = Client(bin_dir, scratch / "h3", server.url, ANIATE_CA_CERT=str(ca_pem))
        in_client_ns = ["ip", "netns", "exec", net.client_ns]
        stack.callback(client.stop_daemon, in_client_ns)
        run_checked([*in_client_ns, client.ant, "daemon", "start"], client.env)
        run_checked([*in_client_ns, client.ant, "signup", "--email", EMAIL, "--password-stdin"], client.env, stdin=f"{PASSWORD}\n".encode())
        run_checked([*in_client_ns, client.ant, "install", "what"], client.env)
        # Lets the daemon settle its server connection before anything is timed.
        time.sleep(1.0)

        with in_netns(net.client_ns):
            connect_ms = []
            for _ in range(5):
                start = time.perf_counter_ns()
                with socket.create_connection((Netns.SERVER_IP, 8443), timeout=5):
                    connect_ms.append((time.perf_counter_ns() - start) / 1e6)

            variants = {
                "daemon": [client.ant, "what", "-i", NETNS_QUESTION, "--fresh"],
                "no_daemon": [client.ant, "--no-daemon", "what", "-i", NETNS_QUESTION, "--fresh"],
            }
            if shutil.which("curl"):
                variants["curl"] = [
                    "curl", "-sS", "--fail", "-N", "--cacert", str(ca_pem), "-X", "POST", f"{server.url}/tool/what",
                    "-H", f"authorization: Bearer {client.token()}", "-H", "content-type: application/json",
                    "--data-binary", json.dumps({"instructions": NETNS_QUESTION}),
                ]  # fmt: skip
            # The floor of the daemon's path: one request over a TLS connection opened beforehand.
            tls_context = ssl.create_default_context(cafile=str(ca_pem))
            connection = http.client.HTTPSConnection(Netns.SERVER_IP, 8443, context=tls_context, timeout=30)
            body = json.dumps({"instructions": NETNS_QUESTION}).encode()
            headers = {"Authorization": f"Bearer {client.token()}", "Content-Type": "application/json"}

            def direct_warm() -> tuple[float, float, bytes]:
                start = time.perf_counter_ns()
                connection.request("POST", "/tool/what", body=body, headers=headers)
                response = connection.getresponse()
                first = response.read(1)
                first_byte = time.perf_counter_ns()
                text = first + response.read()
                end = time.perf_counter_ns()
                if response.status != 200:
                    raise BenchError(f"direct HTTPS request: HTTP {response.status}: {text[:500]!r}")
                return (end - start) / 1e6, (first_byte - start) / 1e6, text

            names = ["daemon", "no_daemon", "direct_warm", *(["curl"] if "curl" in variants else [])]
            samples = {name: {"ttfb": [], "wall": []} for name in names}
            log(f"part 3: 3 warm-up and {args.netns_runs} measured rounds of {', '.join(names)} across the delayed link")
            for round_idx in range(3 + args.netns_runs):
                order = round_order(names, round_idx)
                for name in order:
                    if name == "direct_warm":
                        wall, ttfb, stdout = direct_warm()
                    else:
                        wall, ttfb, stdout = runner.run(variants[name], client.env)
                    if NETNS_REPLY.encode()[:20] not in stdout:
                        raise BenchError(f"{name} printed {stdout[:500]!r}")
                    if round_idx >= 3:
                        samples[name]["ttfb"].append(ttfb)
                        samples[name]["wall"].append(wall)
            connection.close()
        return {"samples": samples, "connect_ms": connect_ms, "delay_method": net.delay_method}


def render_netns(res: dict, args: argparse.Namespace) -> str:
    heading = "### 3. Behind a 50 ms round trip, over HTTPS: the warm daemon against `ant --no-daemon`"
    if "skipped" in res or "failed" in res:
        return "\n".join([heading, "", res.get("skipped") or res.get("failed")])
    samples = res["samples"]
    labels = {
        "daemon": f'`ant what -i "{NETNS_QUESTION}" --fresh`, through the warm daemon',
        "no_daemon": f'`ant --no-daemon what -i "{NETNS_QUESTION}" --fresh`',
        "direct_warm": "the same request by the bench itself over a TLS connection opened beforehand (the floor)",
        "curl": "`curl` of the same request (a new process, TCP and TLS connection each time)",
    }
    rows = []
    for name, label in labels.items():
        if name not in samples:
            continue
        ttfb, wall = samples[name]["ttfb"], samples[name]["wall"]
        rows.append([label, ms(p50(ttfb)), ms(percentile(ttfb, 99)), ms(p50(wall)), ms(percentile(wall, 99)), "", ""])
    ratio = p50(samples["no_daemon"]["ttfb"]) / p50(samples["daemon"]["ttfb"])
    wall_ratio = p50(samples["no_daemon"]["wall"]) / p50(samples["daemon"]["wall"])
    rows.append(["**no-daemon ÷ daemon**", f"**{ratio:.2f}×**", "", f"{wall_ratio:.2f}×", "", "TTFB p50 ≥ 2×", verdict(ratio >= 2.0)])
    note = [
        f"{args.netns_runs} runs of each, interleaved round by round after 3 warm-up rounds.",
        "The server side (`ant-server` on HTTPS with a CA made by `openssl`, and the fake model on its loopback) and the "
        "client side (`ant` and the daemon it talks to, started there with `ip netns exec … ant daemon start`) run in "
        f"two network namespaces joined by a veth pair, with {args.one_way_ms} ms added each way.",
        f"The delay: {res['delay_method']}.",
        f"A TCP connect across the link took {ms(p50(res['connect_ms']))} ms (p50 of {len(res['connect_ms'])}).",
        "Time to first byte (TTFB) is from spawn to the first byte on the command's stdout, read unbuffered "
        "(for the bench's own request, from sending it to the first byte of the body); "
        f"the fake streams {len(NETNS_REPLY)} characters in 8-character chunks 10 ms apart, so the total is later.",
    ]
    return "\n".join([
        heading,
        "",
        table(["what", "TTFB p50 (ms)", "TTFB p99 (ms)", "total p50 (ms)", "total p99 (ms)", "target", "result"], rows),
        "",
        *note,
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The NFQUEUE delay handler (`--internal-nfqueue`), for kernels without sch_netem


def nfqueue_delay(queue_num: int, delay_ms: float, ready_file: Path) -> None:
    """Holds every packet of NFQUEUE `queue_num` for `delay_ms`, then accepts it, in order.

    Speaks nfnetlink_queue directly: bind the queue, copy only packet metadata, and answer each
    packet id with an NF_ACCEPT verdict when its time is up.
    """
    netlink_netfilter, nfnl_subsys_queue = 12, 3
    msg_packet, msg_verdict, msg_config = (nfnl_subsys_queue << 8) | 0, (nfnl_subsys_queue << 8) | 1, (nfnl_subsys_queue << 8) | 2
    nlm_f_request, nlm_f_ack, nlmsg_error = 1, 4, 2
    nfqa_cfg_cmd, nfqa_cfg_params, nfqa_packet_hdr, nfqa_verdict_hdr = 1, 2, 1, 2
    cfg_cmd_bind, copy_meta, nf_accept = 1, 1, 1

    def attribute(kind: int, payload: bytes) -> bytes:
        length = 4 + len(payload)
        return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)

    def message(kind: int, flags: int, attrs: bytes) -> bytes:
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue_num)) + attrs
        return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_netfilter)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    for attrs in (
        attribute(nfqa_cfg_cmd, struct.pack("=BBH", cfg_cmd_bind, 0, socket.htons(socket.AF_INET))),
        attribute(nfqa_cfg_params, struct.pack(">IB", 0, copy_meta) + b"\0\0\0"),
    ):
        sock.send(message(msg_config, nlm_f_request | nlm_f_ack, attrs))
        reply = sock.recv(4096)
        (error,) = struct.unpack_from("=i", reply, 16)
        if error != 0:
            raise OSError(-error, f"nfqueue config: {os.strerror(-error)}")
    ready_file.write_text("ready\n")
    delay_s = delay_ms / 1000
    pending: list[tuple[float, int]] = []
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                continue  # ENOBUFS: the kernel dropped queued messages; the senders retransmit
            arrived = time.monotonic()
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == msg_packet:
                    attr_offset = offset + 20
                    while attr_offset + 4 <= offset + length:
                        attr_len, attr_kind = struct.unpack_from("=HH", data, attr_offset)
                        if attr_len < 4:
                            break
                        if attr_kind & 0x7FFF == nfqa_packet_hdr:
                            (packet_id,) = struct.unpack_from(">I", data, attr_offset + 4)
                            heapq.heappush(pending, (arrived + delay_s, packet_id))
                        attr_offset += (attr_len + 3) & ~3
                elif kind == nlmsg_error:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    if error:
                        print(f"nfqueue: netlink error {error}", file=sys.stderr, flush=True)
                if length < 16:
                    break
                offset += (length + 3) & ~3
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, packet_id = heapq.heappop(pending)
            sock.send(message(msg_verdict, nlm_f_request, attribute(nfqa_verdict_hdr, struct.pack(">II", nf_accept, packet_id))))


# ---------------------------------------------------------------------------------------------
# The run, the report, the doc


class Context:
    """What parts 1 and 2 share: the loopback stack and the client."""

    def __init__(self, scratch: Path, runner: Runner, client: Client, server_url: str, fake_url: str, bin_dir: Path):
        self.bin_dir = bin_dir
        self.scratch = scratch
        self.runner = runner
        self.client = client
        self.server_url = server_url
        self.fake_url = fake_url


def machine_info() -> dict:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip() or "unknown"
    dirty = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip():  # fmt: skip
            dirty = " (with uncommitted changes)"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "commit": commit + dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def linkage(program: Path) -> str:
    """How `program` is linked, as the report says it: static programs have no program interpreter."""
    try:
        headers = subprocess.run(["readelf", "-lW", str(program)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "linked in a way readelf could not tell"
    if "Requesting program interpreter" in headers:
        return "dynamically linked"
    return "statically linked (packaging/pypi/static-ant.sh, as in the manylinux wheel)"


def summary(info: dict, command: str, elapsed_s: float, load_before: float, load_after: float) -> str:
    return (
        f"Measured {info['date']} at commit `{info['commit']}`, on {info['nproc']} CPUs ({info['cpu']}), "
        f"Linux {info['kernel']}, release build; load average {load_before:.2f} before and {load_after:.2f} after.\n"
        f"`ant` is {info['ant_linkage']}.\n"
        f"Command: `{command}` (the bench took {elapsed_s:.0f} s)."
    )


def write_section(out: Path, section: str) -> None:
    """Replaces the text between this bench's markers in `out`, leaving the rest as it is.

    The file is read just before it is written and replaced atomically, because other benches
    write their own sections of the same file.
    """
    text = out.read_text() if out.exists() else DOC_HEADER
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        text = text.rstrip("\n") + "\n\n" + SECTION_TEMPLATE
        start, end = text.find(MARK_START), text.find(MARK_END)
    text = text[: start + len(MARK_START)] + "\n" + section.strip("\n") + "\n" + text[end:]
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w") as tmp_file:
            tmp_file.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, default=Path("target/release"), help="where ant, aniated, ant-server and aniate-fake-llm are")
    parser.add_argument("--out", type=Path, help="the Markdown file whose bench-daemon section to rewrite")
    parser.add_argument("--runs", type=int, default=200, help="part 1: measured runs per variant")
    parser.add_argument(
        "--dynamic-ant", type=Path, default=None,
        help="a dynamically linked build of the same ant, timed beside BIN_DIR/ant in parts 1 and 2 "
        "(bench/daemon.sh keeps it as target/release/ant-dynamic)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=10, help="part 1: warm-up rounds")
    parser.add_argument("--version-runs", type=int, default=100, help="part 2: runs of `ant --version`")
    parser.add_argument("--rss-runs", type=int, default=20, help="part 2: runs per peak-RSS figure")
    parser.add_argument("--concurrency", type=int, default=32, help="part 2: concurrent `ant what` runs")
    parser.add_argument("--waves", type=int, default=3, help="part 2: waves of concurrent runs")
    parser.add_argument("--netns-runs", type=int, default=30, help="part 3: measured runs per variant")
    parser.add_argument("--one-way-ms", type=int, default=25, help="part 3: delay added each way")
    parser.add_argument("--peers", action="store_true", help="also time aichat and llm one-shot (bench/daemon.sh --peers installs them)")
    parser.add_argument("--peers-dir", type=Path, default=None, help="where bench/daemon.sh --peers installed the peers")
    parser.add_argument("--peer-runs", type=int, default=20, help="peers: measured runs per variant")
    parser.add_argument("--no-netns", action="store_true", help="leave out part 3 (the far server in network namespaces)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few runs of everything")
    parser.add_argument("--command", default=None, help="the command to report (default: this script's command line)")
    parser.add_argument("--internal-nfqueue", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--delay-ms", type=float, default=25, help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup, args.version_runs, args.rss_runs, args.waves, args.netns_runs = 20, 3, 20, 3, 1, 5
        args.peer_runs = 5
    return args


def on_signal(signum: int, _frame: object) -> None:
    # Unwinds through the ExitStacks, so everything started is stopped and the namespaces go.
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_args()
    if args.internal_nfqueue is not None:
        signal.signal(signal.SIGTERM, on_signal)
        nfqueue_delay(args.internal_nfqueue, args.delay_ms, args.ready_file)
        return 0
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)
    bin_dir = args.bin_dir.resolve()
    for name in ("ant", "aniated", "ant-server", "aniate-fake-llm", "bench-oneshot", "bench-ipc"):
        if not (bin_dir / name).is_file():
            print(f"error: {bin_dir / name} is missing; build with `bash bench/daemon.sh`", file=sys.stderr)
            return 2
    if args.dynamic_ant:
        args.dynamic_ant = args.dynamic_ant.resolve()
        if not args.dynamic_ant.is_file():
            print(f"error: {args.dynamic_ant} is missing", file=sys.stderr)
            return 2
        if linkage(args.dynamic_ant) != "dynamically linked":
            print(f"error: {args.dynamic_ant} is not dynamically linked ({linkage(args.dynamic_ant)})", file=sys.stderr)
            return 2
    command = args.command or " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    info = machine_info()
    info["ant_linkage"] = linkage(bin_dir / "ant")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    failed = False

    # A short scratch path: the daemon's socket path must fit in about 100 bytes.
    with contextlib.ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="antb.", dir="/tmp"))
        stack.callback(shutil.rmtree, scratch, True)
        runner = Runner(scratch)
        (scratch / "small.py").write_text(SMALL_PY)

        log(f"starting the fake model and ant-server in {scratch}")
        fake = Service(
            "aniate-fake-llm",
            [str(bin_dir / "aniate-fake-llm"), "--bind", "127.0.0.1:0", "--chunk-delay-ms", "0", "--reply", SHORT_REPLY],
            clean_env(), scratch / "fake.log", r"listening on (\S+)",
        )  # fmt: skip
        stack.callback(fake.stop)
        server = Service(
            "ant-server",
            [str(bin_dir / "ant-server"), "serve"],
            clean_env(
                ANIATE_BIND="127.0.0.1:0", ANIATE_DATA_DIR=str(scratch / "srv"), ANIATE_UPSTREAM_URL=fake.url,
                ANIATE_RATE_LIMIT_PER_MIN="100000",
            ),
            scratch / "server.log", r"listening on (\S+)",
        )  # fmt: skip
        stack.callback(server.stop)
        client = Client(bin_dir, scratch / "h", server.url)
        stack.callback(client.stop_daemon)
        run_checked([client.ant, "signup", "--email", EMAIL, "--password-stdin"], client.env, stdin=f"{PASSWORD}\n".encode())
        run_checked([client.ant, "install", "what"], client.env)
        # `ant`, the dynamically linked `ant` and `bench-ipc` all run as this user (the daemon's
        # login), more runs than the `free` plan's monthly tokens allow: a plan without that limit.
        admin, data_dir = [str(bin_dir / "ant-server"), "admin"], ["--data-dir", str(scratch / "srv")]
        run_checked([*admin, "define-plan", "--name", "bench", "--requests-per-minute", "1000000",
                     "--tokens-per-month", "1000000000000", *data_dir], clean_env())  # fmt: skip
        run_checked([*admin, "set-plan", "--email", EMAIL, "--plan", "bench", *data_dir], clean_env())
        wait_for_plan(client, scratch)
        idle_after_start = proc_status_kib(client.daemon_pid())
        ctx = Context(scratch, runner, client, server.url, fake.url, bin_dir)

        tool_run = part_tool_run(args, ctx)
        peers = part_peers(args, ctx) if args.peers else None
        startup_memory = part_startup_memory(args, ctx, idle_after_start)
        client.stop_daemon()
        try:
            netns = {"skipped": "not measured: --no-netns"} if args.no_netns else part_netns(args, bin_dir, scratch, runner)
        except (BenchError, OSError) as err:
            failed = True
            netns = {"failed": f"failed: {err}"}
        load_after = os.getloadavg()[0]

    report = "\n\n".join([
        summary(info, command, time.monotonic() - started, load_before, load_after),
        render_tool_run(tool_run, startup_memory, args),
        render_peers(peers, args),
        render_startup_memory(startup_memory, args),
        render_netns(netns, args),
    ])  # fmt: skip
    print(report)
    if args.out:
        write_section(args.out, report)
        log(f"wrote the results into {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
