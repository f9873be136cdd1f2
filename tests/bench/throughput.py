"""Throughput at concurrency N: interleaved rounds of the gateway, the bare passthrough and
the direct upstream, non-streamed (`throughput`) or as fast 20-chunk streams (`stream-rate`).

Contract
--------
`rounds_phase(targets, concurrency, duration, rounds, say, stream=False, label=...)` runs
`rounds` rounds; each round runs every side of SIDES present in `targets` ({side: (addr,
request bytes, {process name: pid})}) for `duration` s at `concurrency`, in SIDES order and
in the reverse order every other round, so that no side always runs first or always follows
the same one
(`load.concurrent`; with `stream` an answer counts only with its `data: [DONE]`), and
samples every named process's CPU use (% of one core) plus the load generator's, what
other processes on the machine used meanwhile and what the hypervisor gave to other machines
(steal). Returns {"concurrency", "rounds", "order",
side: median figures over the rounds (rps, rps_rounds, ok, errors, error_kinds,
error_samples, seconds, p50_ms, p99_ms, cpu_percent), "ratio_to_passthrough" and
"ratio_to_direct" (medians of the per-round ratios of the gateway's req/s), their per-round
lists and "per_round"}. A side missing from `targets` is left out (its ratio is 0).
`cpu_share(pids, fn)` is the sampler on its own.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

from tests.bench import load
from tests.bench.latency import percentile
from tests.bench.procs import cpu_seconds, machine_cpu

# baseline: --baseline DIR; reference: ../shared/bench's passthrough (--reference DIR)
SIDES = ("gateway", "baseline", "passthrough", "reference", "direct")


def round_order(sides: list[str], n: int) -> list[str]:
    """The sides in round `n` (from 0) of interleaved rounds: as given, reversed every other
    round."""
    return sides if n % 2 == 0 else sides[::-1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _throughput(result: load.Result) -> dict[str, Any]:
    return {"rps": round(result.ok / result.elapsed, 1) if result.elapsed else 0.0,
            "ok": result.ok, "errors": result.error_count, "error_kinds": dict(result.errors),
            "error_samples": result.samples, "seconds": round(result.elapsed, 2),
            "p50_ms": _ms(percentile(result.latencies, 0.50)),
            "p99_ms": _ms(percentile(result.latencies, 0.99))}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_share(pids: dict[str, int], fn: Any) -> tuple[Any, dict[str, float]]:
    """Run fn(); return its result and each process's CPU use in % of one core, plus what
    every other process on the machine used meanwhile ("other processes")."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = _self_cpu()
    machine = machine_cpu()
    t0 = time.monotonic()
    out = fn()
    wall = time.monotonic() - t0
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used["load generator"] = _self_cpu() - own
    after = machine_cpu()
    other = after.busy - machine.busy - sum(used.values())
    share = {name: round(100 * v / wall, 1) for name, v in used.items()}
    share["other processes"] = round(max(0.0, 100 * other / wall), 1)
    share["stolen by the hypervisor"] = round(100 * (after.stolen - machine.stolen) / wall, 1)
    return out, share


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


def rounds_phase(targets: dict[str, tuple[tuple[str, int], bytes, dict[str, int]]],
                 concurrency: int, duration: float, rounds: int, say: Any,
                 stream: bool = False, label: str = "throughput") -> dict[str, Any]:
    sides = [side for side in SIDES if side in targets]
    bases = ["passthrough", "direct",
             *(side for side in ("reference", "baseline") if side in sides)]
    done: list[dict[str, Any]] = []
    for i in range(max(1, rounds)):
        order = round_order(sides, i)
        say(f"{label} round {i + 1}/{rounds}: " + ", ".join(order)
            + f", {duration:g} s each at concurrency {concurrency} ...")
        one: dict[str, Any] = {}
        for side in order:
            addr, request, pids = targets[side]
            result, cpu = cpu_share(pids, lambda a=addr, r=request: load.concurrent(
                a, r, concurrency, duration, stream=stream))
            one[side] = {**_throughput(result), "cpu_percent": cpu}
        gateway = one["gateway"]["rps"]
        for base in bases:
            one[f"ratio_to_{base}"] = _ratio(gateway, one.get(base, {}).get("rps", 0))
        done.append(one)
    out: dict[str, Any] = {"concurrency": concurrency, "rounds": len(done),
                           "order": sides, "order_reversed_every_other_round": True}
    for side in sides:
        out[side] = _median_side(done, side)
    for base in bases:
        out[f"ratio_to_{base}"] = round(statistics.median(
            r[f"ratio_to_{base}"] for r in done), 3)
        out[f"ratio_to_{base}_rounds"] = [r[f"ratio_to_{base}"] for r in done]
    out["per_round"] = [{side: {k: r[side][k] for k in ("rps", "errors", "p50_ms", "p99_ms",
                                                         "cpu_percent")} for side in sides}
                        for r in done]
    return out
