"""Rendering bench results: a Markdown table with the targets next to the figures.

Contract
--------
`TARGETS` holds the figures the gateway is held to (issue 11); `markdown(results, command)`
returns the report as text: the exact command, one table with the gateway, the bare
passthrough and the direct upstream side by side where they apply (throughput and
stream-rate rows carry the gateway-to-passthrough ratio, median of the interleaved rounds;
tails rows carry the passthrough's and the upstream's own tails from the same run), the
gunicorn settings both servers ran with, the access-log and /metrics checks, CPU shares, the
ledger checks and any gateway log trouble, then the details of the tails and the soak
(tests.bench.report_details). Pure functions of the results dict built by tests.bench.run;
parts missing from it are left out.
"""

from __future__ import annotations

import statistics
from typing import Any

from tests.bench.report_details import soak_details, tails_details
from tests.bench.throughput import SIDES

TARGETS = {
    "added_p50_ms": 0.8,                 # against the direct upstream
    "ratio_to_passthrough": 1.5,         # non-streamed req/s at concurrency 64
    "stream_rps_start": 522.0,           # 20-chunk streams when issue 11 was opened
    "stream_rps_factor": 1.5,
    "streams_per_worker": 5000,
    "worker_rss_mb": 300.0,
    "tails_p99_ms": 10.0,
    "tails_max_ms": 50.0,
    "postgres_to_sqlite": 1.5,           # p50 at concurrency 1 (databases part)
    "soak_stall_ms": 50.0,
    "soak_growth_percent": 5.0,
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
                    f">= {TARGETS['ratio_to_passthrough']:g}x the passthrough",
                    _verdict(tp["ratio_to_passthrough"] >= TARGETS["ratio_to_passthrough"]
                             and g["errors"] == 0)))
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
    out += reference_rows(r)
    out += stream_rate_rows(r.get("stream_rate"))
    out += baseline_rows(r)
    st = r.get("streams")
    if st:
        wc = st.get("worker_connections") or {}
        out.append((f"Concurrent slow streams completed with [DONE] (1 worker, "
                    f"{st['stream_seconds']:g} s each; worker_connections "
                    f"{wc.get('requested') or 'default'})",
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
    out += databases_rows(r.get("databases"))
    out += tails_rows(r.get("tails"))
    out += soak_rows(r.get("soak"))
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


def stream_rate_rows(sr: dict[str, Any] | None) -> list[Row]:
    if not sr:
        return []
    g, p, d = _side(sr, "gateway"), _side(sr, "passthrough"), _side(sr, "direct")
    rounds = ", ".join(f"{x:.2f}" for x in sr.get("ratio_to_passthrough_rounds", []))
    want = TARGETS["stream_rps_start"] * TARGETS["stream_rps_factor"]
    return [
        (f"Streams of {sr['chunks']} chunks, concurrency {sr['concurrency']}, {sr['workers']} "
         f"workers (req/s, median of {sr['rounds']} interleaved rounds of "
         f"{g['seconds']:.0f} s)", f"{g['rps']:,.0f}", _fmt(p, "rps", ",.0f"),
         _fmt(d, "rps", ",.0f"), f"**{sr['ratio_to_passthrough']:.2f}** (rounds {rounds}) / "
         f"{sr['ratio_to_direct']:.2f}",
         f">= {want:,.0f} req/s ({TARGETS['stream_rps_factor']:g}x the "
         f"{TARGETS['stream_rps_start']:,.0f} at the start)",
         _verdict(g["rps"] >= want and g["errors"] == 0)),
        ("Stream errors (non-200, no [DONE] or failed)",
         *(f"{x['errors']} ({_errors(x['error_kinds'])})" if x else "" for x in (g, p, d)),
         "", "0", _verdict(all(x["errors"] == 0 for x in (g, p, d) if x))),
    ]


def reference_rows(r: dict[str, Any]) -> list[Row]:
    """The gateway against ../shared/bench's passthrough (--reference), the yardstick issue 11
    was written against: its figures in the Bare passthrough column."""
    if not r.get("reference"):
        return []
    out: list[Row] = []
    lat = r.get("latency") or {}
    ref = _side(lat, "reference")
    if ref:
        out.append(("Latency p50 / p99, concurrency 1 (ms): gateway / reference passthrough",
                     f"{lat['gateway']['p50_ms']:.3f} / {lat['gateway']['p99_ms']:.3f}",
                     f"{ref['p50_ms']:.3f} / {ref['p99_ms']:.3f}", "",
                     f"{lat['added_p50_ms_vs_reference']:+.3f} / "
                     f"{lat['added_p99_ms_vs_reference']:+.3f}", "-", "-"))
    tp = r.get("throughput") or {}
    ref = _side(tp, "reference")
    if ref:
        rounds = ", ".join(f"{x:.2f}" for x in tp["ratio_to_reference_rounds"])
        want = TARGETS["ratio_to_passthrough"]
        out.append((f"Throughput against the reference passthrough (req/s, median of "
                    f"{tp['rounds']} interleaved rounds; per round: "
                    + ", ".join(f"{x:,.0f}" for x in ref["rps_rounds"]) + ")",
                    f"{tp['gateway']['rps']:,.0f}", f"{ref['rps']:,.0f}", "",
                    f"**{tp['ratio_to_reference']:.2f}** (rounds {rounds})",
                    f">= {want:g}x the passthrough",
                    _verdict(tp["ratio_to_reference"] >= want
                             and tp["gateway"]["errors"] == 0 and ref["errors"] == 0)))
    return out


def baseline_rows(r: dict[str, Any]) -> list[Row]:
    """The gateway against the baseline checkout (--baseline), where it was measured: both
    figures in the Gateway column, the gateway's first."""
    base = r.get("baseline")
    if not base:
        return []
    name = f"baseline {base['commit']}"
    out: list[Row] = []
    lat = r.get("latency") or {}
    g, b = _side(lat, "gateway"), _side(lat, "baseline")
    if b:
        for q in ("p50", "p99"):
            out.append((f"Latency {q}, concurrency 1 (ms): gateway / {name}",
                        f"{g[f'{q}_ms']:.3f} / {b[f'{q}_ms']:.3f}", "", "",
                        f"{lat[f'added_{q}_ms_vs_baseline']:+.3f} vs the baseline", "-", "-"))
    for label, part in (("Throughput", r.get("throughput")),
                        ("Streams", r.get("stream_rate"))):
        if part and "ratio_to_baseline" in part:
            rounds = ", ".join(f"{x:.2f}" for x in part["ratio_to_baseline_rounds"])
            out.append((f"{label} (req/s, median of rounds): gateway / {name}",
                        f"{part['gateway']['rps']:,.0f} / {part['baseline']['rps']:,.0f}", "",
                        "", f"**{part['ratio_to_baseline']:.2f}** the baseline (rounds "
                        f"{rounds})", "-", "-"))
    return out


KIND_LABEL = {"plain": "non-streamed", "stream": "streamed"}


def _tail(k: dict[str, Any] | None) -> str:
    if not k:
        return ""
    return f"{k['p50_ms']:.1f} / {k['p99_ms']:.1f} / {k['max_ms']:.1f}"


def _tails_ok(k: dict[str, Any]) -> bool:
    return (k["errors"] == 0 and k["p99_ms"] <= TARGETS["tails_p99_ms"]
            and k["max_ms"] <= TARGETS["tails_max_ms"])


def tails_rows(t: dict[str, Any] | None) -> list[Row]:
    if not t:
        return []
    out: list[Row] = []
    base = t.get("baselines") or {}
    target = f"p99 <= {TARGETS['tails_p99_ms']:g}, max <= {TARGETS['tails_max_ms']:g}"
    for db in t.get("databases", []):
        if db.get("error"):
            out.append((f"Tails on {db['database']}", f"failed: {db['error'][:200]}", "", "",
                        "", target, "MISS"))
        for sc in db.get("scenarios", []):
            for kind in ("plain", "stream"):
                k = sc["kinds"].get(kind)
                if not k:
                    continue
                w = k["worst_window"]
                out.append((
                    f"Tails, {db['database']}, {sc['name']}, {KIND_LABEL[kind]}: p50 / p99 / "
                    f"max (ms), concurrency 1, {t['seconds']:g} s",
                    _tail(k), _tail((base.get("passthrough") or {}).get("kinds", {}).get(kind)),
                    _tail((base.get("direct") or {}).get("kinds", {}).get(kind)),
                    f"worst 1-s window at {w['at_s']:g} s: mean {w['mean_ms']:.1f}, max "
                    f"{w['max_ms']:.1f} ({w['n']} req); {k['over_50ms']} over 50 ms"
                    + (f"; {k['errors']} errors" if k["errors"] else ""),
                    target, _verdict(_tails_ok(k))))
    return out


def databases_rows(d: dict[str, Any] | None) -> list[Row]:
    """PostgreSQL's p50 over SQLite's at concurrency 1 (tests.bench.db_ratio)."""
    if not d:
        return []
    limit = TARGETS["postgres_to_sqlite"]
    out: list[Row] = []
    for kind in ("plain", "stream"):
        rounds = ", ".join(f"{r:.2f}" for r in d["ratios"][kind])
        sqlite = statistics.median(r[kind]["p50_ms"] for r in d["sqlite"])
        postgres = statistics.median(r[kind]["p50_ms"] for r in d["postgresql"])
        out.append((
            f"PostgreSQL / SQLite p50 at concurrency 1, {KIND_LABEL[kind]} (median of "
            f"{d['rounds']} interleaved rounds of {d['seconds']:g} s; ms: PostgreSQL "
            f"{postgres:.2f}, SQLite {sqlite:.2f})",
            f"**{d['ratio'][kind]:.2f}x** (rounds {rounds})", "", "", "",
            f"<= {limit:g}x", _verdict(d["ratio"][kind] <= limit)))
    return out


def soak_rows(s: dict[str, Any] | None) -> list[Row]:
    if not s:
        return []
    out: list[Row] = []
    lane = s["fast_lane"]["kinds"].get("all") or next(iter(s["fast_lane"]["kinds"].values()))
    minutes = s["seconds"] / 60
    out.append((f"Soak ({minutes:g} min, ~{s['rate']:g} req/s mixed): fast lane p50 / p99 / "
                "max (ms)", _tail(lane), "", "", f"{lane['over_50ms']} over 50 ms; worst "
                f"1-s window mean {lane['worst_window']['mean_ms']:.1f} ms",
                f"no stall > {TARGETS['soak_stall_ms']:g} ms",
                _verdict(lane["max_ms"] <= TARGETS["soak_stall_ms"] and lane["errors"] == 0)))
    growth = s.get("max_growth_percent")
    workers = {k: v for k, v in s["memory"].items() if k.startswith("worker")}
    out.append(("Soak: worker RSS after warm-up, first -> last (MB), growth",
                "; ".join(f"{v.get('first_mb')} -> {v.get('last_mb')} "
                          f"({v.get('growth_percent')}%)" for v in workers.values()),
                "", "", "", f"within {TARGETS['soak_growth_percent']:g} %",
                _verdict(growth is not None and growth <= TARGETS["soak_growth_percent"])))
    kinds = (s.get("traffic") or {}).get("kinds") or {}
    unexpected = sum(k["unexpected"] for k in kinds.values())
    out.append(("Soak: background requests, unexpected answers",
                f"{(s.get('traffic') or {}).get('sent', 0):,} sent, {unexpected} unexpected",
                "", "", "", "0 unexpected", _verdict(bool(kinds) and unexpected == 0)))
    led = s.get("ledger") or {}
    cli = s.get("cli_audit") or {}
    out.append(("Soak: after the run, outstanding holds; ledger check; `accounts audit`",
                f"{led.get('outstanding_holds')}; "
                + ("ok" if led.get("ok") else "PROBLEMS") + "; "
                + ", ".join(f"{n} {'ok' if a.get('ok') else 'FAILED'}" for n, a in cli.items()),
                "", "", "", "0; ok; ok",
                _verdict(led.get("outstanding_holds") == 0 and bool(led.get("ok"))
                         and all(a.get("ok") for a in cli.values()))))
    if s.get("workers_restarted"):
        out.append(("Soak: workers that died", str(s["workers_restarted"]), "", "", "", "none",
                    "MISS"))
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
    ref = r.get("reference")
    if ref:
        lines.append(f"\nThe reference passthrough is {ref['dir']}/falcon_passthrough.py, "
                     f"served as its docstring says: gunicorn -w {ref['workers']} -k "
                     f"{ref['worker_class']} --worker-connections {ref['worker_connections']}. "
                     "It does what the bare passthrough does; the bare passthrough runs on "
                     "the gateway's own worker class, so it also has the gateway's one-send "
                     "answers.")
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
        for side in reversed(SIDES):
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
        for side in reversed(SIDES):
            for sample in (r.get(part) or {}).get(side, {}).get("error_samples", []):
                lines.append(f"  - {part} {side}: {sample}")
    if r.get("hot_path_error"):
        lines.append(f"\nHot-path part failed: {r['hot_path_error']}")
    led = r.get("ledger")
    if led:
        unit = led.get("outstanding_hold_unit") or "amount"
        verdict = ("" if "ok" not in led else "; ledger check (balances, holds, settle "
                   "entries and usage rows agree): " + ("ok" if led["ok"] else
                                                        f"FAILED {led.get('accounts')}"))
        lines.append(f"\nLedger after the latency, throughput and streams parts: "
                     f"{led['outstanding_holds']} outstanding holds (sum of {unit}: "
                     f"{led['outstanding_hold_amount']}); usage rows by status: "
                     f"{led['usage_rows_by_status']}{verdict}")
    gl = r.get("gateway_log")
    if gl is not None:
        lines.append(f"\nGateway log: {gl['lines']} warning/error line(s)")
        lines += [f"    {line}" for line in gl["excerpt"]]
    lines += tails_details(r.get("tails"))
    lines += soak_details(r.get("soak"))
    return "\n".join(lines)
