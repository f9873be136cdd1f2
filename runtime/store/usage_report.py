"""The console's queries over the usage log: filtered keyset pages both ways, totals over the
whole filter, cost per UTC day and model, every row in batches (CSV), spend per key.

Contract:
- `UsageFilter` narrows rows by account id, key id, model, endpoint and a time range
  (`since` inclusive, `until` exclusive, aware datetimes); every query takes one.
- `page(conn, where, limit, cursor)` gives up to `limit` rows, newest first, with the opaque
  cursors of the older and the newer page (None where there is none). Pages walk ids, so rows
  inserted while someone pages never shift or repeat the older pages. `decode_cursor` raises
  ValueError for a string this module did not make.
- `totals` sums every row of the filter (requests, tokens, the other priced units from each
  row's `details`, cost); `daily_by_model` gives cost and requests per UTC day and model.
- `batches(open_conn, where)` yields every row of the filter, one short read per batch.
- `spend_by_key(conn, key_ids, now)` is what each key was charged in all, today and this
  month (UTC).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, literal_column, select, true

from . import ledger
from .schema import usage_log

MAX_PAGE = 1000
_OLDER, _NEWER = "o", "n"


@dataclass(frozen=True, slots=True)
class UsageFilter:
    account_id: int | None = None
    key_id: str | None = None
    model: str | None = None
    endpoint: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[Any]:
        c = usage_log.c
        out = [column == value for column, value in (
            (c.account_id, self.account_id), (c.key_id, self.key_id), (c.model, self.model),
            (c.endpoint, self.endpoint)) if value is not None]
        if self.since is not None:
            out.append(c.created_at >= self.since)
        if self.until is not None:
            out.append(c.created_at < self.until)
        return out


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One usage log row; `units` are the other priced units (images, seconds, ...)."""

    id: int
    request_id: str
    created_at: datetime
    account_id: int
    key_id: str | None
    endpoint: str
    model: str
    provider: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    units: dict[str, Any]
    cost_nano: int
    latency_ms: int


@dataclass(frozen=True, slots=True)
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int = 0
    units: dict[str, int | float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[UsageRow]
    older: str | None
    newer: str | None


@dataclass(frozen=True, slots=True)
class KeySpend:
    total: int = 0
    today: int = 0
    month: int = 0


def encode_cursor(direction: str, row_id: int) -> str:
    raw = f"u:{direction}:{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(direction, id) of a cursor; ValueError for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a usage page cursor") from None
    parts = raw.split(":")
    if (len(parts) != 3 or parts[0] != "u" or parts[1] not in (_OLDER, _NEWER)
            or not parts[2].isdigit() or len(parts[2]) > 19):
        raise ValueError("not a usage page cursor")
    return parts[1], int(parts[2])


_COLUMNS = (usage_log.c.id, usage_log.c.request_id, usage_log.c.created_at,
            usage_log.c.account_id, usage_log.c.key_id, usage_log.c.endpoint, usage_log.c.model,
            usage_log.c.provider, usage_log.c.status, usage_log.c.prompt_tokens,
            usage_log.c.completion_tokens, usage_log.c.cached_tokens, usage_log.c.details,
            usage_log.c.cost_nano, usage_log.c.latency_ms)


def _row(row: Any) -> UsageRow:
    values = list(row)
    values[2] = ledger.utc(values[2])
    values[12] = json.loads(values[12]) if values[12] else {}
    return UsageRow(*values)


def _where(where: UsageFilter, *more: Any) -> Any:
    return and_(true(), *where.clauses(), *more)


