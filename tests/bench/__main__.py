"""`python -m tests.bench [options]`: run the benchmark, print a Markdown table and the exact
command, and write the results as JSON (default var/bench.json).

Contract: raises the file-descriptor soft limit for itself and its children, works in a
temporary directory (SQLite database, process logs) that is removed at the end, stops every
process it started also on an error or Ctrl-C, and exits 0 when the run completed (targets
missed are reported, not failed), 1 when it could not complete, 130 on Ctrl-C.
`--quick` is a short sanity run (a few seconds per part, still `--rounds` interleaved
throughput rounds); `--parts` picks parts (latency, throughput, streams, hot); `--rounds N`
(at least 3) sets the interleaved gateway/passthrough/direct throughput rounds whose median
gives the gateway-to-passthrough ratio; `--wait-quiet S` first waits up to S seconds for
other work on the machine to stop, since the bench shares the cores with everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from tests.bench.procs import Procs, raise_fd_limit, wait_quiet
from tests.bench.report import TARGETS, markdown
from tests.bench.run import PARTS, ROOT, Options, run


def parse(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("--requests", type=int, default=d.requests,
                   help="timed requests per side at concurrency 1")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--duration", type=float, default=d.duration,
                   help="seconds per throughput run")
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--streams", type=int, default=d.streams)
    p.add_argument("--stream-seconds", type=int, default=d.stream_seconds,
                   help="chunks per stream (one per --stream-interval)")
    p.add_argument("--stream-interval", type=float, default=d.stream_interval)
    p.add_argument("--workers", type=int, default=d.workers,
                   help="gateway (and passthrough) workers for latency and throughput")
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help="interleaved throughput rounds (gateway, passthrough, direct), >= 3")
    p.add_argument("--upstream-workers", type=int, default=d.upstream_workers)
    p.add_argument("--hot-iterations", type=int, default=d.hot_iterations)
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--json", type=Path, default=ROOT / "var" / "bench.json")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, db)")
    p.add_argument("--quick", action="store_true", help="a short sanity run")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to this long for other work on the machine to stop")
    args = p.parse_args(argv)
    parts = tuple(x.strip() for x in args.parts.split(",") if x.strip())
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        p.error(f"--parts takes a subset of {','.join(PARTS)}, not {args.parts!r}")
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (the ratio is a median over rounds)")
    opts = Options(requests=args.requests, warmup=args.warmup, duration=args.duration,
                   concurrency=args.concurrency, streams=args.streams,
                   stream_seconds=args.stream_seconds, stream_interval=args.stream_interval,
                   workers=args.workers, rounds=args.rounds,
                   upstream_workers=args.upstream_workers,
                   hot_iterations=args.hot_iterations, parts=parts)
    if args.quick:
        opts = replace(opts, requests=300, warmup=50, duration=2.0, streams=100,
                       stream_seconds=3, hot_iterations=300)
    return opts, args


def command_line(argv: list[str]) -> str:
    exe = Path(sys.executable)
    try:
        exe_text = str(exe.relative_to(ROOT))
    except ValueError:
        exe_text = str(exe)
    return f"cd {shlex.quote(str(ROOT))} && " + shlex.join([exe_text, "-m", "tests.bench",
                                                             *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts, args = parse(argv)
    command = command_line(argv)
    fds = raise_fd_limit(max(65536, opts.streams * 4 + 1024))
    if fds < opts.streams * 2 + 256:
        print(f"warning: file-descriptor limit {fds} is low for {opts.streams} streams",
              file=sys.stderr)
    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)  # stop children the same way as on Ctrl-C
    if args.wait_quiet > 0:
        busy = wait_quiet(args.wait_quiet)
        print(f"machine busy {100 * busy:.0f}% of one core before the run", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="tokmodel-bench-"))
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {text}", file=sys.stderr, flush=True)

    try:
        with Procs() as procs:
            results = run(opts, workdir, procs, say)
    except KeyboardInterrupt:
        print("interrupted: every process it started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        if not args.keep:
            print("(rerun with --keep to inspect the logs)", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "command": command,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "fd_limit": fds},
        "options": asdict(opts),
        "targets": TARGETS,
        **results,
    }
    print(markdown(results, command))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
