"""An account's money history from the ledger: top-ups, adjustments, debts and debt payments.

Contract: `entries(conn, account_id, limit, kinds)` gives the latest `limit` ledger entries of
those kinds (default `HISTORY_KINDS`), newest first. Holds, settles and releases are left
out: they are the requests, which the usage log shows one row each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from . import ledger
from .schema import ledger_entries

HISTORY_KINDS = ("topup", "adjustment", "debt", "debt_payment")


@dataclass(frozen=True, slots=True)
class MoneyEntry:
    """`amount_nano` moved the balance (negative: taken), `debt_nano` the debt."""

    reference: str
    kind: str
    amount_nano: int
    debt_nano: int
    created_at: datetime
    note: str | None


def entries(conn: Connection, account_id: int, limit: int,
            kinds: tuple[str, ...] = HISTORY_KINDS) -> list[MoneyEntry]:
    """The account's latest `limit` history entries of `kinds`, newest first."""
    e = ledger_entries.c
    query = (select(e.reference, e.kind, e.amount_nano, e.debt_nano, e.created_at, e.note)
             .where(e.account_id == account_id).where(e.kind.in_(kinds))
             .order_by(e.created_at.desc(), e.reference.desc(), e.kind.desc())
             .limit(limit))
    return [MoneyEntry(r, k, a, d, ledger.utc(w), n) for r, k, a, d, w, n in conn.execute(query)]
