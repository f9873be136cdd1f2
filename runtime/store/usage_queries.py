"""Queries over the usage log: filtered keyset pages, totals, a daily series, retention.

Contract:
- `UsageFilter` narrows rows by account id, key id, model, endpoint and a time range
  (`since` inclusive, `until` exclusive, aware datetimes). Every query below takes one.
- `page(conn, filter, limit, cursor)` returns up to `limit` rows, newest first, and the
  cursor of the next page (None on the last). Pages walk ids downwards, so rows inserted
  while a client pages (always with larger ids) never shift or repeat a later page. A
  cursor is an opaque string; `decode_cursor` raises ValueError for one this module did not
  make.
- `newer_page(conn, filter, limit, cursor)` is the page just above a cursor (the way back
  from an older page), newest first, with the cursor of the page above it or None.
- `values(conn, filter, column)` lists the distinct models or endpoints of the filter.
- `totals` sums the whole filter (requests, tokens, the other priced units, cost),
  `daily_by_model` the cost and requests per UTC day and model (the console's chart) and
  `spend_by_key` what keys spent in all, today and this month. Each is one statement that
  reads the rollup's sums for the whole UTC days of the filter and usage_log for the rest
  (rows not folded yet, and the part days at the ends of a range): the same answer as
  summing every row, at the cost of a few thousand sums (runtime/store/usage_rollup.py).
- `prune(conn, cutoff, batch)` deletes at most `batch` rows created before `cutoff` and first
  records `cutoff` as the retention watermark (usage_retention), so the ledger audit stops
  expecting usage rows for settle entries older than it; their sums leave the rollup in the
  same transaction. Balances and the ledger are never touched.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    true,
    union,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from . import ledger
from . import usage_rollup as rollup
from .schema import accounts, usage_log, usage_retention, usage_rollup, usage_rollup_all

MAX_PAGE = 1000
_CURSOR_PREFIX = "u1:"


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
        out = []
        for column, value in ((c.account_id, self.account_id), (c.key_id, self.key_id),
                              (c.model, self.model), (c.endpoint, self.endpoint)):
            if value is not None:
                out.append(column == value)
        if self.since is not None:
            out.append(c.created_at >= self.since)
        if self.until is not None:
            out.append(c.created_at < self.until)
        return out


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One usage log row with its account's name; `units` are the other priced units."""

    id: int
    request_id: str
    created_at: datetime
    account_id: int
    account: str
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


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor continues below; ValueError for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor of this API") from None
    number = raw.removeprefix(_CURSOR_PREFIX)
    if raw == number or not number.isdigit() or len(number) > 19:
        raise ValueError("not a cursor of this API")
    return int(number)


_ROW_COLUMNS = (usage_log.c.id, usage_log.c.request_id, usage_log.c.created_at,
                usage_log.c.account_id, accounts.c.name, usage_log.c.key_id,
                usage_log.c.endpoint, usage_log.c.model, usage_log.c.provider,
                usage_log.c.status, usage_log.c.prompt_tokens, usage_log.c.completion_tokens,
                usage_log.c.cached_tokens, usage_log.c.details, usage_log.c.cost_nano,
                usage_log.c.latency_ms)


def _row(row: Any) -> UsageRow:
    values = list(row)
    values[2] = ledger.utc(values[2])
    values[13] = json.loads(values[13]) if values[13] else {}
    return UsageRow(*values)


def page(conn: Connection, where: UsageFilter, limit: int,
         cursor: str | None = None) -> tuple[list[UsageRow], str | None]:
    """Up to `limit` rows (newest first) below `cursor`, and the next page's cursor."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    clauses = where.clauses()
    if cursor is not None:
        clauses.append(usage_log.c.id < decode_cursor(cursor))
    query = (select(*_ROW_COLUMNS)
             .select_from(usage_log.join(accounts, accounts.c.id == usage_log.c.account_id))
             .where(and_(true(), *clauses))
             .order_by(usage_log.c.id.desc())
             .limit(limit + 1))
    rows = [_row(r) for r in conn.execute(query)]
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id)
    return rows, None


def newer_page(conn: Connection, where: UsageFilter, limit: int,
               cursor: str) -> tuple[list[UsageRow], str | None]:
    """Up to `limit` rows just above `cursor` (newest first), and the cursor of the rows
    above those (None when there are none)."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    query = (select(*_ROW_COLUMNS)
             .select_from(usage_log.join(accounts, accounts.c.id == usage_log.c.account_id))
             .where(and_(true(), *where.clauses(), usage_log.c.id > decode_cursor(cursor)))
             .order_by(usage_log.c.id.asc())
             .limit(limit + 1))
    rows = [_row(r) for r in conn.execute(query)]
    above = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit][::-1], above


