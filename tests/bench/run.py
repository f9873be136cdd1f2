"""The benchmark run: start the fast fake upstream and the real gateway, measure, stop.

Contract
--------
`run(opts, workdir, procs) -> dict` performs, in order, and returns the JSON-ready results.
Three servers answer the same non-streaming chat request: the fast fake upstream ("direct"),
the real gateway (`tokmodel serve`, `opts.workers` workers, metrics and access log as it
ships them: its stdout, the access log, goes to a file that is counted afterwards), and the
bare passthrough (tests.bench.passthrough: one Bearer check and a requests.Session, served by
the same `tokmodel serve` code path with the same gunicorn settings and worker count).
1. latency at concurrency 1: `opts.requests` requests on one keep-alive connection (after
   `opts.warmup`) to each of the three; p50/p99 and the gateway's added latency;
2. throughput at concurrency `opts.concurrency`: `opts.rounds` interleaved rounds of
   `opts.duration` s each (gateway, passthrough, direct, gateway, passthrough, direct, ...),
   every non-200 or failed exchange counted, the CPU each process used; the per-side
   figures are medians over the rounds and `ratio_to_passthrough` (the gateway's req/s over
   the passthrough's) is the median of the per-round ratios (likewise `ratio_to_direct`);
3. `opts.streams` concurrent streaming requests through a gateway with ONE worker while the
   upstream sends one chunk every `opts.stream_interval` s for `opts.stream_seconds` s; how
   many ended with `data: [DONE]`, and the peak RSS of the worker and the master;
4. hot-path costs in-process (tests.bench.hot; an error there is reported, not fatal);
(only the parts named in `opts.parts`), plus a ledger check on the bench database
(outstanding holds, usage rows by status), the gateway log's warnings/errors, how many
access-log lines the gateway wrote and whether GET /metrics answered. CPU use of every
process is sampled from /proc around each run, with what other processes on the machine used
meanwhile, so a noisy run can be recognised. Every process is started through `procs` (a
`Procs`), which stops them whatever happens; the databases live in `workdir`. The harness
reaches the gateway only over HTTP and through the `tokmodel` command line (accounts, keys,
serve), so it does not depend on runtime internals.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import hot, load
from tests.bench.passthrough import SETTINGS_MARK
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
    rounds: int = 3
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
        self.access_logs: list[Path] = []
        self.passthrough_log = workdir / "passthrough.log"
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

    def tokmodel(self, *args: str) -> str:
        """Run the `tokmodel` command line on the bench database; return its stdout."""
        done = subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=ROOT,
                              env=gateway_env(self.db_url, self.upstream_port),
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"tokmodel {' '.join(args)} failed ({done.returncode}):\n"
                               + done.stderr[-2000:])
        return done.stdout

    def make_key(self) -> None:
        self.tokmodel("accounts", "create", "bench", "--credits", "1000000000")
        self.secret = self.tokmodel("keys", "create", "--account", "bench",
                                    "--name", "bench").strip().splitlines()[-1].strip()

    def _start_server(self, name: str, argv: list[str], env: dict[str, str], ready: str,
                      workers: int, log: Path, stdout: Path | None = None,
                      ) -> tuple[Any, tuple[str, int], list[int]]:
        port = free_port()
        proc = self.procs.start(name, [*argv, "--host", HOST, "--port", str(port),
                                       "--workers", str(workers)],
                                env=env, log=log, cwd=ROOT, stdout=stdout)
        addr = (HOST, port)
        wait_http(addr, ready, proc, log)
        deadline = time.monotonic() + 30
        pids = children(proc.pid)
        while len(pids) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = children(proc.pid)
        if len(pids) < workers:
            raise RuntimeError(f"{name} has {len(pids)} of {workers} workers")
        return proc, addr, pids

    def start_gateway(self, workers: int) -> tuple[Any, tuple[str, int], list[int]]:
        """`tokmodel serve` as shipped; its stdout (the access log) goes to a file."""
        n = len(self.logs) + 1
        log = self.workdir / f"gateway-{n}-{workers}w.log"
        self.logs.append(log)
        self.access_logs.append(self.workdir / f"gateway-{n}-{workers}w.stdout")
        return self._start_server(
            "gateway", [sys.executable, "-m", "runtime.cli", "serve"],
            gateway_env(self.db_url, self.upstream_port), "/readyz", workers, log,
            stdout=self.access_logs[-1])

    def start_passthrough(self, workers: int) -> tuple[Any, tuple[str, int], list[int]]:
        """The bare passthrough under `tokmodel serve`'s gunicorn settings, on its own
        database and metrics directory so that it can never touch the gateway's."""
        self.passthrough_log = self.workdir / f"passthrough-{workers}w.log"
        env = gateway_env(f"sqlite:///{self.workdir / 'passthrough.db'}", self.upstream_port)
        env.update(BENCH_PASSTHROUGH_UPSTREAM=f"http://{HOST}:{self.upstream_port}/v1",
                   BENCH_PASSTHROUGH_KEY=self.secret,
                   PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "passthrough-metrics"))
        (self.workdir / "passthrough-metrics").mkdir(exist_ok=True)
        return self._start_server(
            "passthrough", [sys.executable, "-m", "tests.bench.passthrough"], env, "/ready",
            workers, self.passthrough_log)

    def passthrough_settings(self) -> dict[str, Any]:
        try:
            for line in self.passthrough_log.read_text(errors="replace").splitlines():
                if line.startswith(SETTINGS_MARK):
                    return json.loads(line[len(SETTINGS_MARK):])
        except (OSError, ValueError):
            pass
        return {}

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
    """Outstanding holds and usage rows by status, read from the database file (the sum of
    held amounts in whatever unit column the holds table has)."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(holds)")]
        amount = next((c for c in columns if c.startswith("amount")), None)
        total = f"coalesce(sum({amount}), 0)" if amount else "0"
        holds = db.execute(f"SELECT count(*), {total} FROM holds").fetchone()
        rows = db.execute("SELECT status, count(*) FROM usage_log GROUP BY status").fetchall()
    return {"outstanding_holds": holds[0], "outstanding_hold_amount": holds[1],
            "outstanding_hold_unit": amount or "",
            "usage_rows_by_status": {str(s): n for s, n in rows}}


_NOISE = re.compile(r"\[INFO\]")
_TROUBLE = re.compile(r"Traceback|ERROR|CRITICAL|WARNING|Exception|Error|SIGKILL|timeout",
                      re.IGNORECASE)


def _json_record(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _record_trouble(record: dict[str, Any]) -> bool:
    """A structured log line is trouble when it says so (level) or records a 5xx."""
    level = str(record.get("level") or record.get("levelname") or "").lower()
    if level in ("warning", "warn", "error", "critical", "fatal"):
        return True
    status = record.get("status")
    return isinstance(status, int) and status >= 500


def log_trouble(paths: list[Path], limit: int = 40) -> dict[str, Any]:
    """Warning/error lines of the gateway logs: how many, and the first `limit` of them.
    JSON lines (structured or access-log records) count only when their level is a warning
    or worse or their status a 5xx; other lines when they look like trouble."""
    lines: list[str] = []
    count = 0
    for path in paths:
        try:
            handle = path.open(errors="replace")
        except OSError:
            continue
        with handle:
            for line in handle:
                line = line.rstrip("\n")
                record = _json_record(line)
                bad = (_record_trouble(record) if record is not None
                       else bool(_TROUBLE.search(line)) and not _NOISE.search(line))
                if bad:
                    count += 1
                    if len(lines) < limit:
                        lines.append(f"{path.name}: {line[:300]}")
    return {"lines": count, "excerpt": lines}


def access_log_lines(paths: list[Path]) -> dict[str, int]:
    """Lines the gateway wrote on stdout (its access log): all, and those that are JSON."""
    total = records = 0
    for path in paths:
        try:
            with path.open(errors="replace") as handle:
                for line in handle:
                    total += 1
                    records += _json_record(line.strip()) is not None
        except OSError:
            continue
    return {"lines": total, "json_lines": records}


def metrics_probe(addr: tuple[str, int]) -> dict[str, Any]:
    """GET /metrics on the gateway: status and how many sample lines it exposed."""
    conn = load.HttpConn(addr)
    try:
        resp = conn.roundtrip(load.build_get(addr[0], addr[1], "/metrics"))
    except (OSError, ValueError) as exc:
        return {"status": None, "error": str(exc)}
    finally:
        conn.close()
    text = resp.body.decode(errors="replace")
    samples = [x for x in text.splitlines() if x and not x.startswith("#")]
    return {"status": resp.status, "samples": len(samples) if resp.status == 200 else 0}


PARTS = ("latency", "throughput", "streams", "hot")
SIDES = ("gateway", "passthrough", "direct")


def _median_side(rounds: list[dict[str, Any]], side: str) -> dict[str, Any]:
    runs = [r[side] for r in rounds]
    kinds: dict[str, int] = {}
    for run_ in runs:
        for kind, n in run_["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + n
    cpu_keys = list(dict.fromkeys(k for run_ in runs for k in run_["cpu_percent"]))
    return {
        "rps": round(statistics.median(x["rps"] for x in runs), 1),
        "rps_rounds": [x["rps"] for x in runs],
        "ok": sum(x["ok"] for x in runs), "errors": sum(x["errors"] for x in runs),
        "error_kinds": kinds,
        "error_samples": [s for x in runs for s in x["error_samples"]][:5],
        "seconds": round(statistics.fmean(x["seconds"] for x in runs), 2),
        "p50_ms": round(statistics.median(x["p50_ms"] for x in runs), 3),
        "p99_ms": round(statistics.median(x["p99_ms"] for x in runs), 3),
        "cpu_percent": {k: round(statistics.fmean(x["cpu_percent"].get(k, 0.0)
                                                  for x in runs), 1) for k in cpu_keys},
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def throughput_phase(opts: Options, targets: dict[str, tuple[tuple[str, int], bytes, dict]],
                     say: Any) -> dict[str, Any]:
    """Interleaved rounds: each round runs every side in SIDES order for opts.duration s."""
    rounds: list[dict[str, Any]] = []
    for i in range(max(1, opts.rounds)):
        say(f"throughput round {i + 1}/{opts.rounds}: " + ", ".join(SIDES)
            + f", {opts.duration:g} s each at concurrency {opts.concurrency} ...")
        one: dict[str, Any] = {}
        for side in SIDES:
            addr, request, pids = targets[side]
            result, cpu = _cpu_share(pids, lambda a=addr, r=request: load.concurrent(
                a, r, opts.concurrency, opts.duration))
            one[side] = {**_throughput(result), "cpu_percent": cpu}
        one["ratio_to_passthrough"] = _ratio(one["gateway"]["rps"], one["passthrough"]["rps"])
        one["ratio_to_direct"] = _ratio(one["gateway"]["rps"], one["direct"]["rps"])
        rounds.append(one)
    tp: dict[str, Any] = {"concurrency": opts.concurrency, "workers": opts.workers,
                          "rounds": len(rounds), "order": list(SIDES)}
    for side in SIDES:
        tp[side] = _median_side(rounds, side)
    tp["ratio_to_passthrough"] = round(statistics.median(
        r["ratio_to_passthrough"] for r in rounds), 3)
    tp["ratio_to_passthrough_rounds"] = [r["ratio_to_passthrough"] for r in rounds]
    tp["ratio_to_direct"] = round(statistics.median(r["ratio_to_direct"] for r in rounds), 3)
    tp["per_round"] = [{side: {k: r[side][k] for k in ("rps", "errors", "p50_ms", "p99_ms",
                                                        "cpu_percent")} for side in SIDES}
                       for r in rounds]
    return tp


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
        say(f"starting the gateway and the bare passthrough, {opts.workers} workers each")
        gateway, gw_addr, worker_pids = bench.start_gateway(opts.workers)
        passthrough, pt_addr, pt_pids = bench.start_passthrough(opts.workers)
        out["gunicorn_settings"] = bench.passthrough_settings()
        direct_req, gw_req, pt_req = bench.chat(upstream), bench.chat(gw_addr), \
            bench.chat(pt_addr)
        load.concurrent(gw_addr, gw_req, opts.concurrency, 1.5)  # warm every worker
        load.concurrent(pt_addr, pt_req, opts.concurrency, 1.5)
        up_pids = {"upstream": bench.upstream_pid}
        pids = {**up_pids, "gateway master": gateway.pid,
                **{f"gateway worker {i + 1}": pid for i, pid in enumerate(worker_pids)}}
        pt_all = {**up_pids, "passthrough master": passthrough.pid,
                  **{f"passthrough worker {i + 1}": pid for i, pid in enumerate(pt_pids)}}
        targets = {"gateway": (gw_addr, gw_req, pids),
                   "passthrough": (pt_addr, pt_req, pt_all),
                   "direct": (upstream, direct_req, up_pids)}

    if "latency" in parts:  # 1. latency at concurrency 1
        say("latency at concurrency 1: " + ", ".join(SIDES) + " ...")
        lat: dict[str, Any] = {}
        for side in SIDES:
            addr, request, side_pids = targets[side]
            result, cpu = _cpu_share(side_pids, lambda a=addr, r=request: load.sequential(
                a, r, opts.requests, opts.warmup))
            lat[side] = {**_latency(result), "cpu_percent": cpu}
        for base in ("direct", "passthrough"):
            for q in ("p50", "p99"):
                lat[f"added_{q}_ms" + ("" if base == "direct" else "_vs_passthrough")] = round(
                    lat["gateway"][f"{q}_ms"] - lat[base][f"{q}_ms"], 3)
        out["latency"] = lat

    if "throughput" in parts:  # 2. throughput at concurrency N, interleaved rounds
        out["throughput"] = throughput_phase(opts, targets, say)

    if {"latency", "throughput"} & set(parts):
        out["metrics_endpoint"] = metrics_probe(gw_addr)
        out["workers_restarted"] = sorted(set(worker_pids) - set(children(gateway.pid)))
        out["passthrough_workers_restarted"] = sorted(set(pt_pids)
                                                      - set(children(passthrough.pid)))
        procs.stop(passthrough)
        procs.stop(gateway)

    if "streams" in parts:  # 3. concurrent slow streams on one worker
        say(f"{opts.streams} concurrent streams on one worker, ~{opts.stream_seconds} s ...")
        out["streams"] = streams_phase(bench, opts)

    if bench.logs:
        out["ledger"] = ledger(bench.db_path)
        out["gateway_log"] = log_trouble(bench.logs + bench.access_logs)
        out["access_log"] = access_log_lines(bench.access_logs)
    procs.stop_all()

    if "hot" in parts:  # 4. hot path, with nothing else running
        say("hot-path costs in-process ...")
        try:
            out["hot_path_us"] = hot.measure(workdir, opts.hot_iterations)
        except Exception as exc:  # in-process internals may move: report, do not abort
            out["hot_path_error"] = f"{type(exc).__name__}: {exc}"
            say(f"hot-path part failed: {out['hot_path_error']}")
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
