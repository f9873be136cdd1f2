"""Money: holds, settlement and top-ups, as statements run inside the caller's transaction.

Every function takes a Connection already in a write transaction (the store opens it) and
keeps the invariant that a balance never goes below zero (also enforced by a CHECK):
- hold: debit the balance only if it covers the amount, and record the hold;
- settle: drop the hold, give back (hold - charged) or take the overrun from the balance,
  charged = min(cost, hold + balance); log exactly one usage row per request id;
- release: give back holds (one request, or all older than a cutoff).
Amounts are integer micro-credits; helpers here validate them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from .records import UsageRecord
from .schema import accounts, holds, usage_log

MAX_MICRO = 2**63 - 1

_debit_if_covered = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account_id"))
    .where(accounts.c.balance_micro >= bindparam("b_amount"))
    .values(balance_micro=accounts.c.balance_micro - bindparam("b_amount"))
)
_debit = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account_id"))
    .values(balance_micro=accounts.c.balance_micro - bindparam("b_amount"))
)
_credit = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account_id"))
    .values(balance_micro=accounts.c.balance_micro + bindparam("b_amount"))
)
_balance_for_update = (
    select(accounts.c.balance_micro)
    .where(accounts.c.id == bindparam("b_account_id"))
    .with_for_update()
)
_insert_hold = insert(holds)
_take_hold = (
    delete(holds)
    .where(holds.c.request_id == bindparam("b_request_id"))
    .returning(holds.c.account_id, holds.c.amount_micro)
)
_take_stale_holds = (
    delete(holds)
    .where(holds.c.created_at < bindparam("b_cutoff"))
    .returning(holds.c.account_id, holds.c.amount_micro)
)
_logged = select(usage_log.c.id).where(usage_log.c.request_id == bindparam("b_request_id"))
_insert_usage = insert(usage_log)


def check_micro(value: int, what: str, *, positive: bool = False) -> int:
    """Validate an amount of micro-credits: an int (never a float), >= 0 (> 0 if positive)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int of micro-credits, not {type(value).__name__}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")
    if value > MAX_MICRO:
        raise ValueError(f"{what} is too large")
    return value


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC datetime (SQLite hands back naive UTC, PostgreSQL the session zone)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def hold(conn: Connection, request_id: str, account_id: int, amount: int, now: datetime) -> bool:
    """Debit `amount` and record the hold; False (nothing changed) when it is not covered."""
    params = {"b_account_id": account_id, "b_amount": amount}
    if conn.execute(_debit_if_covered, params).rowcount != 1:
        return False
    conn.execute(
        _insert_hold,
        {
            "request_id": request_id,
            "account_id": account_id,
            "amount_micro": amount,
            "created_at": now,
        },
    )
    return True


class SettleStatements(Protocol):
    """The statements settlement needs, run inside one write transaction. Two executors
    implement them: SQLAlchemy Core here, raw driver cursors in fastpath.py (the hot path);
    `settle_with` is the one algorithm both run."""

    def take_hold(self, request_id: str) -> tuple[int, int] | None: ...

    def is_logged(self, request_id: str) -> bool: ...

    def credit(self, account_id: int, amount: int) -> None: ...

    def debit(self, account_id: int, amount: int) -> None: ...

    def balance_for_update(self, account_id: int) -> int: ...

    def log(self, account_id: int, charged: int) -> None: ...


def settle_with(db: SettleStatements, request_id: str, cost: int, default_account: int) -> int:
    """Turn the hold into a charge and log the request; return micro-credits charged.

    Without a hold (settled already, or released by `release_stale`): 0 when the request is
    already logged, otherwise the cost is taken from the balance as far as it goes.
    """
    row = db.take_hold(request_id)
    if row is None:
        if db.is_logged(request_id):
            return 0
        account_id, held = default_account, 0
    else:
        account_id, held = row
    if cost <= held:
        charged = cost
        if held > cost:
            db.credit(account_id, held - cost)
    else:
        extra = min(cost - held, db.balance_for_update(account_id))
        if extra:
            db.debit(account_id, extra)
        charged = held + extra
    db.log(account_id, charged)
    return charged


