"""Money: holds, settlement, top-ups, debt and the ledger, as statements run inside the
caller's transaction.

Every function takes a Connection already in a write transaction (the store opens it) and
writes each movement of money as an append-only `ledger_entries` row in that same
transaction, so an account's balance is always the sum of its entries' `amount_nano` and its
debt the sum of their `debt_nano`. A balance never goes below zero (also a CHECK):
- hold: debit the balance only if it covers the amount and the account owes nothing, record
  the hold and a `hold` entry;
- settle (`settle_with`, the one algorithm both executors run): drop the hold, give back
  (hold - cost) or take the overrun from the balance as far as it goes; what neither covers
  becomes the account's debt (a `debt` entry). The `settle` entry carries the net movement,
  so a request writes two entries (hold, settle) and three with a debt. Exactly one usage row
  per request id, whose cost is the whole cost: the settle entry's key (account, request id,
  kind) is what makes a second settle fail, so usage_log needs no unique index of its own;
- release: give back holds in full (one request, or all older than a cutoff);
- top-up: credit the balance, then pay any debt from it (`debt_payment`).
Amounts are integer nano-credits (1 credit = 10^9). Each request's cost was rounded once,
up to the nano-credit, before it reaches this module (runtime/billing/pricing.py).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    DateTime,
    bindparam,
    delete,
    exists,
    insert,
    select,
    text,
    update,
)

from runtime.limits.spend import UNRESERVE

from .records import UsageRecord
from .schema import accounts, api_keys, holds, ledger_entries, usage_log, usage_retention

MAX_NANO = 2**63 - 1
# How many discrepancies of each sort an audit names (the counts are always complete).
AUDIT_EXAMPLES = 20

_debit_if_covered = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account_id"))
    .where(accounts.c.balance_nano >= bindparam("b_amount"))
    .where(accounts.c.debt_nano == 0)
    .values(balance_nano=accounts.c.balance_nano - bindparam("b_amount"))
)
_debit_if_key_unchanged = _debit_if_covered.where(accounts.c.disabled_at.is_(None)).where(
    exists().where(api_keys.c.id == bindparam("b_key_id"))
    .where(api_keys.c.version == bindparam("b_key_version"))
    .where(api_keys.c.revoked_at.is_(None)))
_debit_into_debt = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account_id"))
    .values(balance_nano=accounts.c.balance_nano - bindparam("b_amount"),
            debt_nano=accounts.c.debt_nano + bindparam("b_debt"))
)
_credit = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account_id"))
    .values(balance_nano=accounts.c.balance_nano + bindparam("b_amount"))
)
_balance_for_update = (
    select(accounts.c.balance_nano)
    .where(accounts.c.id == bindparam("b_account_id"))
    .with_for_update()
)
_money_for_update = (
    select(accounts.c.balance_nano, accounts.c.debt_nano)
    .where(accounts.c.id == bindparam("b_account_id"))
    .with_for_update()
)
_insert_hold = insert(holds)
_insert_entry = insert(ledger_entries)
_take_hold = (
    delete(holds)
    .where(holds.c.request_id == bindparam("b_request_id"))
    .returning(holds.c.account_id, holds.c.amount_nano)
)
_release_hold = (
    delete(holds)
    .where(holds.c.request_id == bindparam("b_request_id"))
    .returning(holds.c.account_id, holds.c.amount_nano, holds.c.spend_key)
)
_take_stale_holds = (
    delete(holds)
    .where(holds.c.created_at < bindparam("b_cutoff"))
    .returning(holds.c.request_id, holds.c.account_id, holds.c.amount_nano,
               holds.c.spend_key)
)
# A key's spend limits reserved the hold (limits/spend.py): giving the hold back gives back
# the reservation, never below zero.
_unreserve_key = text(UNRESERVE)
_settled = (
    select(ledger_entries.c.kind)
    .where(ledger_entries.c.account_id == bindparam("b_account_id"))
    .where(ledger_entries.c.reference == bindparam("b_request_id"))
    .where(ledger_entries.c.kind == "settle")
)
_insert_usage = insert(usage_log)


def check_nano(value: int, what: str, *, positive: bool = False) -> int:
    """Validate an amount of nano-credits: an int (never a float), >= 0 (> 0 if positive)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int of nano-credits, not {type(value).__name__}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")
    if value > MAX_NANO:
        raise ValueError(f"{what} is too large")
    return value


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC datetime (SQLite hands back naive UTC, PostgreSQL the session zone)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def new_reference(kind: str) -> str:
    """The reference of a movement that is not a request's (top-up, adjustment, ...)."""
    return f"{kind}_{uuid.uuid4().hex}"


