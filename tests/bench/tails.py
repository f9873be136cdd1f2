"""The tails part: latency at concurrency 1 over a long run, on a fresh database, on one
holding many usage rows, and right after a restart on it; SQLite, and PostgreSQL when a URL
is given.

Contract
--------
`tails_phase(bench, opts, say, upstream)` (the upstream already running, `upstream` its
address) measures, each for `opts.tails_seconds` s with `load.timed_mix` (one request at a
time, alternating a non-streamed and a streamed chat completion of `opts.stream_chunks`
chunks from the fast upstream, on two keep-alive connections used in turn):
1. baselines: the direct upstream and the bare passthrough (its own server, stopped after);
2. per database (a SQLite file in the work directory; a throwaway PostgreSQL database on
   `opts.postgres`, dropped afterwards): an account and key made with `tokmodel`, then
   - "fresh": a gateway (`opts.workers` workers) after `opts.tails_warmup` s of warm-up;
   - the database filled with `opts.tails_rows` settled requests (tests.bench.fill; folded
     into the usage sums unless `opts.tails_backlog`), and a new gateway, warmed up the same
     way;
   - "restarted": that gateway stopped and a new one started, measured from its very first
     request (the first minute after a deploy);
   then the post-run ledger check (tests.bench.ledger_check) of the bench's account.
Every gateway runs with tests/bench/probe (garbage-collection pauses; with `opts.probe_hub`
also gevent's blocking monitor). Returns {"seconds", "rows", "chunks", "target",
"baselines": {side: scenario}, "databases": [{"database", "fill", "ledger",
"scenarios": [scenario]}]}; a scenario is {"name", "kinds": latency.by_kind (plain, stream,
all), "slowest", "first_requests_ms", "gc", "gc_overlap", "hub", "db_stats",
"cpu_percent" (workers; machine: every process, all cores), "errors", "error_samples"}.
A database whose set-up fails is reported with its "error" and the part goes on.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from tests.bench import databases, fill, latency, ledger_check, load, probes
from tests.bench.databases import Database
from tests.bench.options import Options
from tests.bench.procs import (
    StealSampler,
    cpu_seconds,
    machine_cpu,
    machine_shares,
)
from tests.bench.servers import Bench

TARGET = {"p99_ms": 10.0, "max_ms": 50.0}


def directive(opts: Options) -> str:
    return f"bench:chunks={opts.stream_chunks};delay=0"


def mix(bench: Bench, addr: tuple[str, int], opts: Options, secret: str | None = None
        ) -> list[load.Timed]:
    text = directive(opts)
    return [load.Timed("plain", bench.chat(addr, secret=secret, content=text), False),
            load.Timed("stream", bench.chat(addr, stream=True, secret=secret, content=text),
                       True)]


def measure(name: str, addr: tuple[str, int], requests: list[load.Timed], seconds: float,
            pids: list[int], probe_dir: Any = None, db: Database | None = None,
            pool: list[load.HttpConn] | None = None) -> dict[str, Any]:
    """One timed run (on `pool`'s connections when given) and what explains it."""
    before = databases.stats(db) if db else {}
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    machine0, wall0, mono0 = machine_cpu(), time.time(), time.monotonic()
    result = load.Result()
    with StealSampler() as steal:
        samples = load.timed_mix(addr, requests, seconds, conns=2, result=result, pool=pool)
    elapsed = time.monotonic() - mono0
    wall1 = time.time()
    cpu = {f"worker {pid}": round(100 * (cpu_seconds(pid) - cpu0[pid]) / elapsed, 1)
           for pid in pids}
    cpu.update(machine_shares(machine0, elapsed))
    pauses = probes.gc_pauses(probe_dir, pids, wall0, wall1)
    out: dict[str, Any] = {
        "name": name, "kinds": latency.by_kind(samples),
        "slowest": steal.annotate(latency.slowest(samples)),
        "first_requests_ms": [round(s.seconds * 1000, 2) for s in samples[:6]],
        "cpu_percent": cpu, "errors": dict(result.errors), "error_samples": result.samples,
    }
    if probe_dir is not None:
        out["gc"] = probes.gc_summary(pauses)
        out["gc_overlap"] = probes.overlap(samples, wall0, pauses)
        out["hub"] = probes.hub_summary(probes.hub_blocks(probe_dir, pids, wall0, wall1))
    if db is not None:
        out["db_stats"] = databases.delta(before, databases.stats(db))
        out["db_size"] = databases.stats(db) if db.kind == "sqlite" else {}
    return out


def _gateway_run(bench: Bench, opts: Options, db: Database, secret: str, name: str,
                 warm: bool, say: Any) -> dict[str, Any]:
    server = bench.start_gateway(opts.workers, db=db, probe=True)
    pool = [load.HttpConn(server.addr) for _ in range(2)]
    try:
        requests = mix(bench, server.addr, opts, secret)
        if warm:   # on the connections (so the workers) that are then measured
            load.timed_mix(server.addr, requests, opts.tails_warmup, pool=pool)
        say(f"tails: {db.label}, {name}: {opts.tails_seconds:g} s at concurrency 1 ...")
        return measure(name, server.addr, requests, opts.tails_seconds, server.pids,
                       server.probe_dir, db, pool=pool)
    finally:
        for conn in pool:
            conn.close()
        bench.procs.stop(server.proc)


def _database(bench: Bench, opts: Options, db: Database, say: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"database": db.label, "kind": db.kind, "scenarios": []}
    secret = bench.make_key(db)
    out["scenarios"].append(_gateway_run(bench, opts, db, secret, "fresh", True, say))
    if opts.tails_rows > 0:
        say(f"tails: filling {db.label} with {opts.tails_rows:,} usage rows ...")
        out["fill"] = fill.fill(db.url, opts.tails_rows, fold=not opts.tails_backlog)
        say(f"tails: filled in {out['fill']['seconds']} s")
        rows = f"{opts.tails_rows:,} rows" + (" unfolded" if opts.tails_backlog else "")
        out["scenarios"].append(_gateway_run(bench, opts, db, secret, rows, True, say))
        out["scenarios"].append(_gateway_run(bench, opts, db, secret,
                                             f"{rows}, just restarted", False, say))
    out["ledger"] = ledger_check.check(db, ["bench"])
    return out


def tails_phase(bench: Bench, opts: Options, say: Any, upstream: tuple[str, int]
                ) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": opts.tails_seconds, "rows": opts.tails_rows,
                           "chunks": opts.stream_chunks, "target": TARGET, "baselines": {},
                           "databases": []}
    say(f"tails: direct upstream, {opts.tails_seconds:g} s ...")
    out["baselines"]["direct"] = measure("direct upstream", upstream,
                                         mix(bench, upstream, opts), opts.tails_seconds,
                                         [bench.upstream_pid])
    passthrough = bench.start_passthrough(opts.workers)
    try:
        say(f"tails: bare passthrough, {opts.tails_seconds:g} s ...")
        requests = mix(bench, passthrough.addr, opts)
        pool = [load.HttpConn(passthrough.addr) for _ in range(2)]
        load.timed_mix(passthrough.addr, requests, opts.tails_warmup, pool=pool)
        out["baselines"]["passthrough"] = measure("bare passthrough", passthrough.addr,
                                                  requests, opts.tails_seconds,
                                                  passthrough.pids, pool=pool)
        for conn in pool:
            conn.close()
    finally:
        bench.procs.stop(passthrough.proc)
    backends: list[tuple[str, AbstractContextManager[Database]]] = [
        ("SQLite", nullcontext(databases.sqlite(bench.workdir / "tails.db", "SQLite")))]
    if opts.postgres:
        backends.append(("PostgreSQL", databases.postgres(opts.postgres, "PostgreSQL")))
    for label, context in backends:
        try:
            with context as db:
                out["databases"].append(_database(bench, opts, db, say))
        except Exception as exc:  # one backend failing leaves the others measured
            say(f"tails on {label} failed: {type(exc).__name__}: {exc}")
            out["databases"].append({"database": label, "error": f"{type(exc).__name__}: "
                                     f"{str(exc)[:2000]}", "scenarios": []})
    return out