class _CoreStatements:
    def __init__(self, conn: Connection, request_id: str, usage: UsageRecord,
                 now: datetime) -> None:
        self.conn, self.request_id, self.usage, self.now = conn, request_id, usage, now

    def take_hold(self, request_id: str) -> tuple[int, int] | None:
        row = self.conn.execute(_take_hold, {"b_request_id": request_id}).first()
        return None if row is None else (row[0], row[1])

    def is_logged(self, request_id: str) -> bool:
        return is_logged(self.conn, request_id)

    def credit(self, account_id: int, amount: int) -> None:
        self.conn.execute(_credit, {"b_account_id": account_id, "b_amount": amount})

    def debit(self, account_id: int, amount: int) -> None:
        self.conn.execute(_debit, {"b_account_id": account_id, "b_amount": amount})

    def balance_for_update(self, account_id: int) -> int:
        return self.conn.execute(_balance_for_update, {"b_account_id": account_id}).scalar() or 0

    def log(self, account_id: int, charged: int) -> None:
        self.conn.execute(_insert_usage, usage_row(self.usage, self.request_id, account_id,
                                                   charged, self.now))


def settle(conn: Connection, request_id: str, cost: int, usage: UsageRecord, now: datetime) -> int:
    """`settle_with` on SQLAlchemy Core, in the caller's transaction."""
    return settle_with(_CoreStatements(conn, request_id, usage, now), request_id, cost,
                       usage.account_id)


def is_logged(conn: Connection, request_id: str) -> bool:
    return conn.execute(_logged, {"b_request_id": request_id}).first() is not None


def release(conn: Connection, request_id: str) -> int:
    """Give back the hold of one request in full; return the amount (0 when none)."""
    row = conn.execute(_take_hold, {"b_request_id": request_id}).first()
    if row is None:
        return 0
    account_id, held = row
    if held:
        conn.execute(_credit, {"b_account_id": account_id, "b_amount": held})
    return held


def release_stale(conn: Connection, cutoff: datetime) -> int:
    """Give back every hold created before `cutoff`; return how many were released."""
    rows = conn.execute(_take_stale_holds, {"b_cutoff": cutoff}).all()
    refunds: dict[int, int] = defaultdict(int)
    for account_id, amount in rows:
        refunds[account_id] += amount
    # A fixed order keeps two concurrent releases from deadlocking on PostgreSQL.
    for account_id in sorted(refunds):
        if refunds[account_id]:
            conn.execute(_credit, {"b_account_id": account_id, "b_amount": refunds[account_id]})
    return len(rows)


def usage_row(
    usage: UsageRecord, request_id: str, account_id: int, charged: int, now: datetime
) -> dict[str, Any]:
    created = utc(usage.created_at) or now
    return {
        "request_id": request_id,
        "created_at": created,
        "account_id": account_id,
        "key_id": usage.key_id,
        "endpoint": usage.endpoint,
        "model": usage.model,
        "provider": usage.provider,
        "status": usage.status,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "details": json.dumps(usage.details or {}, separators=(",", ":"), sort_keys=True),
        "cost_micro": charged,
        "latency_ms": usage.latency_ms,
    }


def usage_record(row: Any) -> UsageRecord:
    m = row._mapping
    return UsageRecord(
        request_id=m["request_id"],
        account_id=m["account_id"],
        key_id=m["key_id"],
        endpoint=m["endpoint"],
        model=m["model"],
        provider=m["provider"],
        status=m["status"],
        prompt_tokens=m["prompt_tokens"],
        completion_tokens=m["completion_tokens"],
        cached_tokens=m["cached_tokens"],
        details=json.loads(m["details"]) if m["details"] else {},
        cost_micro=m["cost_micro"],
        latency_ms=m["latency_ms"],
        created_at=utc(m["created_at"]),
    )
