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
from typing import Any

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


def settle(conn: Connection, request_id: str, cost: int, usage: UsageRecord, now: datetime) -> int:
    """Turn the hold into a charge and log the request; return micro-credits charged.

    Without a hold (settled already, or released by `release_stale`): 0 when the request is
    already logged, otherwise the cost is taken from the balance as far as it goes.
    """
    row = conn.execute(_take_hold, {"b_request_id": request_id}).first()
    if row is None:
        if is_logged(conn, request_id):
            return 0
        account_id, held = usage.account_id, 0
    else:
        account_id, held = row
    if cost <= held:
        charged = cost
        if held > cost:
            conn.execute(_credit, {"b_account_id": account_id, "b_amount": held - cost})
    else:
        balance = conn.execute(_balance_for_update, {"b_account_id": account_id}).scalar()
        extra = min(cost - held, balance or 0)
        if extra:
            conn.execute(_debit, {"b_account_id": account_id, "b_amount": extra})
        charged = held + extra
    conn.execute(_insert_usage, usage_row(usage, request_id, account_id, charged, now))
    return charged


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
