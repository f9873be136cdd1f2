"""The databases part: PostgreSQL's latency at concurrency 1 against SQLite's, in interleaved
rounds, so that both are measured on the machine in the same state (measured minutes apart,
as the tails do, the machine's drift outweighed the difference).

Contract
--------
`databases_phase(bench, opts, say)` (the upstream already running) returns {} without
`opts.postgres`. Otherwise it starts two gateways side by side (`opts.workers` workers
each), one on a fresh SQLite file in the work directory and one on a throwaway PostgreSQL
database on `opts.postgres` (dropped afterwards), each with its account and key, warms both
up for `opts.tails_warmup` s, then runs `opts.rounds` rounds; a round measures the tails'
mix (tests.bench.tails.mix: one request at a time, non-streamed and streamed in turn) for
`opts.db_ratio_seconds` s on each, in turn, the order alternating from round to round.
Returns {"rounds", "seconds", "sqlite" and "postgresql": [latency.by_kind per round],
"ratios": {kind: [PostgreSQL p50 / SQLite p50, per round]}, "ratio": {kind: median of those},
"ledger": {database: ledger check}}.
"""

from __future__ import annotations

import statistics
from typing import Any

from tests.bench import databases, latency, ledger_check, load
from tests.bench.options import Options
from tests.bench.servers import Bench, Server
from tests.bench.tails import mix
from tests.bench.throughput import round_order

KINDS = ("plain", "stream")


def databases_phase(bench: Bench, opts: Options, say: Any) -> dict[str, Any]:
    if not opts.postgres:
        say("databases: no PostgreSQL URL (--postgres), skipped")
        return {}
    sqlite_db = databases.sqlite(bench.workdir / "ratio.db", "SQLite")
    with databases.postgres(opts.postgres, "PostgreSQL") as pg_db:
        sides: dict[str, tuple[Server, list[load.Timed], list[load.HttpConn]]] = {}
        try:
            for name, db in (("sqlite", sqlite_db), ("postgresql", pg_db)):
                server = bench.start_gateway(opts.workers, db=db)
                requests = mix(bench, server.addr, opts, bench.make_key(db))
                sides[name] = (server, requests, [load.HttpConn(server.addr) for _ in range(2)])
                load.timed_mix(server.addr, requests, opts.tails_warmup, pool=sides[name][2])
            out: dict[str, Any] = {"rounds": opts.rounds, "seconds": opts.db_ratio_seconds,
                                   "sqlite": [], "postgresql": []}
            for n in range(opts.rounds):
                order = round_order(list(sides), n)
                say(f"databases: round {n + 1}/{opts.rounds}: {', '.join(order)}, "
                    f"{opts.db_ratio_seconds:g} s each at concurrency 1 ...")
                for name in order:
                    server, requests, pool = sides[name]
                    samples = load.timed_mix(server.addr, requests, opts.db_ratio_seconds,
                                             pool=pool)
                    out[name].append(latency.by_kind(samples))
        finally:
            for server, _requests, pool in sides.values():
                for conn in pool:
                    conn.close()
                bench.procs.stop(server.proc)
        out["ratios"] = {kind: [round(p[kind]["p50_ms"] / s[kind]["p50_ms"], 3)
                                for s, p in zip(out["sqlite"], out["postgresql"], strict=True)]
                         for kind in KINDS}
        out["ratio"] = {kind: round(statistics.median(r), 3) for kind, r in
                        out["ratios"].items()}
        out["ledger"] = {db.label: ledger_check.check(db, ["bench"])
                         for db in (sqlite_db, pg_db)}
    return out
