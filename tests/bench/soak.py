"""The soak: mixed traffic for a long while, the workers' memory over time, the largest stall
of requests that should be fast, and the money check afterwards.

Contract
--------
`soak_phase(bench, opts, say)` (the upstream already running) makes a SQLite database of its
own with three accounts (`bench`: plenty of credits; `limited`: a key with rpm 30; `broke`:
no credits), starts a gateway (`opts.workers` workers, tests/bench/probe on), and for
`opts.soak_seconds` s runs at once
- background traffic (tests.bench.traffic, another process) at about `opts.soak_rate`
  requests per second: non-streamed and fast streamed requests, slow streams, upstream
  failures (500, retried by the gateway, and 400), clients hanging up mid-stream, the
  rate-limited key (200 or 429), and refusals (no credit, unknown model, bad key), each
  kind checked against the statuses it must get;
- the fast lane: one request at a time (alternating non-streamed and streamed, as in the
  tails part) in this process, whose every latency counts: the largest is the stall figure
  (target: none above 50 ms);
- the RSS of every worker and of the master, sampled every `opts.soak_sample_seconds` s.
When the traffic has ended it checks the money (tests.bench.ledger_check on the three
accounts, no outstanding hold; `tokmodel accounts audit` on `limited` and `broke`), then
stops the gateway. Returns {"seconds", "rate", "traffic" (traffic.py's report), "fast_lane"
(latency.by_kind, slowest, errors), "memory" {per process: samples, warm-up, first and last
window means, growth_percent}, "max_growth_percent", "gc", "hub", "ledger", "cli_audit",
"workers_restarted", "cpu_percent", "gateway_log" (warnings and errors of its stderr only:
the 5xx answers it provokes are in its access log), "access_log"}.
Memory growth is measured after a warm-up of max(10 s, 20 % of the run), comparing the mean
RSS of the first and the last tenth of the rest (at least 2 samples each).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

from tests.bench import databases, latency, ledger_check, load, probes
from tests.bench.gateway_logs import access_log_lines, log_trouble
from tests.bench.options import Options
from tests.bench.procs import (
    StealSampler,
    children,
    cpu_seconds,
    machine_cpu,
    machine_shares,
    rss_kb,
)
from tests.bench.servers import ROOT, Bench
from tests.bench.tails import directive, mix

TARGET = {"stall_ms": 50.0, "growth_percent": 5.0}


def _kinds(bench: Bench, addr: tuple[str, int], opts: Options, secrets: dict[str, str]
           ) -> list[dict[str, Any]]:
    fast = directive(opts)

    def chat(name: str, weight: float, expect: list[int], stream: bool = False,
             content: str = fast, key: str = "bench", model: str | None = None,
             hangup: bool = False) -> dict[str, Any]:
        request = bench.chat(addr, stream=stream, secret=secrets[key], content=content,
                             **({"model": model} if model else {}))
        return {"name": name, "weight": weight, "request": request.decode("latin-1"),
                "stream": stream and not hangup, "hangup": hangup, "expect": expect}

    return [
        chat("non-streamed", 30, [200]),
        chat("streamed (fast)", 20, [200], stream=True),
        chat("slow stream (2 s)", 4, [200], stream=True, content="bench:chunks=10;delay=0.2"),
        chat("upstream 500 (retried)", 4, [500, 502, 503], content="bench:fail=500"),
        chat("upstream 400", 2, [400], content="bench:fail=400"),
        chat("client hangs up mid-stream", 6, [200], stream=True,
             content="bench:chunks=20;delay=0.1", hangup=True),
        chat("rate-limited key (rpm 30)", 10, [200, 429], key="limited"),
        chat("no credit", 4, [402, 403], key="broke"),
        chat("unknown model", 4, [400, 404], model="openai/no-such-model"),
        chat("bad key", 4, [401], key="bad"),
    ]


def _memory(samples: list[tuple[float, dict[str, int]]], seconds: float
            ) -> dict[str, Any]:
    warm = max(10.0, 0.2 * seconds)
    after = [(t, rss) for t, rss in samples if t >= warm]
    width = max(2, len(after) // 10)
    out: dict[str, Any] = {}
    names = sorted({name for _, rss in samples for name in rss})
    for name in names:
        series = [(t, rss[name]) for t, rss in after if rss.get(name)]
        if len(series) < 2 * width:
            out[name] = {"samples": len(series), "growth_percent": None}
            continue
        first = statistics.fmean(kb for _, kb in series[:width]) / 1024
        last = statistics.fmean(kb for _, kb in series[-width:]) / 1024
        out[name] = {"samples": len(series), "warmup_s": warm,
                     "first_mb": round(first, 1), "last_mb": round(last, 1),
                     "peak_mb": round(max(kb for _, kb in series) / 1024, 1),
                     "growth_percent": round(100 * (last - first) / first, 2),
                     "series_mb": [[round(t, 1), round(kb / 1024, 1)] for t, kb in series]}
    return out


def soak_phase(bench: Bench, opts: Options, say: Any) -> dict[str, Any]:
    db = databases.sqlite(bench.workdir / "soak.db", "SQLite")
    secrets = {"bench": bench.make_key(db),
               "limited": bench.make_key(db, "limited", "1000000", "--rpm", "30"),
               "broke": bench.make_key(db, "broke", "0"),
               "bad": "tm-" + "x" * 43}
    server = bench.start_gateway(opts.workers, db=db, probe=True)
    config = {"addr": list(server.addr), "seconds": opts.soak_seconds, "rate": opts.soak_rate,
              "workers": 24, "kinds": _kinds(bench, server.addr, opts, secrets)}
    config_path = bench.workdir / "traffic.json"
    report_path = bench.workdir / "traffic-report.json"
    config_path.write_text(json.dumps(config))
    lane = mix(bench, server.addr, opts, secrets["bench"])
    pool = [load.HttpConn(server.addr) for _ in range(2)]
    load.timed_mix(server.addr, lane, 2.0, pool=pool)   # warm the workers the lane uses
    watched = {"master": server.proc.pid,
               **{f"worker {i + 1}": pid for i, pid in enumerate(server.pids)}}
    say(f"soak: {opts.soak_seconds:g} s of mixed traffic at ~{opts.soak_rate:g} req/s "
        "plus the fast lane ...")
    traffic = bench.procs.start("traffic", [sys.executable, "-m", "tests.bench.traffic",
                                            str(config_path), str(report_path)],
                                env=dict(os.environ), log=bench.workdir / "traffic.log",
                                cwd=ROOT)
    began, wall0 = time.monotonic(), time.time()
    cpu0 = {name: cpu_seconds(pid) for name, pid in watched.items()}
    machine0 = machine_cpu()
    rss: list[tuple[float, dict[str, int]]] = []
    next_sample = [0.0]

    def sample() -> None:
        now = time.monotonic() - began
        if now >= next_sample[0]:
            next_sample[0] = now + opts.soak_sample_seconds
            rss.append((now, {name: rss_kb(pid) for name, pid in watched.items()}))

    result = load.Result()
    with StealSampler() as steal:
        samples = load.timed_mix(server.addr, lane, opts.soak_seconds, result=result,
                                 between=sample, pool=pool)
    for conn in pool:
        conn.close()
    traffic.wait(timeout=180)
    elapsed = time.monotonic() - began
    wall1 = time.time()
    cpu = {name: round(100 * (cpu_seconds(pid) - cpu0[name]) / elapsed, 1)
           for name, pid in watched.items()}
    cpu.update(machine_shares(machine0, elapsed))
    time.sleep(2.0)   # hung-up streams and retries still settling
    say("soak: checking the ledger ...")
    ledger = ledger_check.check(db, ["bench", "limited", "broke"])
    cli = {}
    for name in ("limited", "broke"):
        try:
            cli[name] = json.loads(bench.tokmodel("accounts", "audit", name, "--json", db=db))
        except (RuntimeError, ValueError) as exc:
            cli[name] = {"ok": False, "error": str(exc)[:500]}
    restarted = sorted(set(server.pids) - set(children(server.proc.pid)))
    bench.procs.stop(server.proc)
    # its logs are judged here: the upstream failures it asks for are logged as 5xx answers
    bench.logs.remove(server.log)
    bench.access_logs.remove(server.stdout)
    try:
        traffic_report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        traffic_report = {"error": f"no traffic report: {exc}"}
    memory = _memory(rss, opts.soak_seconds)
    growths = [m["growth_percent"] for name, m in memory.items()
               if name.startswith("worker") and m.get("growth_percent") is not None]
    pauses = probes.gc_pauses(server.probe_dir, server.pids, wall0, wall1)
    return {
        "seconds": opts.soak_seconds, "rate": opts.soak_rate, "target": TARGET,
        "traffic": traffic_report,
        "fast_lane": {"kinds": latency.by_kind(samples),
                      "slowest": steal.annotate(latency.slowest(samples)),
                      "errors": dict(result.errors), "error_samples": result.samples},
        "memory": memory, "max_growth_percent": max(growths) if growths else None,
        "gc": probes.gc_summary(pauses),
        "gc_overlap": probes.overlap(samples, wall0, pauses),
        "hub": probes.hub_summary(probes.hub_blocks(server.probe_dir, server.pids, wall0,
                                                    wall1)),
        "ledger": ledger, "cli_audit": cli, "workers_restarted": restarted,
        "gateway_log": log_trouble([server.log]),
        "access_log": access_log_lines([server.stdout]),
        "cpu_percent": cpu,
    }
