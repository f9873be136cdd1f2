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
  `most` ids at a time. The span is chosen on a reader connection; the short write
  transaction then moves `rolled_to` only if it and the state's `version` are unchanged
  (another worker's pass, or a prune, came first: nothing is applied, the next pass tries
  again) and adds the span's sums. Returns how many rows it folded.
- `unfold(conn, ids)` is the pruning side: inside the prune's write transaction, before the
  rows are deleted, it takes the folded ones among them back out of the sums (a sum that
  reaches zero requests is deleted) and bumps `version`.
- The request path never touches any of this: usage rows are written as before.

The sums are computed and applied by the database (one upsert per table, the units' JSON
summed with json_each / jsonb_each): summing in Python took the worker's event loop for
milliseconds a chunk, and every request of the worker waited meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text, update

from .schema import usage_log, usage_rollup, usage_rollup_all, usage_rollup_state

STATE_ID = 1


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


# Each rollup table and the columns of its key (the span's columns of the same names).
LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (usage_rollup.name, ("account_id", "day", "key_id", "model", "endpoint")),
    (usage_rollup_all.name, ("day", "model", "endpoint")),
)
_SUMS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_nano")

# The usage rows of a span with their rollup key: `day` the UTC day, `key_id` '' for none.
_SPAN = {
    "sqlite": "SELECT account_id, substr(created_at, 1, 10) AS day, "
              "coalesce(key_id, '') AS key_id, model, endpoint, {sums}, details "
              "FROM usage_log WHERE {where}",
    "postgresql": "SELECT account_id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') "
                  "AS day, coalesce(key_id, '') AS key_id, model, endpoint, {sums}, details "
                  "FROM usage_log WHERE {where}",
}
# The numeric values of the rows' `details` summed per key and name (booleans, strings and
# other values are not units); a float total is rounded to 9 places so that adding and
# taking back leaves no dust (PostgreSQL's numeric sums exactly).
_NAMED = {
    "sqlite": "SELECT {keys}, j.key AS name, sum(j.value) AS total "
              "FROM span, json_each(coalesce(nullif(span.details, ''), '{{}}')) AS j "
              "WHERE j.type IN ('integer', 'real') GROUP BY {keys}, j.key",
    "postgresql": "SELECT {keys}, j.key AS name, sum(j.value::numeric) AS total "
                  "FROM span, jsonb_each(coalesce(nullif(span.details, ''), '{{}}')::jsonb) "
                  "AS j WHERE jsonb_typeof(j.value) = 'number' GROUP BY {keys}, j.key",
}
_UNITS = {
    "sqlite": "SELECT {keys}, json_group_object(name, CASE WHEN typeof(total) = 'real' "
              "THEN round({sign} * total, 9) ELSE {sign} * total END) AS units "
              "FROM (SELECT * FROM named ORDER BY name) WHERE total <> 0 GROUP BY {keys}",
    "postgresql": "SELECT {keys}, jsonb_object_agg(name, {sign} * total)::text AS units "
                  "FROM named WHERE total <> 0 GROUP BY {keys}",
}
# Two JSON objects of units added up, names whose total is zero left out.
_MERGED_UNITS = {
    "sqlite": "(SELECT coalesce(json_group_object(name, total), '{{}}') FROM ("
              "SELECT name, CASE WHEN typeof(sum(v)) = 'real' THEN round(sum(v), 9) "
              "ELSE sum(v) END AS total FROM ("
              "SELECT key AS name, value AS v FROM json_each({table}.units) UNION ALL "
              "SELECT key, value FROM json_each(excluded.units)) GROUP BY name ORDER BY name) "
              "WHERE total <> 0)",
    "postgresql": "(SELECT coalesce(jsonb_object_agg(name, total), '{{}}'::jsonb)::text FROM ("
                  "SELECT key AS name, sum(value::numeric) AS total FROM ("
                  "SELECT key, value FROM jsonb_each({table}.units::jsonb) UNION ALL "
                  "SELECT key, value FROM jsonb_each(excluded.units::jsonb)) AS x "
                  "GROUP BY key) AS y WHERE total <> 0)",
}


