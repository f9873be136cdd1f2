"""`python -m tests.bench [options]`: run the benchmark, print a Markdown table and the exact
command, and write the results as JSON (default var/bench.json).

Contract: raises the file-descriptor soft limit for itself and its children, works in a
temporary directory (SQLite databases, process logs) that is removed at the end (throwaway
PostgreSQL databases are dropped), stops every process it started also on an error or
Ctrl-C, and exits 0 when the run completed (targets missed are reported, not failed), 1
when it could not complete, 130 on Ctrl-C.
Presets (tests.bench.options): the default run (`make bench`, a few minutes: every part but
the soak, tails of 10 s on 100,000 usage rows); `--quick`, a few seconds per part;
`--full` (`make bench-full`), the full-length measurement: every part including the soak
(10 minutes), 5,000 slow streams on one worker, 60 s tails on 1,000,000 usage rows, and on
PostgreSQL too when `--postgres URL` or TOKMODEL_TEST_POSTGRES_URL names a server. Options
given explicitly override the preset. `--parts` picks parts; `--rounds N` (at least 3) sets
the interleaved gateway/passthrough/direct throughput rounds whose median gives the
gateway-to-passthrough ratio; `--wait-quiet S` first waits up to S seconds for other work on
the machine to stop, since the bench shares the cores with everything else. Diagnosis:
`--probe-hub S` turns on gevent's blocking monitor (S seconds) in the tails' and soak's
gateways; `--gateway-env NAME=VALUE` (repeatable) sets a variable for every gateway (e.g.
BENCH_GC_FREEZE=5, see tests/bench/probe).
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
from dataclasses import asdict, fields, replace
from pathlib import Path

from tests.bench.options import DEFAULT_PARTS, PARTS, Options, full, quick
from tests.bench.procs import Procs, raise_fd_limit, wait_quiet
from tests.bench.report import TARGETS, markdown
from tests.bench.run import run
from tests.bench.servers import REFERENCE_APP, REFERENCE_DIR, ROOT

POSTGRES_ENV = "TOKMODEL_TEST_POSTGRES_URL"


def parse(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--quick", action="store_true", help="a short sanity run")
    add("--full", action="store_true",
        help="the full-length run: soak, 5,000 streams, 1,000,000-row tails, PostgreSQL")
    add("--parts", help=f"comma-separated subset of {','.join(PARTS)} "
        f"(default {','.join(DEFAULT_PARTS)}; --full: all)")
    add("--requests", type=int, help="timed requests per side at concurrency 1")
    add("--warmup", type=int)
    add("--duration", type=float, help="seconds per non-streamed throughput run")
    add("--concurrency", type=int)
    add("--workers", type=int, help="gateway (and passthrough) workers")
    add("--rounds", type=int, help="interleaved throughput rounds (gateway, passthrough, "
        "direct), >= 3")
    add("--upstream-workers", type=int)
    add("--stream-chunks", type=int, help="chunks of the fast streams (stream-rate, tails)")
    add("--stream-rate-duration", type=float, help="seconds per stream-rate run")
    add("--streams", type=int, help="slow concurrent streams on one worker")
    add("--stream-seconds", type=int, help="chunks per slow stream (one per --stream-interval)")
    add("--stream-interval", type=float)
    add("--worker-connections", type=int, help="gunicorn worker_connections of the streams "
        "part's gateway (0: the gateway's default)")
    add("--db-ratio-seconds", type=float, help="seconds per database in each round of the "
        "databases part (PostgreSQL against SQLite at concurrency 1)")
    add("--tails-seconds", type=float, help="seconds per tails run")
    add("--tails-warmup", type=float)
    add("--tails-rows", type=int, help="usage rows the tails' databases are filled with")
    add("--tails-backlog", action="store_true", default=None,
        help="leave the filled rows unfolded: the gateway folds them during the tails, as "
        "after an upgrade from a version without the usage sums (default: folded)")
    add("--postgres", metavar="URL", help=f"PostgreSQL server for the databases part "
        f"and the tails (default: "
        f"${POSTGRES_ENV} with --full; '' for none); throwaway databases are made on it")
    add("--baseline", metavar="DIR", help="another checkout of TokModel (git worktree add "
        "DIR COMMIT): its gateway, on a database of its own, is one more side of the "
        "latency, throughput and stream-rate parts, measured in the same interleaved rounds "
        "(a before-and-after within one run)")
    add("--reference", metavar="DIR", help="the directory of falcon_passthrough.py, the bare "
        "passthrough issue 11 is measured against (default: ../shared/bench beside the "
        "checkout, when there; '' for none): served as its docstring says, with gunicorn's "
        "stock gevent worker, it is one more side of the latency and throughput parts")
    add("--soak-seconds", type=float)
    add("--soak-rate", type=float, help="background requests per second in the soak")
    add("--soak-sample-seconds", type=float)
    add("--probe-hub", type=float, metavar="SECONDS",
        help="gevent's blocking monitor in the tails' and soak's gateways")
    add("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for every gateway (repeatable)")
    add("--hot-iterations", type=int)
    add("--json", type=Path, default=ROOT / "var" / "bench.json")
    add("--keep", action="store_true", help="keep the work directory (logs, databases)")
    add("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
        help="first wait up to this long for other work on the machine to stop")
    args = p.parse_args(argv)
    opts = d
    if args.quick:
        opts = quick(opts)
    if args.full:
        opts = full(opts)
        opts = replace(opts, postgres=os.environ.get(POSTGRES_ENV, ""))
    explicit = {f.name: getattr(args, f.name) for f in fields(Options)
                if f.name not in ("parts", "gateway_env") and getattr(args, f.name, None)
                is not None}
    opts = replace(opts, **explicit)
    if args.reference is None and (REFERENCE_DIR / REFERENCE_APP).is_file():
        opts = replace(opts, reference=str(REFERENCE_DIR))
    if args.parts is not None:
        parts = tuple(x.strip() for x in args.parts.split(",") if x.strip())
        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            p.error(f"--parts takes a subset of {','.join(PARTS)}, not {args.parts!r}")
        opts = replace(opts, parts=parts)
    env = []
    for item in args.gateway_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--gateway-env takes NAME=VALUE, not {item!r}")
        env.append((name, value))
    opts = replace(opts, gateway_env=tuple(env))
    if opts.rounds < 3:
        p.error("--rounds must be at least 3 (the ratio is a median over rounds)")
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