def entry(conn: Connection, account_id: int, reference: str, kind: str, amount: int,
          debt: int, now: datetime, note: str | None = None) -> None:
    """Append one ledger entry (the caller changes `accounts` to match, same transaction)."""
    conn.execute(_insert_entry, {"account_id": account_id, "reference": reference,
                                 "kind": kind, "amount_nano": amount, "debt_nano": debt,
                                 "created_at": now, "note": note})


def hold(conn: Connection, request_id: str, account_id: int, amount: int, now: datetime,
         spend_key: str | None = None, key_check: tuple[str, int] | None = None) -> bool:
    """Debit `amount` and record the hold (with the key whose spend limits reserved it);
    False (nothing changed) when it is not covered or the account owes a debt, and with
    `key_check` (key id, version) when the account is disabled or the key is revoked or no
    longer at that version (runtime/store/key_cache.py)."""
    params: dict[str, Any] = {"b_account_id": account_id, "b_amount": amount}
    debit = _debit_if_covered
    if key_check is not None:
        debit = _debit_if_key_unchanged
        params["b_key_id"], params["b_key_version"] = key_check
    if conn.execute(debit, params).rowcount != 1:
        return False
    conn.execute(_insert_hold, {"request_id": request_id, "account_id": account_id,
                                "amount_nano": amount, "created_at": now,
                                "spend_key": spend_key})
    entry(conn, account_id, request_id, "hold", -amount, 0, now)
    return True


class SettleStatements(Protocol):
    """The statements settlement needs, run inside one write transaction. Two executors
    implement them: SQLAlchemy Core here, raw driver cursors in fastpath.py (the hot path);
    `settle_with` is the one algorithm both run."""

    def take_hold(self, request_id: str) -> tuple[int, int] | None: ...

    def is_settled(self, account_id: int, request_id: str) -> bool:
        """The request has its settle entry (and so its usage row) already."""

    def credit(self, account_id: int, amount: int) -> None: ...

    def debit(self, account_id: int, amount: int, debt: int) -> None:
        """Take `amount` from the balance and add `debt` to the account's debt."""

    def balance_for_update(self, account_id: int) -> int: ...

    def entry(self, account_id: int, kind: str, amount: int, debt: int) -> None:
        """Append a ledger entry of this request."""

    def log(self, account_id: int, charged: int) -> None: ...


def settle_with(db: SettleStatements, request_id: str, cost: int, default_account: int) -> int:
    """Turn the hold into a charge, write the ledger and log the request; return the
    nano-credits charged (the whole cost: what the hold and balance do not cover is debt).

    Without a hold (settled already, or released by `release_stale`): 0 when the request is
    already logged, otherwise the cost is charged as if the hold had been 0.
    """
    row = db.take_hold(request_id)
    if row is None:
        if db.is_settled(default_account, request_id):
            return 0
        account_id, held = default_account, 0
    else:
        account_id, held = row
    shortfall = 0
    if cost <= held:
        net = held - cost
        if net:
            db.credit(account_id, net)
    else:
        extra = min(cost - held, db.balance_for_update(account_id))
        shortfall = cost - held - extra
        net = -extra
        db.debit(account_id, extra, shortfall)
    db.entry(account_id, "settle", net, 0)
    if shortfall:
        db.entry(account_id, "debt", 0, shortfall)
    db.log(account_id, cost)
    return cost


