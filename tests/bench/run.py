"""The benchmark run: start the fast fake upstream and the real gateway, measure, stop.

Contract
--------
`run(opts, workdir, procs) -> dict` performs, in order, and returns the JSON-ready results:
1. latency at concurrency 1: `opts.requests` non-streaming chat completions on one keep-alive
   connection (after `opts.warmup`), directly to the upstream and through the gateway with
   `opts.workers` workers; p50/p99 of each and the difference;
2. throughput at concurrency `opts.concurrency` for `opts.duration` s, direct and through the
   same gateway, with every non-200 or failed exchange counted, and the CPU each process used;
3. `opts.streams` concurrent streaming requests through a gateway with ONE worker while the
   upstream sends one chunk every `opts.stream_interval` s for `opts.stream_seconds` s; how
   many ended with `data: [DONE]`, and the peak RSS of the worker and the master;
4. hot-path costs in-process (tests.bench.hot);
(only the parts named in `opts.parts`), plus a ledger check on the bench database
(outstanding holds, usage rows by status) and the gateway log's warnings/errors. CPU use of
every process is sampled from /proc around each run, with what other processes on the machine
used meanwhile, so a noisy run can be recognised. Every process is started through `procs`
(a `Procs`), which stops them whatever happens; the database lives in `workdir`.
"""

from __future__ import annotations

import math
import os
import re
import resource
import sqlite3
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import hot, load
from tests.bench.procs import (
    Procs,
    busy_cpu_seconds,
    children,
    cpu_seconds,
    free_port,
    rss_kb,
    wait_http,
)

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
MODEL = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hi"}]


@dataclass
class Options:
    requests: int = 2000
    warmup: int = 200
    duration: float = 10.0
    concurrency: int = 64
    streams: int = 1000
    stream_seconds: int = 15
    stream_interval: float = 1.0
    workers: int = 2
    upstream_workers: int = 1
    hot_iterations: int = 2000
    parts: tuple[str, ...] = ("latency", "throughput", "streams", "hot")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def gateway_env(db_url: str, upstream_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.endswith("_API_KEY") or k.endswith("_BASE_URL")
                   or k.startswith("TOKMODEL_"))}
    env.update(TOKMODEL_DATABASE_URL=db_url, PYTHONUNBUFFERED="1",
               OPENAI_BASE_URL=f"http://{HOST}:{upstream_port}/v1",
               OPENAI_API_KEY="sk-bench-upstream")
    return env


