"""The benchmark run: start the fast fake upstream and the real gateway, measure, stop.

Contract
--------
`run(opts, workdir, procs, say) -> dict` performs the parts named in `opts.parts`, in this
order, and returns the JSON-ready results. Three servers answer the same chat requests: the
fast fake upstream ("direct"), the real gateway (`tokmodel serve`, `opts.workers` workers,
metrics and access log as it ships them: its stdout, the access log, goes to a file that is
counted afterwards), and the bare passthrough (tests.bench.passthrough: one Bearer check and
a requests.Session, served by the same `tokmodel serve` code path and gunicorn settings).
With `opts.baseline` (a directory holding another checkout), a fourth, the "baseline": that
checkout's gateway on a database of its own, measured as one more side of parts 1-3.
With `opts.reference`, the "reference": ../shared/bench's bare passthrough served as its own
docstring says (gunicorn's stock gevent worker), one more side of parts 1-2 (it reads a
stream whole before answering, so it is no side of part 3).
1. latency: at concurrency 1, `opts.requests` non-streamed requests on one keep-alive
   connection (after `opts.warmup`) to each of the three; p50/p99 and the gateway's added
   latency;
2. throughput: non-streamed, `opts.rounds` interleaved rounds at `opts.concurrency`
   (tests.bench.throughput): req/s, the ratio to the passthrough (median of per-round ratios);
3. stream-rate: the same with streams of `opts.stream_chunks` chunks from the fast upstream,
   all three sides (the passthrough streams too);
4. streams: `opts.streams` slow concurrent streams on ONE worker (tests.bench.streams);
5. databases: PostgreSQL's latency at concurrency 1 against SQLite's, interleaved rounds
   (tests.bench.db_ratio; only with a PostgreSQL URL);
6. tails: long runs at concurrency 1 on fresh, filled and just-restarted databases, SQLite
   and PostgreSQL (tests.bench.tails);
7. soak: mixed traffic for `opts.soak_seconds` s, memory and stalls (tests.bench.soak);
8. hot: hot-path costs in-process (tests.bench.hot; an error there is reported, not fatal);
plus, after parts 1-4 (the SQLite file `bench.db`), the money check
(tests.bench.ledger_check), the gateway logs' warnings/errors, how many access-log lines the
gateway wrote and whether GET /metrics answered. CPU use of every process is sampled from
/proc around each run, with what other processes on the machine used meanwhile, so a noisy
run can be recognised. Every process is started through `procs` (a `Procs`), which stops
them whatever happens; the databases live in `workdir` (PostgreSQL: throwaway databases,
dropped).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bench import hot, ledger_check, load
from tests.bench.databases import sqlite
from tests.bench.db_ratio import databases_phase
from tests.bench.gateway_logs import access_log_lines, log_trouble, metrics_probe
from tests.bench.latency import percentile
from tests.bench.options import Options
from tests.bench.procs import Procs, children, machine_cpu
from tests.bench.servers import REFERENCE_SERVED, Bench, Server
from tests.bench.soak import soak_phase
from tests.bench.streams import streams_phase
from tests.bench.tails import directive, tails_phase
from tests.bench.throughput import SIDES, cpu_share, rounds_phase


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _latency(result: load.Result) -> dict[str, Any]:
    return {"p50_ms": _ms(percentile(result.latencies, 0.50)),
            "p99_ms": _ms(percentile(result.latencies, 0.99)),
            "mean_ms": _ms(sum(result.latencies) / max(1, len(result.latencies))),
            "requests": len(result.latencies), "ok": result.ok,
            "errors": dict(result.errors), "error_samples": result.samples}


def latency_phase(opts: Options, targets: dict[str, Any], say: Any) -> dict[str, Any]:
    sides = [side for side in SIDES if side in targets]
    say("latency at concurrency 1: " + ", ".join(sides) + " ...")
    lat: dict[str, Any] = {}
    for side in sides:
        addr, request, side_pids = targets[side]
        result, cpu = cpu_share(side_pids, lambda a=addr, r=request: load.sequential(
            a, r, opts.requests, opts.warmup))
        lat[side] = {**_latency(result), "cpu_percent": cpu}
    for base in ("direct", "passthrough", "reference", "baseline"):
        if base not in lat:
            continue
        for q in ("p50", "p99"):
            lat[f"added_{q}_ms" + ("" if base == "direct" else f"_vs_{base}")] = round(
                lat["gateway"][f"{q}_ms"] - lat[base][f"{q}_ms"], 3)
    return lat


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def _pids(name: str, server: Server, upstream_pid: int) -> dict[str, int]:
    return {"upstream": upstream_pid, f"{name} master": server.proc.pid,
            **{f"{name} worker {i + 1}": pid for i, pid in enumerate(server.pids)}}


def run(opts: Options, workdir: Path, procs: Procs, say: Any = print) -> dict[str, Any]:
    bench = Bench(opts, workdir, procs)
    parts = set(opts.parts)
    before = machine_cpu().busy
    time.sleep(1.0)
    out: dict[str, Any] = {"busy_before_percent": round(100 * (machine_cpu().busy - before), 1),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if out["busy_before_percent"] > 25:
        say(f"warning: other processes keep {out['busy_before_percent']:.0f}% of one core busy:"
            " they share the cores and the figures will be noisy")
    if parts - {"hot"}:
        upstream = bench.start_upstream()
        bench.make_key()
        say(f"upstream on {upstream[1]} ({opts.upstream_workers} process(es))")
    if {"latency", "throughput", "stream-rate"} & parts:
        say(f"starting the gateway and the bare passthrough, {opts.workers} workers each")
        gateway = bench.start_gateway(opts.workers)
        passthrough = bench.start_passthrough(opts.workers)
        out["gunicorn_settings"] = bench.passthrough_settings()
        servers = {"gateway": (gateway.addr, _pids("gateway", gateway, bench.upstream_pid)),
                   "passthrough": (passthrough.addr,
                                   _pids("passthrough", passthrough, bench.upstream_pid)),
                   "direct": (upstream, {"upstream": bench.upstream_pid})}
        secrets = dict.fromkeys(servers, bench.secret)
        baseline = None
        if opts.baseline:
            root = Path(opts.baseline).resolve()
            say(f"starting the baseline gateway from {root}")
            base_db = sqlite(workdir / "baseline.db", "SQLite (baseline)")
            secrets["baseline"] = bench.make_key(base_db, root=root)
            baseline = bench.start_gateway(opts.workers, db=base_db, root=root)
            servers["baseline"] = (baseline.addr,
                                   _pids("baseline", baseline, bench.upstream_pid))
            out["baseline"] = {"root": str(root), "commit": _commit(root)}
        reference = None
        if opts.reference and {"latency", "throughput"} & parts:
            say(f"starting the reference passthrough from {opts.reference}")
            reference = bench.start_reference(opts.workers)
            servers["reference"] = (reference.addr,
                                    _pids("reference", reference, bench.upstream_pid))
            secrets["reference"] = bench.secret
            out["reference"] = {"dir": opts.reference, **REFERENCE_SERVED,
                                "workers": opts.workers}
        plain = {side: (addr, bench.chat(addr, secret=secrets[side]), pids)
                 for side, (addr, pids) in servers.items()}
        for side in ("gateway", "baseline", "passthrough", "reference"):   # warm up
            if side in plain:
                load.concurrent(plain[side][0], plain[side][1], opts.concurrency, 1.5)

        if "latency" in parts:
            out["latency"] = latency_phase(opts, plain, say)
        if "throughput" in parts:
            out["throughput"] = {**rounds_phase(plain, opts.concurrency, opts.duration,
                                                opts.rounds, say), "workers": opts.workers}
        if "stream-rate" in parts:
            text = directive(opts)
            # the reference passthrough reads a stream whole before it answers: not a side
            streamed = {side: (addr, bench.chat(addr, stream=True, content=text,
                                                secret=secrets[side]), pids)
                        for side, (addr, pids) in servers.items() if side != "reference"}
            out["stream_rate"] = {
                **rounds_phase(streamed, opts.concurrency, opts.stream_rate_duration,
                               opts.rounds, say, stream=True, label="stream-rate"),
                "workers": opts.workers, "chunks": opts.stream_chunks}
        out["metrics_endpoint"] = metrics_probe(gateway.addr)
        out["workers_restarted"] = sorted(set(gateway.pids) - set(children(gateway.proc.pid)))
        out["passthrough_workers_restarted"] = sorted(
            set(passthrough.pids) - set(children(passthrough.proc.pid)))
        procs.stop(passthrough.proc)
        if reference is not None:
            procs.stop(reference.proc)
        if baseline is not None:
            procs.stop(baseline.proc)
            # its requests are on its own database: the access-log count is the gateway's
            bench.access_logs.remove(baseline.stdout)
        procs.stop(gateway.proc)

    if "streams" in parts:
        say(f"{opts.streams:,} concurrent streams on one worker, ~{opts.stream_seconds} s ...")
        out["streams"] = streams_phase(bench, opts, say)

    if bench.logs:  # the gateways of parts 1-4 ran on bench.db
        out["ledger"] = ledger_check.check(bench.main, ["bench"])

    if "databases" in parts:
        out["databases"] = databases_phase(bench, opts, say)

    if "tails" in parts:
        out["tails"] = tails_phase(bench, opts, say, upstream)

    if "soak" in parts:
        out["soak"] = soak_phase(bench, opts, say)

    if bench.logs:
        out["gateway_log"] = log_trouble(bench.logs + bench.access_logs)
        out["access_log"] = access_log_lines(bench.access_logs)
    procs.stop_all()

    if "hot" in parts:  # hot path, with nothing else running
        say("hot-path costs in-process ...")
        try:
            out["hot_path_us"] = hot.measure(workdir, opts.hot_iterations)
        except Exception as exc:  # in-process internals may move: report, do not abort
            out["hot_path_error"] = f"{type(exc).__name__}: {exc}"
            say(f"hot-path part failed: {out['hot_path_error']}")
    return out