def _whole_day(when: datetime, up: bool) -> datetime:
    """The UTC midnight at or after (`up`) / at or before `when`."""
    when = when.astimezone(UTC)
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=1) if up and midnight < when else midnight


def _parts(conn: Connection, where: UsageFilter) -> tuple[Any, list[Any], list[list[Any]]]:
    """Where a filter's rows are read: the rollup table that fits the filter (the sums over
    every account when it names no account or key) with the clauses on its whole days (table
    None when the range holds no whole UTC day), and the clause lists on usage_log that
    cover the rest: the rows not folded yet (id above rolled_to), and folded rows of the part
    days at the ends of a time range that does not start or end at midnight."""
    c = usage_log.c
    folded = rollup.rolled_to()
    raw = [[*where.clauses(), *rollup.not_folded(conn)]]
    first = None if where.since is None else _whole_day(where.since, up=True)
    last = None if where.until is None else _whole_day(where.until, up=False)
    if first is not None and last is not None and first >= last:
        raw.append([*where.clauses(), c.id <= folded])
        return None, [], raw
    table = (usage_rollup_all if where.account_id is None and where.key_id is None
             else usage_rollup)
    r = table.c
    summed = [r[name] == value for name, value in (
        ("account_id", where.account_id), ("key_id", where.key_id), ("model", where.model),
        ("endpoint", where.endpoint)) if value is not None]
    if first is not None:
        summed.append(r.day >= first.date().isoformat())
        if where.since < first:
            raw.append([*where.clauses(), c.id <= folded, c.created_at < first])
    if last is not None:
        summed.append(r.day < last.date().isoformat())
        if last < where.until:
            raw.append([*where.clauses(), c.id <= folded, c.created_at >= last])
    return table, summed, raw