@functools.cache
def _fold_statements(dialect: str, where: str, sign: int) -> tuple[str, ...]:
    """The statements that add (`sign` 1) or take back (-1) the sums of the usage rows
    matching `where` in both rollup tables, all in SQL: one upsert per table (a sum that
    exists is added to, others are inserted), then, when taking back, the deletion of the
    sums of those keys left with no request."""
    span = _SPAN[dialect].format(sums=", ".join(_SUMS), where=where)
    out = []
    for table, names in LEVELS:
        keys = ", ".join(names)
        totals = ", ".join(f"coalesce(sum({n}), 0) AS {n}" for n in _SUMS)
        with_ = (f"WITH span AS ({span}), "
                 f"named AS ({_NAMED[dialect].format(keys=keys)}), "
                 f"units AS ({_UNITS[dialect].format(keys=keys, sign=sign)}), "
                 f"sums AS (SELECT {keys}, count(*) AS requests, {totals} "
                 f"FROM span GROUP BY {keys}) ")
        columns = ("requests", *_SUMS)
        same_key = " AND ".join(f"u.{n} = s.{n}" for n in names)
        added = ", ".join(f"{n} = {table}.{n} + excluded.{n}" for n in columns)
        merged = _MERGED_UNITS[dialect].format(table=table)
        out.append(
            f"{with_}INSERT INTO {table} ({keys}, {', '.join(columns)}, units) "
            f"SELECT {', '.join(f's.{n}' for n in names)}, "
            f"{', '.join(f'{sign} * s.{n}' for n in columns)}, coalesce(u.units, '{{}}') "
            f"FROM sums AS s LEFT JOIN units AS u ON {same_key} WHERE true "
            f"ON CONFLICT ({keys}) DO UPDATE SET {added}, units = CASE "
            f"WHEN excluded.units = '{{}}' THEN {table}.units ELSE {merged} END")
        if sign < 0:
            out.append(f"WITH span AS ({span}) DELETE FROM {table} WHERE requests <= 0 "
                       f"AND ({keys}) IN (SELECT {keys} FROM span)")
    return tuple(out)


def _fold(conn: Connection, where: str, params: dict[str, Any], sign: int) -> None:
    """Inside a write transaction: add or take back the sums of the rows matching `where`
    (SQL over usage_log; its parameters in `params`; `ids` expands to a list)."""
    for sql in _fold_statements(conn.dialect.name, where, sign):
        statement = text(sql)
        if "ids" in params:
            statement = statement.bindparams(bindparam("ids", expanding=True))
        conn.execute(statement, params)


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
        folded = conn.execute(select(func.count()).select_from(usage_log)
                              .where(c.id > old, c.id <= target)).scalar()
    with writer() as conn:
        moved = conn.execute(update(usage_rollup_state).where(
            usage_rollup_state.c.id == STATE_ID, usage_rollup_state.c.rolled_to == old,
            usage_rollup_state.c.version == version).values(rolled_to=target)).rowcount
        if moved != 1:
            return 0  # another pass or a prune came first: the next pass starts over
        _fold(conn, "id > :low AND id <= :high", {"low": old, "high": target}, 1)
    return int(folded or 0)


def unfold(conn: Connection, ids: Iterable[int]) -> None:
    """Inside a prune's write transaction: take the folded rows among `ids` (usage_log ids
    about to be deleted) back out of the sums, and bump the
    version so that a pass summed before this prune is not applied."""
    state = select(usage_rollup_state.c.rolled_to).where(
        usage_rollup_state.c.id == STATE_ID)
    if conn.dialect.name == "postgresql":
        state = state.with_for_update()  # waits for, and then blocks, a pass's apply
    rolled = conn.execute(state).scalar()
    if rolled is None:
        return
    _fold(conn, "id IN :ids AND id <= :rolled", {"ids": list(ids), "rolled": rolled}, -1)
    conn.execute(update(usage_rollup_state).where(usage_rollup_state.c.id == STATE_ID)
                 .values(version=usage_rollup_state.c.version + 1))