def page(conn: Connection, where: UsageFilter, limit: int, cursor: str | None = None) -> Page:
    """Up to `limit` rows, newest first: the newest of the filter, or the page a cursor names."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    direction, edge = decode_cursor(cursor) if cursor else (_OLDER, None)
    ids = usage_log.c.id
    if direction == _OLDER:
        bound = [] if edge is None else [ids < edge]
        order = ids.desc()
    else:
        bound, order = [ids > edge], ids.asc()
    query = select(*_COLUMNS).where(_where(where, *bound)).order_by(order).limit(limit + 1)
    rows = [_row(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == _NEWER:
        rows.reverse()
    if not rows:
        return Page([], None, None)
    older = more if direction == _OLDER else _exists(conn, where, ids < rows[-1].id)
    newer = more if direction == _NEWER else (
        edge is not None and _exists(conn, where, ids > rows[0].id))
    return Page(rows, encode_cursor(_OLDER, rows[-1].id) if older else None,
                encode_cursor(_NEWER, rows[0].id) if newer else None)


def _exists(conn: Connection, where: UsageFilter, bound: Any) -> bool:
    return bool(conn.execute(select(exists().where(_where(where, bound)))).scalar())


def totals(conn: Connection, where: UsageFilter) -> UsageTotals:
    """Sums over every row of the filter. Rows are grouped by their `details` text first (most
    share a handful of shapes, `{}` above all), so only distinct values are decoded."""
    c = usage_log.c
    query = (select(c.details, func.count(), func.sum(c.prompt_tokens),
                    func.sum(c.completion_tokens), func.sum(c.cached_tokens),
                    func.sum(c.cost_nano))
             .where(_where(where)).group_by(c.details))
    requests = prompt = completion = cached = cost = 0
    units: Counter[str] = Counter()
    for details, count, p, o, k, money in conn.execute(query):
        requests += count
        prompt += int(p or 0)
        completion += int(o or 0)
        cached += int(k or 0)
        cost += int(money or 0)
        for name, value in (json.loads(details) if details else {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                units[name] += value * count
    return UsageTotals(requests, prompt, completion, cached, cost, dict(sorted(units.items())))


def _day(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", usage_log.c.created_at), "YYYY-MM-DD")
    # SQLite keeps timestamps as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'
    return func.substr(usage_log.c.created_at, 1, 10)


def daily_by_model(conn: Connection, where: UsageFilter) -> list[dict[str, Any]]:
    """[{"day": "YYYY-MM-DD", "model", "requests", "cost_nano"}], by day then model."""
    day = _day(conn).label("day")
    query = (select(day, usage_log.c.model, func.count(), func.sum(usage_log.c.cost_nano))
             .where(_where(where))
             .group_by(literal_column("day"), usage_log.c.model)
             .order_by(literal_column("day"), usage_log.c.model))
    return [{"day": d, "model": m, "requests": n, "cost_nano": int(cost or 0)}
            for d, m, n, cost in conn.execute(query)]


def distinct(conn: Connection, where: UsageFilter, column: str) -> list[str]:
    """The distinct values of `column` (model, endpoint) among the filter's rows, sorted."""
    col = usage_log.c[column]
    return [v for (v,) in conn.execute(select(col).where(_where(where)).distinct().order_by(col))]


def batches(open_conn: Callable[[], AbstractContextManager[Connection]], where: UsageFilter,
            batch: int = 500) -> Iterator[list[UsageRow]]:
    """Every row of the filter, newest first, one short read per batch, so a long export
    holds no transaction open."""
    cursor = None
    while True:
        with open_conn() as conn:
            result = page(conn, where, batch, cursor)
        if result.rows:
            yield result.rows
        if result.older is None:
            return
        cursor = result.older


def spend_by_key(conn: Connection, key_ids: list[str], now: datetime) -> dict[str, KeySpend]:
    """What each key was charged in all, today and this month (UTC days), from the log."""
    found = {key_id: KeySpend() for key_id in key_ids}
    if not key_ids:
        return found
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    cost = usage_log.c.cost_nano
    query = (select(usage_log.c.key_id, func.sum(cost),
                    func.sum(case((usage_log.c.created_at >= day, cost), else_=0)),
                    func.sum(case((usage_log.c.created_at >= month, cost), else_=0)))
             .where(usage_log.c.key_id.in_(key_ids)).group_by(usage_log.c.key_id))
    for key_id, total, today, this_month in conn.execute(query):
        found[key_id] = KeySpend(int(total or 0), int(today or 0), int(this_month or 0))
    return found