def totals(conn: Connection, where: UsageFilter) -> UsageTotals:
    """Sums over every row of the filter: the rollup's sums of whole days plus the usage
    rows around them (`_parts`), in one statement. The other priced units live in JSON
    (`details` of a row, `units` of a sum); both are grouped by that text first, so only
    distinct values are decoded."""
    c = usage_log.c
    table, summed, raw = _parts(conn, where)
    branches = [select(c.details, func.count(), func.count(), func.sum(c.prompt_tokens),
                       func.sum(c.completion_tokens), func.sum(c.cached_tokens),
                       func.sum(c.cost_nano)).where(and_(true(), *clauses))
                .group_by(c.details) for clauses in raw]
    if table is not None:
        r = table.c
        branches.append(select(r.units, func.count(), func.sum(r.requests),
                               func.sum(r.prompt_tokens), func.sum(r.completion_tokens),
                               func.sum(r.cached_tokens), func.sum(r.cost_nano))
                        .where(and_(true(), *summed)).group_by(r.units))
    requests = prompt = completion = cached = cost = 0
    units: Counter[str] = Counter()
    for details, rows, n, p, o, k, money in conn.execute(union_all(*branches)):
        requests += int(n or 0)
        prompt += int(p or 0)
        completion += int(o or 0)
        cached += int(k or 0)
        cost += int(money or 0)
        for name, value in (json.loads(details) if details else {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                units[name] += value * rows
    return UsageTotals(requests, prompt, completion, cached, cost,
                       {name: _tidy(value) for name, value in sorted(units.items()) if value})


def _tidy(value: int | float) -> int | float:
    return round(value, 9) if isinstance(value, float) else value


def daily_by_model(conn: Connection, where: UsageFilter) -> list[dict[str, Any]]:
    """[{"day": "YYYY-MM-DD", "model", "requests", "cost_nano"}], by day then model."""
    c = usage_log.c
    table, summed, raw = _parts(conn, where)
    day = rollup.day_of(conn).label("day")
    branches = [select(day, c.model, func.count(), func.sum(c.cost_nano))
                .where(and_(true(), *clauses)).group_by(literal_column("day"), c.model)
                for clauses in raw]
    if table is not None:
        r = table.c
        branches.append(select(r.day, r.model, func.sum(r.requests), func.sum(r.cost_nano))
                        .where(and_(true(), *summed)).group_by(r.day, r.model))
    found: dict[tuple[str, str], list[int]] = {}
    for d, model, n, money in conn.execute(union_all(*branches)):
        sums = found.setdefault((d, model), [0, 0])
        sums[0] += int(n or 0)
        sums[1] += int(money or 0)
    return [{"day": d, "model": m, "requests": n, "cost_nano": cost}
            for (d, m), (n, cost) in sorted(found.items())]


def values(conn: Connection, where: UsageFilter, column: str) -> list[str]:
    """The distinct values of `column` ("model" or "endpoint") among the filter's rows."""
    if column not in ("model", "endpoint"):
        raise ValueError(f"no list of {column!r} values")
    table, summed, raw = _parts(conn, where)
    branches = [select(usage_log.c[column]).where(and_(true(), *clauses)) for clauses in raw]
    if table is not None:
        branches.append(select(table.c[column]).where(and_(true(), *summed)))
    return sorted(value for (value,) in conn.execute(union(*branches)))


def spend_by_key(conn: Connection, key_ids: list[str], day: datetime, month: datetime
                 ) -> dict[str, tuple[int, int, int]]:
    """What each key was charged in all, since `day` and since `month` (UTC midnights):
    {key_id: (total, day, month)} for the keys with usage rows."""
    r, c = usage_rollup.c, usage_log.c
    since_day, since_month = day.date().isoformat(), month.date().isoformat()
    branches = [
        select(r.key_id, func.sum(r.cost_nano),
               func.sum(case((r.day >= since_day, r.cost_nano), else_=0)),
               func.sum(case((r.day >= since_month, r.cost_nano), else_=0)))
        .where(r.key_id.in_(key_ids)).group_by(r.key_id),
        select(c.key_id, func.sum(c.cost_nano),
               func.sum(case((c.created_at >= day, c.cost_nano), else_=0)),
               func.sum(case((c.created_at >= month, c.cost_nano), else_=0)))
        .where(c.key_id.in_(key_ids), *rollup.not_folded(conn)).group_by(c.key_id)]
    found: dict[str, list[int]] = {}
    for key_id, total, today, this_month in conn.execute(union_all(*branches)):
        sums = found.setdefault(key_id, [0, 0, 0])
        for i, value in enumerate((total, today, this_month)):
            sums[i] += int(value or 0)
    return {key_id: (a, b, m) for key_id, (a, b, m) in found.items()}


def batches(open_conn: Any, where: UsageFilter, batch: int = 500) -> Iterator[list[UsageRow]]:
    """Every row of the filter, newest first, one short read per batch (`open_conn()` gives
    a context-managed connection), so a long export holds no transaction open."""
    cursor = None
    while True:
        with open_conn() as conn:
            rows, cursor = page(conn, where, batch, cursor)
        if rows:
            yield rows
        if cursor is None:
            return


def pruned_before(conn: Connection) -> datetime | None:
    """The retention watermark: usage rows older than it may have been pruned."""
    value = conn.execute(select(usage_retention.c.pruned_before)
                         .where(usage_retention.c.id == 1)).scalar()
    return ledger.utc(value)


def prune(conn: Connection, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` usage rows created before `cutoff` (oldest first); return how
    many. The watermark moves to `cutoff` first, in the same transaction, and never back;
    the rows' sums leave the rollup in that transaction too (usage_rollup.unfold)."""
    current = pruned_before(conn)
    if current is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(usage_retention), {"id": 1, "pruned_before": cutoff})
        except IntegrityError:  # another process recorded one first
            current = pruned_before(conn)
    if current is not None and current < cutoff:
        conn.execute(update(usage_retention).where(usage_retention.c.id == 1)
                     .values(pruned_before=cutoff))
    oldest = list(conn.execute(select(usage_log.c.id).where(usage_log.c.created_at < cutoff)
                               .order_by(usage_log.c.id).limit(batch)).scalars())
    if not oldest:
        return 0
    rollup.unfold(conn, oldest)
    return conn.execute(delete(usage_log).where(usage_log.c.id.in_(oldest))).rowcount
