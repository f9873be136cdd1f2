"""The usage log summed per UTC day, account, key, model and endpoint (`usage_rollup`), and per
UTC day, model and endpoint over every account (`usage_rollup_all`), so that totals, daily
series, distinct values and key spend over a large log read a few thousand sums instead of
every row.

Contract:
- Both tables hold exactly the sums of the usage rows with `id <= rolled_to`
  (`usage_rollup_state`, row 1, made with the table; 0: nothing folded yet). Rows above it (the last
  seconds of traffic) are read from usage_log by the queries (runtime/store/
  usage_queries.py), in the same statement as the sums and `rolled_to`, so a query sees one
  consistent snapshot: every row is counted once, whether folded or not.
- `roll_up(reader, writer, lag, most)` folds the next rows: those above `rolled_to`, up to
  the newest one created more than `lag` seconds ago (a row's transaction commits within
  milliseconds of its `created_at`, so no row below it can still be uncommitted), at most
  `most` ids at a time. The rows are summed on a reader connection, outside any write
  transaction; the short write transaction then moves `rolled_to` only if it and the state's
  `version` are unchanged (another worker's pass, or a prune, came first: nothing is
  applied, the next pass tries again) and adds the sums. Returns how many rows it folded.
- `unfold(conn, ids)` is the pruning side: inside the prune's write transaction, before the
  rows are deleted, it takes the folded ones among them back out of the sums (a sum that
  reaches zero requests is deleted) and bumps `version`.
- The request path never touches any of this: usage rows are written as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)

from .schema import usage_log, usage_rollup, usage_rollup_all, usage_rollup_state

STATE_ID = 1
Key = tuple[int, str, str, str, str]  # account_id, day, key_id ('' for none), model, endpoint


def day_of(conn: Connection) -> Any:
    """A usage row's UTC day as 'YYYY-MM-DD', in SQL."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", usage_log.c.created_at), "YYYY-MM-DD")
    # SQLite keeps timestamps as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'
    return func.substr(usage_log.c.created_at, 1, 10)


def rolled_to() -> Any:
    """`rolled_to` as a scalar subquery (0 when nothing was ever folded), to be read in the
    same statement as the sums and the rows above it."""
    state = select(usage_rollup_state.c.rolled_to).where(
        usage_rollup_state.c.id == STATE_ID).scalar_subquery()
    return func.coalesce(state, 0)


def not_folded(conn: Connection) -> list[Any]:
    """The clauses that pick the usage rows not folded yet: `id` above `rolled_to` as the
    statement reads it, and above the value read just before, as a constant. The constant
    changes nothing (`rolled_to` only grows) but tells PostgreSQL's planner that few rows
    qualify, which it cannot guess from the subquery: an index range, not a scan of the
    whole log."""
    floor = conn.execute(select(usage_rollup_state.c.rolled_to).where(
        usage_rollup_state.c.id == STATE_ID)).scalar() or 0
    return [usage_log.c.id > rolled_to(), usage_log.c.id > floor]


class Sums:
    """The sums of one rollup row."""

    __slots__ = ("requests", "prompt", "completion", "cached", "cost", "units")

    def __init__(self) -> None:
        self.requests = self.prompt = self.completion = self.cached = self.cost = 0
        self.units: dict[str, int | float] = {}

    def add(self, sign: int, requests: int, prompt: Any, completion: Any, cached: Any,
            cost: Any, units: dict[str, Any], times: int) -> None:
        self.requests += sign * requests
        self.prompt += sign * int(prompt or 0)
        self.completion += sign * int(completion or 0)
        self.cached += sign * int(cached or 0)
        self.cost += sign * int(cost or 0)
        for name, value in units.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total = self.units.get(name, 0) + sign * value * times
                if isinstance(total, float):
                    total = round(total, 9)  # no float dust from adding and taking back
                if total:
                    self.units[name] = total
                else:
                    self.units.pop(name, None)

    def values(self) -> dict[str, Any]:
        return {"requests": self.requests, "prompt_tokens": self.prompt,
                "completion_tokens": self.completion, "cached_tokens": self.cached,
                "cost_nano": self.cost, "units": json.dumps(self.units, sort_keys=True)}


def _grouped(conn: Connection, where: Any) -> dict[Key, Sums]:
    """The usage rows matching `where`, summed per rollup key (details decoded once per
    distinct text)."""
    c = usage_log.c
    day = day_of(conn).label("day")
    key_id = func.coalesce(c.key_id, "").label("key_id")
    query = (select(c.account_id, day, key_id, c.model, c.endpoint, c.details, func.count(),
                    func.sum(c.prompt_tokens), func.sum(c.completion_tokens),
                    func.sum(c.cached_tokens), func.sum(c.cost_nano))
             .where(where)
             .group_by(c.account_id, literal_column("day"), literal_column("key_id"), c.model,
                       c.endpoint, c.details))
    found: dict[Key, Sums] = {}
    decoded: dict[str, dict[str, Any]] = {}
    for account, d, k, model, endpoint, details, n, p, o, cached, cost in conn.execute(query):
        units = decoded.get(details)
        if units is None:
            units = decoded[details] = json.loads(details) if details else {}
        sums = found.setdefault((account, d, k, model, endpoint), Sums())
        sums.add(1, n, p, o, cached, cost, units, n)
    return found