class _CoreStatements:
    def __init__(self, conn: Connection, request_id: str, usage: UsageRecord,
                 now: datetime) -> None:
        self.conn, self.request_id, self.usage, self.now = conn, request_id, usage, now

    def take_hold(self, request_id: str) -> tuple[int, int] | None:
        row = self.conn.execute(_take_hold, {"b_request_id": request_id}).first()
        return None if row is None else (row[0], row[1])

    def is_settled(self, account_id: int, request_id: str) -> bool:
        return is_settled(self.conn, account_id, request_id)

    def credit(self, account_id: int, amount: int) -> None:
        self.conn.execute(_credit, {"b_account_id": account_id, "b_amount": amount})

    def debit(self, account_id: int, amount: int, debt: int) -> None:
        self.conn.execute(_debit_into_debt, {"b_account_id": account_id, "b_amount": amount,
                                             "b_debt": debt})

    def balance_for_update(self, account_id: int) -> int:
        return self.conn.execute(_balance_for_update, {"b_account_id": account_id}).scalar() or 0

    def entry(self, account_id: int, kind: str, amount: int, debt: int) -> None:
        entry(self.conn, account_id, self.request_id, kind, amount, debt,
              utc(self.usage.created_at) or self.now)

    def log(self, account_id: int, charged: int) -> None:
        self.conn.execute(_insert_usage, usage_row(self.usage, self.request_id, account_id,
                                                   charged, self.now))


def settle(conn: Connection, request_id: str, cost: int, usage: UsageRecord, now: datetime,
           wrap: Callable[[SettleStatements], SettleStatements] | None = None) -> int:
    """`settle_with` on SQLAlchemy Core, in the caller's transaction; `wrap` may add
    statements of its own to the settlement's (a key's spend, runtime/limits/spend.py)."""
    db: SettleStatements = _CoreStatements(conn, request_id, usage, now)
    return settle_with(wrap(db) if wrap else db, request_id, cost, usage.account_id)


def is_settled(conn: Connection, account_id: int, request_id: str) -> bool:
    """The request has its settle entry: its ledger key makes it the one per request."""
    params = {"b_account_id": account_id, "b_request_id": request_id}
    return conn.execute(_settled, params).first() is not None


def release(conn: Connection, request_id: str, now: datetime) -> int:
    """Give back the hold of one request in full; return the amount (0 when none)."""
    row = conn.execute(_release_hold, {"b_request_id": request_id}).first()
    if row is None:
        return 0
    account_id, held, spend_key = row
    if held:
        conn.execute(_credit, {"b_account_id": account_id, "b_amount": held})
        if spend_key:
            conn.execute(_unreserve_key, {"amount": held, "key": spend_key})
    entry(conn, account_id, request_id, "release", held, 0, now)
    return held


def release_stale(conn: Connection, cutoff: datetime, now: datetime) -> int:
    """Give back every hold created before `cutoff`; return how many were released."""
    rows = conn.execute(_take_stale_holds, {"b_cutoff": cutoff}).all()
    refunds: dict[int, int] = defaultdict(int)
    for request_id, account_id, amount, spend_key in rows:
        refunds[account_id] += amount
        entry(conn, account_id, request_id, "release", amount, 0, now)
        if spend_key and amount:
            conn.execute(_unreserve_key, {"amount": amount, "key": spend_key})
    # A fixed order keeps two concurrent releases from deadlocking on PostgreSQL.
    for account_id in sorted(refunds):
        if refunds[account_id]:
            conn.execute(_credit, {"b_account_id": account_id, "b_amount": refunds[account_id]})
    return len(rows)


