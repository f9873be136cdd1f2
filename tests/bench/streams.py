"""Slow concurrent streams held by one gateway worker: how many complete, and the worker's
memory while they are open.

Contract
--------
`streams_phase(bench, opts, say)` starts a gateway with ONE worker (gunicorn's
worker_connections set to `opts.worker_connections` when non-zero: see servers.Bench), opens
`opts.streams` streaming requests spread over a ramp (2 s, or 1 s per RAMP_RATE streams
when more) while the upstream sends one chunk every `opts.stream_interval` s for
`opts.stream_seconds` s, and reads each to its end. Returns {"requested",
"completed_with_done", "errors", "error_samples", "open_peak", "events_received",
"chunk_interval_s", "stream_seconds", "duration_p50_s", "duration_max_s",
"first_byte_p50_ms", "first_byte_p99_ms", "worker_rss_mb" {before, peak, after,
open_streams_at_peak}, "master_rss_mb", "worker_cpu_seconds", "machine_busy_percent",
"worker_restarted", "elapsed_s", "worker_connections" {requested, configurable (whether
`tokmodel serve` has an option for it), how}, "upstream_pool_discards" (urllib3's
"Connection pool is full" warnings in the gateway log)}. The gateway is stopped at the end.
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench import load
from tests.bench.latency import percentile
from tests.bench.options import Options
from tests.bench.procs import children, cpu_seconds, machine_cpu, rss_kb
from tests.bench.servers import Bench, serve_has_worker_connections

# streams opened per second: opening one (authenticate, hold, connect upstream) costs the
# worker a few ms of CPU, so a faster ramp measures the queue in front of it instead
RAMP_RATE = 250


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def streams_phase(bench: Bench, opts: Options, say: Any = print) -> dict[str, Any]:
    import gevent

    server = bench.start_gateway(1, connections=opts.worker_connections)
    gateway, addr, worker = server.proc, server.addr, server.pids[0]
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
    machine0, wall0 = machine_cpu().busy, time.monotonic()
    request = bench.chat(addr, stream=True)
    expected = opts.stream_seconds * opts.stream_interval
    try:
        ramp = max(2.0, opts.streams / RAMP_RATE)
        load.streams(addr, request, opts.streams, ramp_seconds=ramp,
                     max_seconds=expected + 60 + ramp, result=result)
    finally:
        running = False
        sampler.join(timeout=2)
    worker_cpu = cpu_seconds(worker) - cpu0
    machine_busy = (machine_cpu().busy - machine0) / (time.monotonic() - wall0)
    gevent.sleep(0.5)
    after = rss_kb(worker)
    restarted = worker not in children(gateway.pid)
    bench.procs.stop(gateway)
    try:
        discards = server.log.read_text(errors="replace").count("Connection pool is full")
    except OSError:
        discards = 0
    configurable = serve_has_worker_connections()
    return {
        "worker_connections": {
            "requested": opts.worker_connections or None, "configurable": configurable,
            "how": ("tokmodel serve --worker-connections" if configurable else
                    "not configurable (serve() takes connections=2000 but the command does "
                    "not pass it): set through tests.bench.served")
            if opts.worker_connections else "the gateway's default"},
        "upstream_pool_discards": discards,
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