# Each rollup table and the columns of its key, in the order of the key tuples used here.
LEVELS: tuple[tuple[Table, tuple[str, ...]], ...] = (
    (usage_rollup, ("account_id", "day", "key_id", "model", "endpoint")),
    (usage_rollup_all, ("day", "model", "endpoint")),
)


def _coarser(changes: dict[Key, Sums]) -> dict[tuple[str, str, str], Sums]:
    """The per-key sums added up per day, model and endpoint (usage_rollup_all)."""
    out: dict[tuple[str, str, str], Sums] = {}
    for (_, day, _, model, endpoint), change in changes.items():
        out.setdefault((day, model, endpoint), Sums()).add(
            1, change.requests, change.prompt, change.completion, change.cached, change.cost,
            change.units, 1)
    return out


def _apply(conn: Connection, changes: dict[Key, Sums], sign: int) -> None:
    """Add (`sign` 1) or take back (-1) these sums in both rollup tables; a row left with no
    request is deleted."""
    if changes:
        _apply_level(conn, *LEVELS[0], changes, sign)
        _apply_level(conn, *LEVELS[1], _coarser(changes), sign)


def _apply_level(conn: Connection, table: Table, names: tuple[str, ...],
                 changes: dict[Any, Sums], sign: int) -> None:
    t = table.c
    # the rows of the days (and accounts) touched, read in one query and matched here: a
    # pass covers a minute or so of traffic, hence a day or two
    lead = names[:2] if names[0] == "account_id" else names[:1]
    existing: dict[Any, Sums] = {}
    rows = conn.execute(select(*(t[n] for n in names), t.requests, t.prompt_tokens,
                               t.completion_tokens, t.cached_tokens, t.cost_nano, t.units)
                        .where(*(t[n].in_(sorted({key[i] for key in changes}))
                                 for i, n in enumerate(lead))))
    for row in rows:
        key = tuple(row[:len(names)])
        if key in changes:
            n, p, o, cached, cost, units = row[len(names):]
            sums = existing[key] = Sums()
            sums.add(1, n, p, o, cached, cost, json.loads(units), 1)
    inserts, updates, deletes = [], [], []
    for key, change in changes.items():
        sums = existing.get(key)
        fresh = sums is None
        if fresh:
            sums = Sums()
        sums.add(sign, change.requests, change.prompt, change.completion, change.cached,
                 change.cost, change.units, 1)
        where = dict(zip(names, key, strict=True))
        if sums.requests <= 0:
            if not fresh:
                deletes.append({f"k_{n}": v for n, v in where.items()})
        elif fresh:
            inserts.append({**where, **sums.values()})
        else:
            updates.append({**{f"k_{n}": v for n, v in where.items()}, **sums.values()})
    matches = and_(*(t[n] == bindparam(f"k_{n}") for n in names))
    if inserts:
        conn.execute(insert(table), inserts)
    if updates:
        conn.execute(update(table).where(matches), updates)
    if deletes:
        conn.execute(delete(table).where(matches), deletes)


def _state(conn: Connection) -> tuple[int, int]:
    row = conn.execute(select(usage_rollup_state.c.rolled_to, usage_rollup_state.c.version)
                       .where(usage_rollup_state.c.id == STATE_ID)).first()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def roll_up(reader: Callable[[], AbstractContextManager[Connection]],
            writer: Callable[[], AbstractContextManager[Connection]],
            lag: float, most: int, now: datetime | None = None) -> int:
    """Fold the next usage rows into the sums (see the module docstring); how many."""
    now = now or datetime.now(UTC)
    c = usage_log.c
    with reader() as conn:
        old, version = _state(conn)
        target = conn.execute(select(c.id).where(c.id > old,
                                                 c.created_at < now - timedelta(seconds=lag))
                              .order_by(c.id.desc()).limit(1)).scalar()
        if target is None:
            return 0
        target = min(int(target), old + most)
        span = and_(c.id > old, c.id <= target)
        sums = _grouped(conn, span)
    folded = sum(s.requests for s in sums.values())
    with writer() as conn:
        moved = conn.execute(update(usage_rollup_state).where(
            usage_rollup_state.c.id == STATE_ID, usage_rollup_state.c.rolled_to == old,
            usage_rollup_state.c.version == version).values(rolled_to=target)).rowcount
        if moved != 1:
            return 0  # another pass or a prune came first: the next pass starts over
        _apply(conn, sums, 1)
    return folded


def unfold(conn: Connection, ids: Iterable[int] | Any) -> None:
    """Inside a prune's write transaction: take the folded rows among `ids` (a list or a
    subquery of usage_log ids about to be deleted) back out of the sums, and bump the
    version so that a pass summed before this prune is not applied."""
    state = select(usage_rollup_state.c.rolled_to).where(
        usage_rollup_state.c.id == STATE_ID)
    if conn.dialect.name == "postgresql":
        state = state.with_for_update()  # waits for, and then blocks, a pass's apply
    rolled = conn.execute(state).scalar()
    if rolled is None:
        return
    _apply(conn, _grouped(conn, and_(usage_log.c.id.in_(ids), usage_log.c.id <= rolled)), -1)
    conn.execute(update(usage_rollup_state).where(usage_rollup_state.c.id == STATE_ID)
                 .values(version=usage_rollup_state.c.version + 1))