def credit(conn: Connection, account_id: int, amount: int, kind: str, now: datetime,
           note: str | None = None) -> str:
    """Add credits (a top-up or a positive adjustment) and pay any debt from the balance
    first; return the movement's reference."""
    reference = new_reference(kind)
    conn.execute(_credit, {"b_account_id": account_id, "b_amount": amount})
    entry(conn, account_id, reference, kind, amount, 0, now, note)
    pay_debt(conn, account_id, reference, now)
    return reference


def debit(conn: Connection, account_id: int, amount: int, now: datetime,
          note: str | None = None) -> bool:
    """A negative adjustment: take `amount` if the balance covers it; False otherwise."""
    taken = conn.execute(update(accounts)
                         .where(accounts.c.id == account_id)
                         .where(accounts.c.balance_nano >= amount)
                         .values(balance_nano=accounts.c.balance_nano - amount)).rowcount
    if taken != 1:
        return False
    entry(conn, account_id, new_reference("adjustment"), "adjustment", -amount, 0, now, note)
    return True


def pay_debt(conn: Connection, account_id: int, reference: str | None, now: datetime) -> int:
    """Pay as much of the account's debt as its balance covers; return the amount paid."""
    row = conn.execute(_money_for_update, {"b_account_id": account_id}).first()
    if row is None:
        return 0
    paid = min(row[0], row[1])
    if paid:
        conn.execute(_debit_into_debt, {"b_account_id": account_id, "b_amount": paid,
                                        "b_debt": -paid})
        entry(conn, account_id, reference or new_reference("debt_payment"), "debt_payment",
              -paid, -paid, now)
    return paid


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
        "details": usage.details_json(),
        "cost_nano": charged,
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
        cost_nano=m["cost_nano"],
        latency_ms=m["latency_ms"],
        created_at=utc(m["created_at"]),
    )


# -- audit --------------------------------------------------------------------------------------

# A request's charge from its entries: what its hold, release and settle took from the
# balance, plus what became debt.
_REQUEST_KINDS = "('hold', 'release', 'settle', 'debt')"
_AUDIT_TOTALS = text(
    "SELECT COALESCE(SUM(amount_nano), 0), COALESCE(SUM(debt_nano), 0), COUNT(*) "
    "FROM ledger_entries WHERE account_id = :account")
_AUDIT_HOLD_ENTRIES_OPEN = text(
    "SELECT e.reference, -e.amount_nano FROM ledger_entries e WHERE e.account_id = :account "
    "AND e.kind = 'hold' AND NOT EXISTS (SELECT 1 FROM ledger_entries c "
    "WHERE c.account_id = e.account_id AND c.reference = e.reference "
    "AND c.kind IN ('settle', 'release'))")
_AUDIT_HOLDS = text("SELECT request_id, amount_nano FROM holds WHERE account_id = :account")
_AUDIT_CHARGES = text(
    "SELECT u.request_id, u.cost_nano, c.charge, c.settles FROM usage_log u LEFT JOIN ("
    "SELECT reference, SUM(debt_nano) - SUM(amount_nano) AS charge, "
    "SUM(CASE WHEN kind = 'settle' THEN 1 ELSE 0 END) AS settles FROM ledger_entries "
    f"WHERE account_id = :account AND kind IN {_REQUEST_KINDS} GROUP BY reference) c "
    "ON c.reference = u.request_id WHERE u.account_id = :account "
    "AND (c.reference IS NULL OR c.settles <> 1 OR c.charge <> u.cost_nano)")
_AUDIT_USAGE_COUNT = text("SELECT COUNT(*) FROM usage_log WHERE account_id = :account")
# NOT IN, not a join on request_id: usage_log has no index on it (the hot path would pay
# for one), and SQLite planned the join as a scan of the account's usage rows per settle
# entry (66 s for 7,683 rows; NOT IN builds the set once). request_id is NOT NULL, so the
# answer is the same.
_AUDIT_UNLOGGED_SETTLES = text(
    "SELECT e.reference FROM ledger_entries e WHERE e.account_id = :account "
    "AND e.kind = 'settle' AND e.reference NOT IN (SELECT request_id FROM usage_log "
    "WHERE account_id = :account) "
    # usage rows older than the retention watermark may have been pruned (usage_queries.py)
    "AND e.created_at >= :kept_since").bindparams(
        bindparam("kept_since", type_=DateTime(timezone=True)))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AUDIT_DUPLICATE_USAGE = text(
    "SELECT request_id, COUNT(*) FROM usage_log WHERE account_id = :account "
    "GROUP BY request_id HAVING COUNT(*) > 1")


