"""Rendering bench results: a Markdown table with the targets next to the figures.

Contract
--------
`TARGETS` holds the figures the gateway is held to; `markdown(results, command)` returns the
report as text: the exact command, one table with the gateway, the bare passthrough and the
direct upstream side by side (the throughput row carries the gateway-to-passthrough ratio,
median of the interleaved rounds), the gunicorn settings both servers ran with, the access-log
and /metrics checks, CPU shares, the ledger check and any gateway log trouble. Pure functions
of the results dict built by tests.bench.run; parts missing from it are left out.
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


Row = tuple[str, str, str, str, str, str, str]
HEADER = ("Measure", "Gateway", "Bare passthrough", "Direct upstream",
          "Gateway vs passthrough / direct", "Target", "Verdict")


def _side(part: dict[str, Any], side: str) -> dict[str, Any]:
    return part.get(side) or {}


def _fmt(d: dict[str, Any], key: str, spec: str) -> str:
    return format(d[key], spec) if key in d else ""


def rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    lat = r.get("latency")
    if lat:
        g, p, d = _side(lat, "gateway"), _side(lat, "passthrough"), _side(lat, "direct")
        for q in ("p50", "p99"):
            added = lat[f"added_{q}_ms"]
            vs_pt = lat.get(f"added_{q}_ms_vs_passthrough")
            diff = (f"+{vs_pt:.3f} / +{added:.3f}" if vs_pt is not None else f"+{added:.3f}")
            target = f"added <= {TARGETS['added_p50_ms']:g} ms vs direct" if q == "p50" else "-"
            verdict = _verdict(added <= TARGETS["added_p50_ms"]) if q == "p50" else "-"
            out.append((f"Latency {q}, concurrency 1 (ms)", _fmt(g, f"{q}_ms", ".3f"),
                        _fmt(p, f"{q}_ms", ".3f"), _fmt(d, f"{q}_ms", ".3f"), diff, target,
                        verdict))
        sides = [x for x in (g, p, d) if x]
        errs = sum(sum(x["errors"].values()) for x in sides)
        out.append((f"Latency run errors ({g.get('requests', 0)} requests each)",
                    _errors(g.get("errors", {})), _errors(p.get("errors", {})),
                    _errors(d.get("errors", {})), "", "0", _verdict(errs == 0)))
    tp = r.get("throughput")
    if tp:
        g, p, d = _side(tp, "gateway"), _side(tp, "passthrough"), _side(tp, "direct")
        rounds = ", ".join(f"{x:.2f}" for x in tp.get("ratio_to_passthrough_rounds", []))
        out.append((f"Throughput, non-streaming, concurrency {tp['concurrency']}, "
                    f"{tp['workers']} workers (req/s, median of {tp['rounds']} interleaved "
                    f"rounds of {g['seconds']:.0f} s)",
                    f"{g['rps']:,.0f}", _fmt(p, "rps", ",.0f"), _fmt(d, "rps", ",.0f"),
                    f"**{tp['ratio_to_passthrough']:.2f}** (rounds {rounds}) / "
                    f"{tp['ratio_to_direct']:.2f}",
                    f">= {TARGETS['gateway_rps']:,.0f} req/s",
                    _verdict(g["rps"] >= TARGETS["gateway_rps"] and g["errors"] == 0)))
        out.append(("Throughput req/s per round", *(
            ", ".join(f"{x:,.0f}" for x in side.get("rps_rounds", [])) for side in (g, p, d)),
            "", "-", "-"))
        sides = [x for x in (g, p, d) if x]
        out.append(("Throughput errors (non-200 or failed)",
                    *(f"{x['errors']} ({_errors(x['error_kinds'])})" if x else ""
                      for x in (g, p, d)), "", "0",
                    _verdict(all(x["errors"] == 0 for x in sides))))
        out.append(("Latency under load p50 / p99 (ms, median of rounds)",
                    *(f"{x['p50_ms']:.1f} / {x['p99_ms']:.1f}" if x else ""
                      for x in (g, p, d)), "", "-", "-"))
    st = r.get("streams")
    if st:
        out.append(("Concurrent streams completed with [DONE] (1 worker)",
                    f"{st['completed_with_done']:,} / {st['requested']:,}", "", "", "",
                    f"{TARGETS['streams_per_worker']:,} per worker",
                    _verdict(st["completed_with_done"] == st["requested"]
                             >= TARGETS["streams_per_worker"])))
        w, m = st["worker_rss_mb"], st["master_rss_mb"]
        out.append(("Worker RSS with the streams open (MB): peak (before)",
                    f"{w['peak']:.1f} ({w['before']:.1f})", "", "", "",
                    f"< {TARGETS['worker_rss_mb']:g} MB",
                    _verdict(w["peak"] < TARGETS["worker_rss_mb"])))
        out.append(("Master RSS (MB): peak (before)", f"{m['peak']:.1f} ({m['before']:.1f})",
                    "", "", "", "-", "-"))
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
                            "", "", "", "-", "-"))
    return out


def markdown(r: dict[str, Any], command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    busy = r.get("busy_before_percent") or 0
    if busy > 25:
        lines += [f"**Warning:** other processes kept {busy:.0f}% of one core busy before the "
                  "run: they shared the cores, figures are noisy.", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "---|" * len(HEADER))
    for row in rows(r):
        lines.append("| " + " | ".join(row) + " |")
    settings = r.get("gunicorn_settings")
    if settings:
        text = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "accesslog")
        lines.append(f"\nGateway and passthrough both served by `tokmodel serve`'s gunicorn "
                     f"settings: {text}. The passthrough checks one Bearer key and forwards "
                     "with a requests.Session; the gateway runs with metrics and access log on.")
    acc, met = r.get("access_log"), r.get("metrics_endpoint")
    if acc is not None or met is not None:
        parts = []
        if acc is not None:
            parts.append(f"gateway stdout (access log, to a file): {acc['lines']:,} lines, "
                         f"{acc['json_lines']:,} of them JSON")
        if met is not None:
            parts.append(f"GET /metrics: {met.get('status')}"
                         + (f", {met['samples']:,} samples" if met.get("samples") else ""))
        lines.append("; ".join(parts))
    cpu = []
    for part, label in (("latency", "concurrency 1"),
                        ("throughput", "concurrency N, mean of rounds")):
        for side in ("direct", "passthrough", "gateway"):
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
    if r.get("passthrough_workers_restarted"):
        lines.append("\nPassthrough workers that died during the run: "
                     f"{r['passthrough_workers_restarted']}")
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
        for side in ("direct", "passthrough", "gateway"):
            for sample in (r.get(part) or {}).get(side, {}).get("error_samples", []):
                lines.append(f"  - {part} {side}: {sample}")
    if r.get("hot_path_error"):
        lines.append(f"\nHot-path part failed: {r['hot_path_error']}")
    led = r.get("ledger")
    if led:
        unit = led.get("outstanding_hold_unit") or "amount"
        lines.append(f"\nLedger after the run: {led['outstanding_holds']} outstanding holds "
                     f"(sum of {unit}: {led['outstanding_hold_amount']}); usage rows by "
                     f"status: {led['usage_rows_by_status']}")
    gl = r.get("gateway_log")
    if gl is not None:
        lines.append(f"\nGateway log: {gl['lines']} warning/error line(s)")
        lines += [f"    {line}" for line in gl["excerpt"]]
    return "\n".join(lines)
