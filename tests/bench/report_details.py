"""Rendering the details behind the tails and soak rows of the report: what each run's
slowest requests coincided with (garbage-collection pauses, blocking reports, database
activity, CPU, the hypervisor's steal), and the soak's traffic by kind and memory over time.

Contract: `tails_details(tails)` and `soak_details(soak)` return Markdown lines (empty for a
missing part); pure functions of the results dicts of tests.bench.tails and
tests.bench.soak.
"""

from __future__ import annotations

from typing import Any


def _gc(sc: dict[str, Any]) -> str:
    gc = sc.get("gc")
    if gc is None:
        return ""
    gens = ", ".join(f"gen{g}: {v['count']} (max {v['max_ms']:.0f} ms, "
                     f"{v.get('max_cpu_ms', 0):.0f} ms CPU)"
                     for g, v in sorted(gc["by_generation"].items()))
    ov = sc.get("gc_overlap") or {}
    return (f"gc pauses >= 2 ms in the workers: {gc['count']}"
            + (f" [{gens}]" if gens else "")
            + f"; requests > 10 ms: {ov.get('slow', 0)}, of which {ov.get('during_gc', 0)} "
            "ran during a pause")


def _hub(sc: dict[str, Any]) -> str:
    hub = sc.get("hub")
    if not hub or not hub["count"]:
        return ""
    where = "; ".join(f"{w['count']}x {w['frames']}" for w in hub["where"][:4])
    return (f"event loop blocked (gevent monitor): {hub['count']} reports, "
            f"{hub.get('unattributed', 0)} without a Python frame" + (f": {where}" if where
                                                                      else ""))


def _db(sc: dict[str, Any]) -> str:
    d = sc.get("db_stats") or {}
    if not d:
        return ""
    if "commits" in d:
        tables = d.get("tables") or {}
        vac = sum(t.get("autovacuums", 0) for t in tables.values())
        ana = sum(t.get("autoanalyzes", 0) for t in tables.values())
        return (f"PostgreSQL: {d.get('commits', 0):,} commits, {d.get('blocks_read', 0):,} "
                f"blocks read / {d.get('blocks_hit', 0):,} hit, "
                f"{d.get('wal_lsn_bytes', 0) / 1e6:.1f} MB WAL, checkpoints "
                f"{d.get('checkpoints_timed', 0)} timed + {d.get('checkpoints_req', 0)} "
                f"requested, autovacuum {vac}, autoanalyze {ana}")
    size = sc.get("db_size") or {}
    n = (sc.get("kinds") or {}).get("all", {}).get("n") or 0
    grew = d.get("wal_bytes", 0)
    per = (f" (the WAL grew {grew / n / 1024:.0f} KB per request over the run)"
           if n and grew > 0 else "")
    return (f"SQLite file {size.get('file_bytes', 0) / 1e6:.1f} MB, WAL "
            f"{size.get('wal_bytes', 0) / 1e6:.1f} MB at the end{per}")


def _stolen(slow: dict[str, Any]) -> str:
    stolen = slow.get("stolen_percent") or 0
    return f", {stolen:.0f}% of a core stolen meanwhile" if stolen >= 1 else ""


def _scenario(label: str, sc: dict[str, Any]) -> list[str]:
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in (sc.get("cpu_percent") or {}).items())
    slow = ", ".join(f"{s['ms']:.0f} ms at {s['at_s']:.1f} s ({s['kind']}{_stolen(s)})"
                     for s in (sc.get("slowest") or [])[:6])
    parts = [f"- **{label}**: slowest {slow}", f"first requests (ms): "
             f"{', '.join(f'{x:.1f}' for x in sc.get('first_requests_ms') or [])}",
             f"CPU: {cpu}", _gc(sc), _hub(sc), _db(sc)]
    if sc.get("errors"):
        parts.append(f"errors: {sc['errors']}")
    return ["; ".join(p for p in parts if p)]


def tails_details(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return []
    lines = ["", f"Tails in detail (concurrency 1, {t['seconds']:g} s per run, alternating "
             f"non-streamed and {t['chunks']}-chunk streamed requests on two keep-alive "
             "connections; 'at' is seconds into the run):"]
    for name, sc in (t.get("baselines") or {}).items():
        lines += _scenario(name, sc)
    for db in t.get("databases", []):
        fill = db.get("fill")
        if fill:
            lines.append(f"- {db['database']}: filled with {fill['rows']:,} settled requests "
                         f"({fill['ledger_entries']:,} ledger entries, {fill['accounts']} "
                         f"accounts) in {fill['seconds']} s")
        for sc in db.get("scenarios", []):
            lines += _scenario(f"{db['database']}, {sc['name']}", sc)
        led = db.get("ledger")
        if led:
            lines.append(f"- {db['database']} ledger after the tails: "
                         f"{led['outstanding_holds']} outstanding holds; check "
                         + ("ok" if led["ok"] else f"FAILED: {led['accounts']}")
                         + f" ({led['seconds']} s)")
    return lines


def soak_details(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    lines = ["", f"Soak in detail ({s['seconds']:g} s): background traffic by kind "
             "(from another process, at the same time as the fast lane):", "",
             "| Kind | Sent | Statuses | Unexpected | p50 / p99 / max (ms) |",
             "|---|---:|---|---:|---|"]
    for name, k in ((s.get("traffic") or {}).get("kinds") or {}).items():
        statuses = ", ".join(f"{st}: {n}" for st, n in sorted(k["by_status"].items()))
        lines.append(f"| {name} | {k['sent']:,} | {statuses} | {k['unexpected']} | "
                     f"{k['p50_ms']:.1f} / {k['p99_ms']:.1f} / {k['max_ms']:.1f} |")
        lines += [f"|  | | {x} | | |" for x in k.get("unexpected_samples", [])[:2]]
    lane = s["fast_lane"]
    slow = ", ".join(f"{x['ms']:.0f} ms at {x['at_s']:.0f} s ({x['kind']}{_stolen(x)})"
                     for x in lane["slowest"][:6])
    lines += ["", f"Fast lane slowest: {slow}. {_gc(s)}. {_hub(s)}".rstrip(". ") + "."]
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in (s.get("cpu_percent") or {}).items())
    lines.append(f"CPU over the soak: {cpu}.")
    for name, m in s["memory"].items():
        series = m.get("series_mb") or []
        step = max(1, len(series) // 12)
        shown = ", ".join(f"{t:.0f} s: {mb}" for t, mb in series[::step])
        lines.append(f"RSS of {name} after warm-up (MB): {shown}")
    gl = s.get("gateway_log")
    if gl is not None:
        lines.append(f"Soak gateway's stderr: {gl['lines']} warning/error line(s)")
        lines += [f"    {line}" for line in gl["excerpt"][:10]]
    led = s.get("ledger") or {}
    for name, a in (led.get("accounts") or {}).items():
        if not a.get("ok"):
            lines.append(f"Ledger problems of {name}: {a.get('problems')}")
    return lines