def ledger_utc_or(value: datetime | None) -> datetime:
    """The retention watermark, or the epoch when usage rows were never pruned."""
    return _EPOCH if value is None else utc(value)


def audit(conn: Connection, account: Any) -> dict[str, Any]:
    """Check one account's money against its ledger, in the caller's snapshot: balance and
    debt equal the sums of the entries; the open holds are exactly the hold entries not yet
    settled or released, for the same amounts; every usage row's cost equals what its
    request's entries charged, with one settle entry, and every settle entry has its usage
    row. Returns {"ok", "account", balances, counts, "problems": [sentences]}."""
    params = {"account": account.id}
    ledger_balance, ledger_debt, entries = conn.execute(_AUDIT_TOTALS, params).one()
    problems: list[str] = []
    if ledger_balance != account.balance_nano:
        problems.append(f"balance is {account.balance_nano} nano-credits but the ledger sums "
                        f"to {ledger_balance}")
    if ledger_debt != account.debt_nano:
        problems.append(f"debt is {account.debt_nano} nano-credits but the ledger sums to "
                        f"{ledger_debt}")
    open_entries = dict(conn.execute(_AUDIT_HOLD_ENTRIES_OPEN, params).all())
    open_holds = dict(conn.execute(_AUDIT_HOLDS, params).all())
    for request_id in sorted(set(open_entries) | set(open_holds))[:AUDIT_EXAMPLES * 2]:
        held, entered = open_holds.get(request_id), open_entries.get(request_id)
        if held is None:
            problems.append(f"hold entry of {request_id} ({entered}) is neither settled, "
                            "released nor an open hold")
        elif entered is None:
            problems.append(f"open hold of {request_id} ({held}) has no hold entry")
        elif held != entered:
            problems.append(f"open hold of {request_id} is {held} but its entry {entered}")
    mismatched = conn.execute(_AUDIT_CHARGES, params).all()
    for request_id, cost, charge, settles in mismatched[:AUDIT_EXAMPLES]:
        if charge is None or not settles:
            problems.append(f"usage row {request_id} (cost {cost}) has no settle entry")
        elif settles != 1:
            problems.append(f"usage row {request_id} has {settles} settle entries")
        else:
            problems.append(f"usage row {request_id} costs {cost} but its entries charged "
                            f"{charge}")
    kept_since = ledger_utc_or(conn.execute(select(usage_retention.c.pruned_before)).scalar())
    unlogged = conn.execute(_AUDIT_UNLOGGED_SETTLES,
                            {**params, "kept_since": kept_since}).scalars().all()
    problems.extend(f"settle entry {ref} has no usage row" for ref in unlogged[:AUDIT_EXAMPLES])
    duplicates = conn.execute(_AUDIT_DUPLICATE_USAGE, params).all()
    problems.extend(f"request {rid} has {count} usage rows"
                    for rid, count in duplicates[:AUDIT_EXAMPLES])
    usage_rows = conn.execute(_AUDIT_USAGE_COUNT, params).scalar()
    return {"ok": not problems, "account": account.name, "balance_nano": account.balance_nano,
            "debt_nano": account.debt_nano, "ledger_balance_nano": int(ledger_balance),
            "ledger_debt_nano": int(ledger_debt), "entries": entries,
            "open_holds": len(open_holds), "usage_rows": usage_rows,
            "mismatched_usage_rows": len(mismatched),
            "unlogged_settle_entries": len(unlogged), "problems": problems}
