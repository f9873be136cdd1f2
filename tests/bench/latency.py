"""Latency figures of a timed run: percentiles, the largest stall, the worst 1-second window.

Contract
--------
- `Sample(t, seconds, kind, ok)`: one request that started `t` seconds after the run began
  and took `seconds` (to the last byte of its answer); `kind` names the request's kind
  ("plain", "stream", ...); `ok` whether the answer was the expected one.
- `percentile(values, q)`: nearest-rank percentile (q in 0..1), 0.0 for no values.
- `summary(samples, window=1.0)` -> JSON-ready dict in milliseconds: n, errors, p50, p99,
  p999, max, mean, `max_at_s` (when the slowest request started), `over_10ms`,
  `over_50ms` (counts), and `worst_window`: of the `window`-second slices of the run
  (by start time, aligned to its beginning, only slices with requests), the one with the
  highest mean latency, as {at_s, n, mean_ms, max_ms} (at concurrency 1 the slice where the
  fewest requests got through).
- `by_kind(samples)` -> {kind: summary} for every kind present, plus "all".
- `slowest(samples, n)` -> the n slowest samples, slowest first, as JSON-ready dicts.
Pure functions; failed samples count in `errors` and are left out of the figures.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, NamedTuple


class Sample(NamedTuple):
    t: float
    seconds: float
    kind: str
    ok: bool


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def worst_window(samples: list[Sample], window: float = 1.0) -> dict[str, Any]:
    slices: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        slices[int(s.t // window)].append(s.seconds)
    if not slices:
        return {"at_s": 0.0, "n": 0, "mean_ms": 0.0, "max_ms": 0.0}
    index, values = max(slices.items(), key=lambda item: statistics.fmean(item[1]))
    return {"at_s": round(index * window, 1), "n": len(values),
            "mean_ms": _ms(statistics.fmean(values)), "max_ms": _ms(max(values))}


def summary(samples: list[Sample], window: float = 1.0) -> dict[str, Any]:
    good = [s for s in samples if s.ok]
    values = [s.seconds for s in good]
    slowest = max(good, key=lambda s: s.seconds, default=None)
    return {
        "n": len(good), "errors": len(samples) - len(good),
        "p50_ms": _ms(percentile(values, 0.50)), "p99_ms": _ms(percentile(values, 0.99)),
        "p999_ms": _ms(percentile(values, 0.999)),
        "max_ms": _ms(slowest.seconds) if slowest else 0.0,
        "max_at_s": round(slowest.t, 2) if slowest else 0.0,
        "mean_ms": _ms(statistics.fmean(values)) if values else 0.0,
        "over_10ms": sum(v > 0.010 for v in values),
        "over_50ms": sum(v > 0.050 for v in values),
        "worst_window": worst_window(good, window),
    }


def by_kind(samples: list[Sample], window: float = 1.0) -> dict[str, dict[str, Any]]:
    kinds = sorted({s.kind for s in samples})
    out = {kind: summary([s for s in samples if s.kind == kind], window) for kind in kinds}
    if len(kinds) > 1:
        out["all"] = summary(samples, window)
    return out


def slowest(samples: list[Sample], n: int = 10) -> list[dict[str, Any]]:
    top = sorted((s for s in samples if s.ok), key=lambda s: -s.seconds)[:n]
    return [{"at_s": round(s.t, 3), "ms": _ms(s.seconds), "kind": s.kind} for s in top]
