"""Child processes of the benchmark: start, wait until ready, measure, and always stop.

Contract
--------
- `Procs` is a context manager that owns every process it starts (`start`: stdout and stderr
  to one log file, or stdout to its own file, never to a pipe); leaving it (normally, on an
  error or on Ctrl-C) stops them all: SIGINT, then SIGKILL to the child's own process group
  after a grace period. Children run in their own session, so a terminal Ctrl-C reaches only
  the harness, which then stops them in order; they also get SIGTERM if the harness dies
  (PR_SET_PDEATHSIG on Linux).
- `raise_fd_limit(n)` raises the soft RLIMIT_NOFILE (children inherit it).
- `wait_http(addr, path)` polls with raw sockets until a 200, bounded in time.
- `/proc` readers: `rss_kb(pid)`, `children(pid)`, `cpu_seconds(pid)`, `machine_cpu()` (all
  CPUs, every process: to see how much other work shared the machine, and what the
  hypervisor gave to other machines) with `machine_shares(before, seconds)`; `StealSampler`,
  steal over time, to tell whether a slow request coincided with it.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from tests.bench.load import HttpConn, build_get


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Procs:
    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str], env: dict[str, str], log: Path,
              cwd: Path, stdout: Path | None = None) -> subprocess.Popen:
        with log.open("ab") as err, (stdout.open("ab") if stdout else err) as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out,
                                    stderr=err if stdout else subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_pdeathsig)
        self.running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)  # gunicorn: quick shutdown
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:
                pass
        try:  # the whole group: also a worker that outlived its master
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            print(f"warning: process {proc.pid} did not exit", file=sys.stderr)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.running)):
            self.stop(proc)


def wait_http(addr: tuple[str, int], path: str, proc: subprocess.Popen, log: Path,
              timeout: float = 30.0, ready: tuple[int, ...] = (200,)) -> None:
    request = build_get(addr[0], addr[1], path)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}:\n"
                               + log.read_text(errors="replace")[-4000:])
        conn = HttpConn(addr)
        try:
            if conn.roundtrip(request).status in ready:
                return
        except (OSError, ValueError) as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{addr} not ready after {timeout} s ({last}):\n"
                       + log.read_text(errors="replace")[-4000:])


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():  # fallback: scan for the parent id
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


class MachineCpu(NamedTuple):
    """CPU seconds of the whole machine so far (all cores), from one read of /proc/stat."""
    busy: float     # not idle, waiting on I/O or stolen: every process's work
    stolen: float   # steal: given by the hypervisor to other machines while this one waited


def machine_cpu() -> MachineCpu:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return MachineCpu(0.0, 0.0)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    stolen = fields[7] if len(fields) > 7 else 0
    return MachineCpu((sum(fields[:7]) - idle) / _TICKS, stolen / _TICKS)


def machine_shares(before: MachineCpu, seconds: float) -> dict[str, float]:
    """Since `before`, over `seconds`: the machine's work and the steal, in % of one core."""
    now = machine_cpu()
    return {"machine (all processes)": round(100 * (now.busy - before.busy) / seconds, 1),
            "stolen by the hypervisor": round(100 * (now.stolen - before.stolen) / seconds, 1)}


def wait_quiet(max_seconds: float, busy_below: float = 0.25, window: float = 5.0) -> float:
    """Wait (at most max_seconds) for a `window` in which the machine was busy less than
    `busy_below` cores; return the busy share of the last window (in cores)."""
    deadline = time.monotonic() + max_seconds
    while True:
        start = machine_cpu().busy
        time.sleep(window)
        busy = (machine_cpu().busy - start) / window
        if busy < busy_below or time.monotonic() + window > deadline:
            return busy


class StealSampler:
    """Steal over time: while the `with` block runs, a thread reads it every `interval` s.
    Offsets count seconds from the block's start by time.perf_counter, as the samples of
    load.timed_mix do when it starts right after."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.points: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._began = 0.0

    def __enter__(self) -> StealSampler:
        self._began = time.perf_counter()
        self.points.append((0.0, machine_cpu().stolen))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.points.append((time.perf_counter() - self._began, machine_cpu().stolen))

    def stolen_percent(self, start: float, end: float) -> float:
        """% of one core stolen between two offsets (widened to the samples around them)."""
        points = list(self.points)
        before = max((p for p in points if p[0] <= start), default=points[0])
        after = min((p for p in points if p[0] >= end), default=points[-1])
        span = after[0] - before[0]
        return round(100 * (after[1] - before[1]) / span, 1) if span > 0 else 0.0

    def annotate(self, slowest: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """latency.slowest's entries, each with the steal while it ran."""
        for s in slowest:
            s["stolen_percent"] = self.stolen_percent(s["at_s"], s["at_s"] + s["ms"] / 1000)
        return slowest