class Bench:
    def __init__(self, opts: Options, workdir: Path, procs: Procs) -> None:
        self.opts = opts
        self.workdir = workdir
        self.procs = procs
        self.db_path = workdir / "bench.db"
        self.db_url = f"sqlite:///{self.db_path}"
        self.logs: list[Path] = []
        self.secret = ""
        self.upstream_port = 0

    # processes

    def start_upstream(self) -> tuple[str, int]:
        port = free_port()
        log = self.workdir / "upstream.log"
        proc = self.procs.start(
            "upstream",
            [sys.executable, "-m", "tests.bench.upstream", "--port", str(port),
             "--workers", str(self.opts.upstream_workers),
             "--chunks", str(self.opts.stream_seconds),
             "--delay", str(self.opts.stream_interval)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, log=log, cwd=ROOT)
        wait_http((HOST, port), "/v1/models", proc, log)
        self.upstream_pid = proc.pid
        self.upstream_port = port
        return HOST, port

    def make_key(self) -> None:
        from runtime.store import open_store

        store = open_store(self.db_url)
        try:
            store.create_account("bench", 10**15)  # a billion credits
            _, self.secret = store.create_key("bench", "bench")
        finally:
            store.close()

    def start_gateway(self, workers: int) -> tuple[Any, tuple[str, int], list[int]]:
        port = free_port()
        log = self.workdir / f"gateway-{workers}w-{port}.log"
        self.logs.append(log)
        proc = self.procs.start(
            "gateway",
            [sys.executable, "-m", "runtime.cli", "serve", "--host", HOST, "--port", str(port),
             "--workers", str(workers)],
            env=gateway_env(self.db_url, self.upstream_port), log=log, cwd=ROOT)
        addr = (HOST, port)
        wait_http(addr, "/readyz", proc, log)
        deadline = time.monotonic() + 30
        pids = children(proc.pid)
        while len(pids) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = children(proc.pid)
        if len(pids) < workers:
            raise RuntimeError(f"gateway has {len(pids)} of {workers} workers")
        return proc, addr, pids

    # requests

    def chat(self, addr: tuple[str, int], stream: bool = False) -> bytes:
        body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return load.build_request(addr[0], addr[1], "/v1/chat/completions", body,
                                  {"Authorization": f"Bearer {self.secret}"})


def _latency(result: load.Result) -> dict[str, Any]:
    return {"p50_ms": _ms(percentile(result.latencies, 0.50)),
            "p99_ms": _ms(percentile(result.latencies, 0.99)),
            "mean_ms": _ms(sum(result.latencies) / max(1, len(result.latencies))),
            "requests": len(result.latencies), "ok": result.ok,
            "errors": dict(result.errors), "error_samples": result.samples}


def _throughput(result: load.Result) -> dict[str, Any]:
    return {"rps": round(result.ok / result.elapsed, 1) if result.elapsed else 0.0,
            "ok": result.ok, "errors": result.error_count, "error_kinds": dict(result.errors),
            "error_samples": result.samples, "seconds": round(result.elapsed, 2),
            "p50_ms": _ms(percentile(result.latencies, 0.50)),
            "p99_ms": _ms(percentile(result.latencies, 0.99))}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_share(pids: dict[str, int], fn: Any) -> tuple[Any, dict[str, float]]:
    """Run fn(); return its result and each process's CPU use in % of one core, plus what
    every other process on the machine used meanwhile ("other processes")."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = _self_cpu()
    machine = busy_cpu_seconds()
    t0 = time.monotonic()
    out = fn()
    wall = time.monotonic() - t0
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used["load generator"] = _self_cpu() - own
    other = busy_cpu_seconds() - machine - sum(used.values())
    share = {name: round(100 * v / wall, 1) for name, v in used.items()}
    share["other processes"] = round(max(0.0, 100 * other / wall), 1)
    return out, share


def ledger(db_path: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        holds = db.execute(
            "SELECT count(*), coalesce(sum(amount_micro), 0) FROM holds").fetchone()
        rows = db.execute("SELECT status, count(*) FROM usage_log GROUP BY status").fetchall()
    return {"outstanding_holds": holds[0], "outstanding_hold_micro": holds[1],
            "usage_rows_by_status": {str(s): n for s, n in rows}}


_NOISE = re.compile(r"\[INFO\]")
_TROUBLE = re.compile(r"Traceback|ERROR|CRITICAL|WARNING|Exception|Error|SIGKILL|timeout",
                      re.IGNORECASE)


def log_trouble(paths: list[Path], limit: int = 40) -> dict[str, Any]:
    """Warning/error lines of the gateway logs: how many, and the first `limit` of them."""
    lines: list[str] = []
    count = 0
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if _TROUBLE.search(line) and not _NOISE.search(line):
                count += 1
                if len(lines) < limit:
                    lines.append(f"{path.name}: {line[:300]}")
    return {"lines": count, "excerpt": lines}


PARTS = ("latency", "throughput", "streams", "hot")


def run(opts: Options, workdir: Path, procs: Procs, say: Any = print) -> dict[str, Any]:
    bench = Bench(opts, workdir, procs)
    parts = opts.parts
    before = busy_cpu_seconds()
    time.sleep(1.0)
    out: dict[str, Any] = {"busy_before_percent": round(100 * (busy_cpu_seconds() - before), 1),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if out["busy_before_percent"] > 25:
        say(f"warning: other processes keep {out['busy_before_percent']:.0f}% of one core busy:"
            " they share the cores and the figures will be noisy")
    if {"latency", "throughput", "streams"} & set(parts):
        upstream = bench.start_upstream()
        bench.make_key()
        say(f"upstream on {upstream[1]} ({opts.upstream_workers} process(es))")
    if {"latency", "throughput"} & set(parts):
        say(f"starting the gateway with {opts.workers} workers")
        gateway, gw_addr, worker_pids = bench.start_gateway(opts.workers)
        direct_req, gw_req = bench.chat(upstream), bench.chat(gw_addr)
        load.concurrent(gw_addr, gw_req, opts.concurrency, 1.5)  # warm every worker
        up_pids = {"upstream": bench.upstream_pid}
        pids = {**up_pids, "gateway master": gateway.pid,
                **{f"gateway worker {i + 1}": pid for i, pid in enumerate(worker_pids)}}

    if "latency" in parts:  # 1. latency at concurrency 1
        say("latency at concurrency 1 ...")
        direct, direct_cpu = _cpu_share(up_pids, lambda: load.sequential(
            upstream, direct_req, opts.requests, opts.warmup))
        through, gw_cpu = _cpu_share(pids, lambda: load.sequential(
            gw_addr, gw_req, opts.requests, opts.warmup))
        lat = {"direct": {**_latency(direct), "cpu_percent": direct_cpu},
               "gateway": {**_latency(through), "cpu_percent": gw_cpu}}
        lat["added_p50_ms"] = round(lat["gateway"]["p50_ms"] - lat["direct"]["p50_ms"], 3)
        lat["added_p99_ms"] = round(lat["gateway"]["p99_ms"] - lat["direct"]["p99_ms"], 3)
        out["latency"] = lat

    if "throughput" in parts:  # 2. throughput at concurrency N
        say(f"throughput at concurrency {opts.concurrency}, {opts.duration:g} s each ...")
        direct, direct_cpu = _cpu_share(up_pids, lambda: load.concurrent(
            upstream, direct_req, opts.concurrency, opts.duration))
        through, gw_cpu = _cpu_share(pids, lambda: load.concurrent(
            gw_addr, gw_req, opts.concurrency, opts.duration))
        tp = {"concurrency": opts.concurrency, "workers": opts.workers,
              "direct": {**_throughput(direct), "cpu_percent": direct_cpu},
              "gateway": {**_throughput(through), "cpu_percent": gw_cpu}}
        d_rps, g_rps = tp["direct"]["rps"], tp["gateway"]["rps"]
        tp["ratio"] = round(g_rps / d_rps, 3) if d_rps else 0.0
        out["throughput"] = tp

    if {"latency", "throughput"} & set(parts):
        out["workers_restarted"] = sorted(set(worker_pids) - set(children(gateway.pid)))
        procs.stop(gateway)

    if "streams" in parts:  # 3. concurrent slow streams on one worker
        say(f"{opts.streams} concurrent streams on one worker, ~{opts.stream_seconds} s ...")
        out["streams"] = streams_phase(bench, opts)

    if bench.logs:
        out["ledger"] = ledger(bench.db_path)
        out["gateway_log"] = log_trouble(bench.logs)
    procs.stop_all()

    if "hot" in parts:  # 4. hot path, with nothing else running
        say("hot-path costs in-process ...")
        out["hot_path_us"] = hot.measure(workdir, opts.hot_iterations)
    return out


def streams_phase(bench: Bench, opts: Options) -> dict[str, Any]:
    import gevent

    gateway, addr, pids = bench.start_gateway(1)
    worker = pids[0]
    load.sequential(addr, bench.chat(addr), 200, 0)  # warm: imports, pools, caches
    base_worker, base_master = rss_kb(worker), rss_kb(gateway.pid)
    result = load.StreamResult()
    peak = {"worker_kb": base_worker, "master_kb": base_master, "open_at_peak": 0}
    running = True

    def sample() -> None:
        deadline = time.monotonic() + opts.stream_seconds * opts.stream_interval + 120
        while running and time.monotonic() < deadline:
            w, m = rss_kb(worker), rss_kb(gateway.pid)
            if w > peak["worker_kb"]:
                peak.update(worker_kb=w, open_at_peak=result.open_now)
            peak["master_kb"] = max(peak["master_kb"], m)
            gevent.sleep(0.25)

    sampler = gevent.spawn(sample)
    cpu0 = cpu_seconds(worker)
    machine0, wall0 = busy_cpu_seconds(), time.monotonic()
    request = bench.chat(addr, stream=True)
    expected = opts.stream_seconds * opts.stream_interval
    try:
        load.streams(addr, request, opts.streams, ramp_seconds=2.0,
                     max_seconds=expected + 60, result=result)
    finally:
        running = False
        sampler.join(timeout=2)
    worker_cpu = cpu_seconds(worker) - cpu0
    machine_busy = (busy_cpu_seconds() - machine0) / (time.monotonic() - wall0)
    gevent.sleep(0.5)
    after = rss_kb(worker)
    restarted = worker not in children(gateway.pid)
    bench.procs.stop(gateway)
    return {
        "requested": opts.streams, "completed_with_done": result.ok,
        "errors": dict(result.errors), "error_samples": result.samples,
        "open_peak": result.open_peak, "events_received": result.events,
        "chunk_interval_s": opts.stream_interval, "stream_seconds": expected,
        "duration_p50_s": round(percentile(result.latencies, 0.5), 2),
        "duration_max_s": round(max(result.latencies, default=0.0), 2),
        "first_byte_p50_ms": _ms(percentile(result.first_byte, 0.5)),
        "first_byte_p99_ms": _ms(percentile(result.first_byte, 0.99)),
        "worker_rss_mb": {"before": round(base_worker / 1024, 1),
                          "peak": round(peak["worker_kb"] / 1024, 1),
                          "after": round(after / 1024, 1),
                          "open_streams_at_peak": peak["open_at_peak"]},
        "master_rss_mb": {"before": round(base_master / 1024, 1),
                          "peak": round(peak["master_kb"] / 1024, 1)},
        "worker_cpu_seconds": round(worker_cpu, 2),
        "machine_busy_percent": round(100 * machine_busy, 1),
        "worker_restarted": restarted,
        "elapsed_s": round(result.elapsed, 1),
    }
