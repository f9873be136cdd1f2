"""Holds of lost workers: owners, heartbeats, progress, and the sweep that settles them.

A hold lives as long as its request. While it runs, the process that took it keeps it alive:
- `OpenHolds` is the process's own list of open holds (the Store adds a hold when it is
  taken and drops it when it is settled or released); a stream the provider accepted also
  registers a callable that reports what it produced so far (see `Progress`).
- `heartbeat_statements` stamps every open hold of the process with its owner and the time,
  and records the progress that changed since the last stamp: one UPDATE per batch of
  `HEARTBEAT_BATCH` holds (so one per interval for up to that many open requests), never one
  per hold or per chunk.

A hold whose heartbeat (its `created_at` until the first one) is older than the grace period
was left by a worker that is gone (killed, crashed, its node lost). `sweep_one` settles it in
one transaction: it claims the hold with a row lock other sweepers skip (PostgreSQL: SELECT
... FOR UPDATE SKIP LOCKED; SQLite serialises writers) after checking that it is still
stale, then
- with progress recorded: settles it through ledger.settle (ledger.settle_with, the one
  settlement algorithm) at the recorded cost, with a usage row of status `WORKER_LOST_STATUS`
  and the recorded token counts;
- without: gives it back in full, with no usage row (the provider never accepted it).
`refund=True` (the operator's choice) gives back every hold in full. Settlement stays
exactly-once per request id: a worker that turns out to be alive and settles later finds its
request logged and charges nothing.

Nodes compare their own clocks with the heartbeats other nodes wrote: keep them in step
(NTP) to well within the grace period.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from runtime.limits.spend import core_wrap

from . import ledger
from .records import UsageRecord
from .schema import holds

log = logging.getLogger("tokmodel.holds")

# Logged for a request settled by a sweeper: like a stream ended by a shutdown, the client
# did not get the whole answer.
WORKER_LOST_STATUS = 499
# Holds stamped per statement: SQLite accepts 999 parameters on the oldest builds, and a
# heartbeat may bind 3 per hold (id, and id + progress when it changed).
HEARTBEAT_BATCH = 300

Progress = Mapping[str, Any]
"""What a request produced so far, as recorded on its hold (JSON):
`cost` (int, in the unit of the hold's amount: what a cut now would be charged), `endpoint`,
`model`, `provider`, `key_id` (the usage row's), `prompt_tokens`, `completion_tokens`,
`cached_tokens`, `units` (other priced units)."""


class OpenHolds:
    """The holds this process has open, and the progress reporters of accepted streams.

    Plain dict operations, so adding and dropping a hold costs the request path nothing
    measurable; greenlets and threads share it (each operation is atomic)."""

    def __init__(self) -> None:
        self._open: dict[str, None] = {}
        self._reporters: dict[str, Callable[[], Progress | None]] = {}
        self._recorded: dict[str, str] = {}

    def add(self, request_id: str) -> None:
        self._open[request_id] = None

    def discard(self, request_id: str) -> None:
        self._open.pop(request_id, None)
        self._reporters.pop(request_id, None)
        self._recorded.pop(request_id, None)

    def watch(self, request_id: str, report: Callable[[], Progress | None]) -> None:
        """`report()` says what the request produced so far (None: nothing to record yet)."""
        if request_id in self._open:
            self._reporters[request_id] = report

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._open

    def __len__(self) -> int:
        return len(self._open)

    def ids(self) -> list[str]:
        return list(self._open)

    def changed_progress(self) -> dict[str, str]:
        """The progress (JSON) of every watched hold whose report changed since recorded."""
        changed: dict[str, str] = {}
        for request_id, report in list(self._reporters.items()):
            try:
                progress = report()
            except Exception:  # a reporter must never stop the heartbeat of the others
                log.exception("progress of %s could not be read", request_id)
                continue
            if progress is None:
                continue
            text = json.dumps(progress, separators=(",", ":"), sort_keys=True)
            if self._recorded.get(request_id) != text:
                changed[request_id] = text
        return changed

    def recorded(self, progress: Mapping[str, str]) -> None:
        """The heartbeat wrote this progress: report only later changes."""
        for request_id, text in progress.items():
            if request_id in self._reporters:
                self._recorded[request_id] = text


def heartbeat_statements(ids: list[str], progress: Mapping[str, str], owner: str,
                         when: Any, paramstyle: str) -> Iterable[tuple[str, list[Any]]]:
    """(sql, params) stamping holds `ids` with `owner` and `when`, and setting the progress
    given for some of them; `paramstyle` is the driver's ('qmark' or 'format')."""
    mark = "?" if paramstyle == "qmark" else "%s"
    for start in range(0, len(ids), HEARTBEAT_BATCH):
        batch = ids[start:start + HEARTBEAT_BATCH]
        params: list[Any] = [owner, when]
        sql = f"UPDATE holds SET owner = {mark}, heartbeat_at = {mark}"
        changed = [(rid, progress[rid]) for rid in batch if rid in progress]
        if changed:
            sql += (", progress = CASE request_id "
                    + " ".join(f"WHEN {mark} THEN {mark}" for _ in changed)
                    + " ELSE progress END")
            for pair in changed:
                params.extend(pair)
        sql += f" WHERE request_id IN ({', '.join([mark] * len(batch))})"
        params.extend(batch)
        yield sql, params


# -- the sweep (SQLAlchemy Core, inside the caller's transaction) -------------------------

_beat = func.coalesce(holds.c.heartbeat_at, holds.c.created_at)
_stale = (
    select(holds.c.request_id)
    .where(_beat < bindparam("b_cutoff"))
    .order_by(_beat)
    .limit(bindparam("b_limit"))
)
_claim = (
    select(holds.c.account_id, holds.c.amount_nano, holds.c.created_at,
           holds.c.heartbeat_at, holds.c.progress)
    .where(holds.c.request_id == bindparam("b_request_id"))
    .where(_beat < bindparam("b_cutoff"))
    .with_for_update(skip_locked=True)
)
_all = select(holds.c.request_id, holds.c.account_id, holds.c.amount_nano,
              holds.c.created_at, holds.c.owner, holds.c.heartbeat_at,
              holds.c.progress).order_by(holds.c.created_at)


@dataclass(frozen=True, slots=True)
class Swept:
    """A hold settled (or given back) because its worker was lost."""

    request_id: str
    account_id: int
    held: int
    charged: int
    logged: bool          # settled with a usage row (False: given back in full)


@dataclass(frozen=True, slots=True)
class HoldRecord:
    request_id: str
    account_id: int
    amount: int
    created_at: datetime
    owner: str | None
    heartbeat_at: datetime | None
    progress: dict[str, Any] | None


def stale_ids(conn: Connection, cutoff: datetime, limit: int) -> list[str]:
    """Holds whose last heartbeat (else creation) is before `cutoff`, oldest first."""
    return list(conn.execute(_stale, {"b_cutoff": cutoff, "b_limit": limit}).scalars())


def all_holds(conn: Connection) -> list[HoldRecord]:
    return [HoldRecord(r[0], r[1], r[2], ledger.utc(r[3]), r[4], ledger.utc(r[5]),
                       parse_progress(r[6])) for r in conn.execute(_all)]


def sweep_one(conn: Connection, request_id: str, cutoff: datetime, now: datetime,
              refund: bool = False) -> Swept | None:
    """Claim the hold if it is still stale and settle it (see the module docstring); None when
    it is gone, fresh again, or being swept by another transaction."""
    row = conn.execute(_claim, {"b_request_id": request_id, "b_cutoff": cutoff}).first()
    if row is None:
        return None
    account_id, held, created, beat, text = row
    progress = None if refund else parse_progress(text)
    if progress is None:
        if text and not refund:
            log.warning("hold %s has an unreadable progress record: given back", request_id)
        ledger.release(conn, request_id, now)
        return Swept(request_id, account_id, held, 0, logged=False)
    created, beat = ledger.utc(created), ledger.utc(beat)
    lasted = (beat - created).total_seconds() if beat and created else 0.0
    usage = UsageRecord(
        request_id=request_id, account_id=account_id, key_id=progress.get("key_id"),
        endpoint=str(progress.get("endpoint") or "unknown"),
        model=str(progress.get("model") or "unknown"),
        provider=str(progress.get("provider") or "unknown"),
        status=WORKER_LOST_STATUS,
        prompt_tokens=_count(progress.get("prompt_tokens")),
        completion_tokens=_count(progress.get("completion_tokens")),
        cached_tokens=_count(progress.get("cached_tokens")),
        details=dict(progress.get("units") or {}),
        cost_nano=_count(progress.get("cost")),
        latency_ms=max(0, int(lasted * 1000)))
    # the key's spend (limits/spend.py) follows the charge, as a worker's settle would
    charged = ledger.settle(conn, request_id, usage.cost_nano, usage, now,
                            core_wrap(conn, usage.key_id, now) if usage.key_id else None)
    return Swept(request_id, account_id, held, charged, logged=True)


def parse_progress(text: str | None) -> dict[str, Any] | None:
    """A hold's progress record, or None (none recorded, or unreadable)."""
    if not text:
        return None
    try:
        progress = json.loads(text)
    except ValueError:
        return None
    if not isinstance(progress, dict) or not isinstance(progress.get("units", {}), dict):
        return None
    return progress


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
