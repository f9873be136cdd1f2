"""Rendering bench results: a Markdown table with the targets next to the figures.

Contract
--------
`TARGETS` holds the figures the gateway is held to; `markdown(results, command)` returns the
report (the exact command, the table, CPU shares, the ledger check and any gateway log
trouble) as text. Pure functions of the results dict built by tests.bench.run.
"""

from __future__ import annotations

from typing import Any

TARGETS = {
    "added_p50_ms": 2.0,
    "gateway_rps": 1000.0,
    "streams_per_worker": 1000,
    "worker_rss_mb": 150.0,
}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _errors(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in kinds.items()) or "none"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    out: list[tuple[str, str, str, str, str, str]] = []
    lat = r.get("latency")
    if lat:
        g, d = lat["gateway"], lat["direct"]
        out.append(("Latency p50, concurrency 1 (ms)", f"{g['p50_ms']:.3f}",
                    f"{d['p50_ms']:.3f}", f"+{lat['added_p50_ms']:.3f}",
                    f"added <= {TARGETS['added_p50_ms']:g} ms",
                    _verdict(lat["added_p50_ms"] <= TARGETS["added_p50_ms"])))
        out.append(("Latency p99, concurrency 1 (ms)", f"{g['p99_ms']:.3f}",
                    f"{d['p99_ms']:.3f}", f"+{lat['added_p99_ms']:.3f}", "-", "-"))
        errs = sum(g["errors"].values()) + sum(d["errors"].values())
        out.append((f"Latency run errors ({g['requests']} + {d['requests']} requests)",
                    _errors(g["errors"]), _errors(d["errors"]), "", "0",
                    _verdict(errs == 0)))
    tp = r.get("throughput")
    if tp:
        g, d = tp["gateway"], tp["direct"]
        out.append((f"Throughput, concurrency {tp['concurrency']}, {g['seconds']:.0f} s "
                    f"(req/s, {tp['workers']} workers)", f"{g['rps']:,.0f}", f"{d['rps']:,.0f}",
                    f"ratio {tp['ratio']:.2f}", f">= {TARGETS['gateway_rps']:,.0f} req/s",
                    _verdict(g["rps"] >= TARGETS["gateway_rps"] and g["errors"] == 0)))
        out.append(("Throughput errors (non-200 or failed)",
                     f"{g['errors']} ({_errors(g['error_kinds'])})",
                     f"{d['errors']} ({_errors(d['error_kinds'])})", "", "0",
                     _verdict(g["errors"] == 0 and d["errors"] == 0)))
        out.append(("Latency under load p50 / p99 (ms)", f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f}",
                    f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}", "", "-", "-"))
    st = r.get("streams")
    if st:
        out.append(("Concurrent streams completed with [DONE] (1 worker)",
                    f"{st['completed_with_done']:,} / {st['requested']:,}", "", "",
                    f"{TARGETS['streams_per_worker']:,} per worker",
                    _verdict(st["completed_with_done"] == st["requested"]
                             >= TARGETS["streams_per_worker"])))
        w, m = st["worker_rss_mb"], st["master_rss_mb"]
        out.append(("Worker RSS with the streams open (MB): peak (before)",
                    f"{w['peak']:.1f} ({w['before']:.1f})", "", "",
                    f"< {TARGETS['worker_rss_mb']:g} MB",
                    _verdict(w["peak"] < TARGETS["worker_rss_mb"])))
        out.append(("Master RSS (MB): peak (before)", f"{m['peak']:.1f} ({m['before']:.1f})",
                    "", "", "-", "-"))
    hp = r.get("hot_path_us")
    if hp:
        names = {"authenticate": "store.authenticate(secret)", "hold": "store.hold(...)",
                 "settle": "store.settle(...)",
                 "validate": "Validator.check(CreateChatCompletionRequest), 1 message",
                 "validate_10_turns_tool": "Validator.check, 11 messages + 1 tool"}
        for key, label in names.items():
            if key in hp:
                v = hp[key]
                out.append((f"Hot path: {label} (us, SQLite)" if key in
                            ("authenticate", "hold", "settle") else f"Hot path: {label} (us)",
                            f"{v['median_us']:.1f} median, {v['mean_us']:.1f} mean",
                            "", "", "-", "-"))
    return out


def markdown(r: dict[str, Any], command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    busy = r.get("busy_before_percent") or 0
    if busy > 25:
        lines += [f"**Warning:** other processes kept {busy:.0f}% of one core busy before the "
                  "run: they shared the cores, figures are noisy.", ""]
    lines.append("| Measure | Gateway | Direct | Added / ratio | Target | Verdict |")
    lines.append("|---|---|---|---|---|---|")
    for row in rows(r):
        lines.append("| " + " | ".join(row) + " |")
    cpu = []
    for part, label in (("latency", "concurrency 1"), ("throughput", "concurrency N")):
        for side in ("direct", "gateway"):
            shares = (r.get(part) or {}).get(side, {}).get("cpu_percent")
            if shares:
                text = ", ".join(f"{k} {v:.0f}%" for k, v in shares.items())
                cpu.append(f"- {label}, {side}: {text}")
    if cpu:
        cores = (r.get("machine") or {}).get("cpus")
        lines.append(f"\nCPU use per run, in % of one core ({cores} cores; 'other processes' "
                     "is work outside the bench that shared the machine):")
        lines += cpu
    if r.get("workers_restarted"):
        lines.append(f"\nGateway workers that died during the run: {r['workers_restarted']}")
    st = r.get("streams")
    if st:
        lines.append(
            f"\nStreams: {st['open_peak']:,} open at once, {st['events_received']:,} SSE events "
            f"received, duration p50 {st['duration_p50_s']} s / max {st['duration_max_s']} s "
            f"(upstream: {st['stream_seconds']:g} s), first byte p50 "
            f"{st['first_byte_p50_ms']:.0f} ms / p99 {st['first_byte_p99_ms']:.0f} ms; "
            f"worker CPU {st['worker_cpu_seconds']} s (machine busy "
            f"{st['machine_busy_percent']:.0f}% of one core); errors: {_errors(st['errors'])}"
            + ("; THE WORKER WAS RESTARTED" if st["worker_restarted"] else ""))
        for sample in st.get("error_samples", []):
            lines.append(f"  - {sample}")
    for part in ("latency", "throughput"):
        for side in ("direct", "gateway"):
            for sample in (r.get(part) or {}).get(side, {}).get("error_samples", []):
                lines.append(f"  - {part} {side}: {sample}")
    led = r.get("ledger")
    if led:
        lines.append(f"\nLedger after the run: {led['outstanding_holds']} outstanding holds "
                     f"({led['outstanding_hold_micro']} micro-credits); usage rows by status: "
                     f"{led['usage_rows_by_status']}")
    gl = r.get("gateway_log")
    if gl is not None:
        lines.append(f"\nGateway log: {gl['lines']} warning/error line(s)")
        lines += [f"    {line}" for line in gl["excerpt"]]
    return "\n".join(lines)
