"""An account's money history from the ledger: top-ups, adjustments, debts and debt payments,
in keyset pages.

Contract:
- `page(conn, account_id, limit, kinds, cursor)` gives up to `limit` entries of `kinds`
  (default: every history kind), newest first (by time, then reference and kind), below
  `cursor` (None: from the newest), and the cursor of the next, older page (None on the
  last). Entries written while a client pages are newer than every page it has seen, so they
  never shift or repeat a later page.
- `newer_page(conn, account_id, limit, kinds, cursor)` is the page just above a cursor (the
  way back from an older page), newest first, with the cursor of the page above it or None.
- A cursor is an opaque string; `decode_cursor` raises ValueError for one this module did not
  make.
- Holds, settles and releases are left out: they are the requests, which the usage log shows
  one row each. The queries read the ledger's partial index of the history kinds
  (schema.ix_ledger_entries_history), which the hot path's hold and settle entries never
  write.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, literal, select, tuple_

from . import ledger
from .schema import HISTORY_KINDS, HISTORY_PREDICATE, ledger_entries

MAX_PAGE = 1000
_CURSOR_TAG = "m1"


@dataclass(frozen=True, slots=True)
class MoneyEntry:
    """`amount_nano` moved the balance (negative: taken), `debt_nano` the debt."""

    reference: str
    kind: str
    amount_nano: int
    debt_nano: int
    created_at: datetime
    note: str | None


def encode_cursor(entry: MoneyEntry) -> str:
    raw = json.dumps([_CURSOR_TAG, entry.created_at.isoformat(), entry.reference, entry.kind])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    """(time, reference, kind) of the entry a cursor continues from; ValueError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, when, reference, kind = json.loads(raw)
        when = ledger.utc(datetime.fromisoformat(when))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise ValueError("not a cursor of this history") from None
    if tag != _CURSOR_TAG or not isinstance(reference, str) or kind not in HISTORY_KINDS:
        raise ValueError("not a cursor of this history")
    return when, reference, kind


def _check(limit: int, kinds: tuple[str, ...]) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
    if not kinds or not set(kinds) <= set(HISTORY_KINDS):
        raise ValueError(f"kinds must be some of {HISTORY_KINDS}")


def _query(account_id: int, kinds: tuple[str, ...], *clauses: object):
    e = ledger_entries.c
    # the partial index's own predicate, word for word, so SQLite can use the index
    where = [e.account_id == account_id, HISTORY_PREDICATE]
    if set(kinds) != set(HISTORY_KINDS):
        where.append(e.kind.in_(kinds))
    return (select(e.reference, e.kind, e.amount_nano, e.debt_nano, e.created_at, e.note)
            .where(and_(*where, *clauses)))


def _entries(conn: Connection, query: object) -> list[MoneyEntry]:
    return [MoneyEntry(r, k, a, d, ledger.utc(w), n) for r, k, a, d, w, n in conn.execute(query)]


def _key():
    e = ledger_entries.c
    return tuple_(e.created_at, e.reference, e.kind)


def _position(cursor: str):
    """The cursor's entry as a row value, each part bound with its column's type."""
    e = ledger_entries.c
    return tuple_(*(literal(value, column.type) for column, value in
                    zip((e.created_at, e.reference, e.kind), decode_cursor(cursor),
                        strict=True)))


def page(conn: Connection, account_id: int, limit: int,
         kinds: tuple[str, ...] = HISTORY_KINDS, cursor: str | None = None
         ) -> tuple[list[MoneyEntry], str | None]:
    """Up to `limit` entries (newest first) below `cursor`, and the next page's cursor."""
    _check(limit, kinds)
    clauses = [] if cursor is None else [_key() < _position(cursor)]
    e = ledger_entries.c
    query = (_query(account_id, kinds, *clauses)
             .order_by(e.created_at.desc(), e.reference.desc(), e.kind.desc())
             .limit(limit + 1))
    found = _entries(conn, query)
    if len(found) > limit:
        return found[:limit], encode_cursor(found[limit - 1])
    return found, None


def newer_page(conn: Connection, account_id: int, limit: int,
               kinds: tuple[str, ...] = HISTORY_KINDS, cursor: str | None = None
               ) -> tuple[list[MoneyEntry], str | None]:
    """Up to `limit` entries just above `cursor` (newest first), and the cursor of the
    entries above those (None when there are none)."""
    _check(limit, kinds)
    if cursor is None:
        raise ValueError("a newer page starts from a cursor")
    e = ledger_entries.c
    query = (_query(account_id, kinds, _key() > _position(cursor))
             .order_by(e.created_at.asc(), e.reference.asc(), e.kind.asc())
             .limit(limit + 1))
    found = _entries(conn, query)
    above = encode_cursor(found[limit - 1]) if len(found) > limit else None
    return found[:limit][::-1], above
