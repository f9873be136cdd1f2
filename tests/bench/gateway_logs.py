"""What the gateway left behind: warnings and errors in its logs, its access-log lines, and
whether GET /metrics answers.

Contract
--------
- `log_trouble(paths, limit)` -> {"lines": count, "excerpt": [first `limit` lines]}: JSON
  lines (structured or access-log records) count only when their level is a warning or
  worse or their status a 5xx; other lines when they look like trouble (gunicorn's [INFO]
  lines never do). A Python traceback counts once and is kept whole, its exception line
  included. Reports of gevent's blocking monitor (diagnosis runs) are left out:
  tests.bench.probes reads those.
- `access_log_lines(paths)` -> {"lines", "json_lines"} of the gateway's stdout files.
- `metrics_probe(addr)` -> {"status", "samples"} of GET /metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.bench import load

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
            in_traceback = False
            for line in handle:
                line = line.rstrip("\n")
                if in_traceback:
                    # a traceback's frames are indented; its first line that is not ends it
                    # (the exception): kept whole, counted once
                    in_traceback = line.startswith((" ", "\t"))
                    if len(lines) < limit:
                        lines.append(f"{path.name}: {line[:300]}")
                    continue
                record = _json_record(line)
                bad = (_record_trouble(record) if record is not None
                       else bool(_TROUBLE.search(line)) and not _NOISE.search(line))
                if bad:
                    count += 1
                    in_traceback = line.startswith("Traceback (most recent call last)")
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

