"""Reading what tests/bench/probe recorded in the gateway's processes, to explain latency.

Contract
--------
- `gc_pauses(probe_dir, pids, t0, t1)` -> the garbage-collection pauses of those processes
  (all when `pids` is empty) that started between the epoch times t0 and t1, as dicts
  {"pid", "t", "ms", "generation", "collected"}, oldest first.
- `gc_summary(pauses)` -> {"count", "total_ms", "max_ms", "max_cpu_ms", "by_generation":
  {gen: {count, total_ms, max_ms, max_cpu_ms}}, "over_10ms"} (ms: wall; cpu_ms: the
  collection's own CPU time).
- `hub_blocks(probe_dir, pids, t0, t1)` -> gevent blocking-monitor reports in that time;
  `hub_summary(blocks)` -> {"count", "unattributed", "where": [{"frames", "count"}] }
  grouped by the innermost frames of the gateway's own code (and the innermost frame of
  all), most frequent first; "unattributed" counts reports whose stack is gevent's monitor
  itself (the loop's thread was not running Python code when sampled: descheduled, or in a
  C call).
- `overlap(samples, began, pauses, min_ms)` -> how many of the samples slower than
  `min_ms` ran while a recorded pause of that process set was under way (any worker: the
  client cannot tell which one served it): {"slow", "during_gc", "gc_ms_in_slow"}.
Files that are missing or cut short are skipped; nothing here raises on bad input.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.latency import Sample


def _records(probe_dir: Path | None, kind: str, pids: list[int], t0: float, t1: float,
             ) -> list[dict[str, Any]]:
    if probe_dir is None or not probe_dir.is_dir():
        return []
    wanted = set(pids)
    out = []
    for path in probe_dir.glob(f"{kind}-*.jsonl"):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (not wanted or record.get("pid") in wanted) and t0 <= record.get("t", 0) <= t1:
                out.append(record)
    return sorted(out, key=lambda r: r["t"])


def gc_pauses(probe_dir: Path | None, pids: list[int], t0: float, t1: float
              ) -> list[dict[str, Any]]:
    return _records(probe_dir, "gc", pids, t0, t1)


def gc_summary(pauses: list[dict[str, Any]]) -> dict[str, Any]:
    by_gen: dict[str, dict[str, Any]] = {}
    for p in pauses:
        g = by_gen.setdefault(str(p.get("generation")), {"count": 0, "total_ms": 0.0,
                                                         "max_ms": 0.0, "max_cpu_ms": 0.0})
        g["count"] += 1
        g["total_ms"] = round(g["total_ms"] + p["ms"], 2)
        g["max_ms"] = max(g["max_ms"], p["ms"])
        g["max_cpu_ms"] = max(g["max_cpu_ms"], p.get("cpu_ms", 0.0))
    return {"count": len(pauses), "total_ms": round(sum(p["ms"] for p in pauses), 2),
            "max_ms": max((p["ms"] for p in pauses), default=0.0),
            "max_cpu_ms": max((p.get("cpu_ms", 0.0) for p in pauses), default=0.0),
            "over_10ms": sum(p["ms"] > 10 for p in pauses), "by_generation": by_gen}


def hub_blocks(probe_dir: Path | None, pids: list[int], t0: float, t1: float
               ) -> list[dict[str, Any]]:
    return _records(probe_dir, "hub", pids, t0, t1)


def _where(stack: list[str]) -> str:
    own = [f for f in stack if "/runtime/" in f or "/generated/" in f]
    inner = stack[-1].rsplit("/", 1)[-1] if stack else "?"
    mine = " < ".join(f.rsplit("/runtime/", 1)[-1] for f in reversed(own[-2:]))
    return f"{inner} (in {mine})" if mine else inner


def _unattributed(stack: list[str]) -> bool:
    return not stack or "gevent/_monitor.py" in stack[-1]


def hub_summary(blocks: list[dict[str, Any]], top: int = 8) -> dict[str, Any]:
    counts = Counter(_where(b["stack"]) for b in blocks
                     if not _unattributed(b.get("stack") or []))
    return {"count": len(blocks),
            "unattributed": sum(_unattributed(b.get("stack") or []) for b in blocks),
            "where": [{"frames": w, "count": n} for w, n in counts.most_common(top)]}


def overlap(samples: list[Sample], began: float, pauses: list[dict[str, Any]],
            min_ms: float = 10.0) -> dict[str, Any]:
    slow = [s for s in samples if s.ok and s.seconds * 1000 > min_ms]
    during = 0
    gc_ms = 0.0
    for s in slow:
        start, end = began + s.t, began + s.t + s.seconds
        hit = [p for p in pauses if p["t"] < end and p["t"] + p["ms"] / 1000 > start]
        if hit:
            during += 1
            gc_ms += sum(p["ms"] for p in hit)
    return {"slow": len(slow), "during_gc": during, "gc_ms_in_slow": round(gc_ms, 1)}
