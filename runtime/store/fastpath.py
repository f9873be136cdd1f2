"""The three per-request statements of the store — authenticate, hold, settle — on raw DB-API
connections taken from the store's SQLAlchemy pools.

They are the gateway's hot path: SQLAlchemy Core's execution machinery costs about 50 µs per
statement, several times the work SQLite itself does, so these run the same SQL as ledger.py
directly on the driver's cursor. Semantics are identical to the Core versions; any driver
error rolls back and returns `None`, and the Store then repeats the call on the Core path,
which owns every corner case (duplicate request ids, error mapping).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from .records import UsageRecord

_AUTH = ("SELECT k.id, k.account_id, a.name, k.name, k.display_prefix, k.created_at, "
         "k.revoked_at FROM api_keys k JOIN accounts a ON a.id = k.account_id "
         "WHERE k.secret_hash = :hash AND k.revoked_at IS NULL")
_DEBIT_IF_COVERED = ("UPDATE accounts SET balance_micro = balance_micro - :amount "
                     "WHERE id = :account AND balance_micro >= :amount")
_INSERT_HOLD = ("INSERT INTO holds (request_id, account_id, amount_micro, created_at) "
                "VALUES (:rid, :account, :amount, :now)")
_TAKE_HOLD = "DELETE FROM holds WHERE request_id = :rid RETURNING account_id, amount_micro"
_LOGGED = "SELECT 1 FROM usage_log WHERE request_id = :rid"
_CREDIT = "UPDATE accounts SET balance_micro = balance_micro + :amount WHERE id = :account"
_DEBIT = "UPDATE accounts SET balance_micro = balance_micro - :amount WHERE id = :account"
_BALANCE = "SELECT balance_micro FROM accounts WHERE id = :account"
_INSERT_USAGE = (
    "INSERT INTO usage_log (request_id, created_at, account_id, key_id, endpoint, model, "
    "provider, status, prompt_tokens, completion_tokens, cached_tokens, details, cost_micro, "
    "latency_ms) VALUES (:rid, :now, :account, :key, :endpoint, :model, :provider, :status, "
    ":prompt, :completion, :cached, :details, :cost, :latency)")

_NAMED = re.compile(r":([a-z]+)\b")


class FastPath:
    """Hot-path statements for one store; `sqlite` picks paramstyle and transaction start."""

    def __init__(self, writer: Engine, reader: Engine, sqlite: bool) -> None:
        self._writer = writer
        self._reader = reader
        self._sqlite = sqlite
        convert = (lambda sql: sql) if sqlite else (lambda sql: _NAMED.sub(r"%(\1)s", sql))
        self._sql = {name: convert(sql) for name, sql in (
            ("auth", _AUTH), ("debit_if_covered", _DEBIT_IF_COVERED),
            ("insert_hold", _INSERT_HOLD), ("take_hold", _TAKE_HOLD), ("logged", _LOGGED),
            ("credit", _CREDIT), ("debit", _DEBIT), ("usage", _INSERT_USAGE),
            ("balance", _BALANCE if sqlite else _BALANCE + " FOR UPDATE"))}

    def _time(self, now: datetime) -> Any:
        # SQLAlchemy stores SQLite timestamps as naive UTC text in this exact format.
        if self._sqlite:
            return now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return now

    def authenticate(self, secret_hash: str) -> tuple | None | bool:
        """The key row, None when there is none, False when the driver failed."""
        conn = self._reader.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(self._sql["auth"], {"hash": secret_hash})
            row = cur.fetchone()
            cur.close()
            if not self._sqlite:
                conn.rollback()
            elif row is not None:  # SQLite hands timestamps back as text
                row = (*row[:5], *(None if v is None else datetime.fromisoformat(v)
                                   for v in row[5:]))
            return row
        except Exception:
            _quiet_rollback(conn)
            return False
        finally:
            conn.close()

    def _write(self, work) -> Any:
        conn = self._writer.raw_connection()
        try:
            cur = conn.cursor()
            if self._sqlite:
                cur.execute("BEGIN IMMEDIATE")
            result = work(cur)
            conn.commit()
            cur.close()
            return result
        except Exception:
            _quiet_rollback(conn)
            return None
        finally:
            conn.close()

    def hold(self, request_id: str, account_id: int, amount: int, now: datetime) -> bool | None:
        sql = self._sql

        def work(cur) -> bool:
            cur.execute(sql["debit_if_covered"], {"amount": amount, "account": account_id})
            if cur.rowcount != 1:
                return False
            cur.execute(sql["insert_hold"], {"rid": request_id, "account": account_id,
                                             "amount": amount, "now": self._time(now)})
            return True

        return self._write(work)

    def settle(self, request_id: str, cost: int, usage: UsageRecord,
               now: datetime) -> int | None:
        sql = self._sql

        def work(cur) -> int:
            cur.execute(sql["take_hold"], {"rid": request_id})
            row = cur.fetchone()
            if row is None:
                cur.execute(sql["logged"], {"rid": request_id})
                if cur.fetchone() is not None:
                    return 0
                account_id, held = usage.account_id, 0
            else:
                account_id, held = row
            if cost <= held:
                charged = cost
                if held > cost:
                    cur.execute(sql["credit"], {"amount": held - cost, "account": account_id})
            else:
                cur.execute(sql["balance"], {"account": account_id})
                found = cur.fetchone()
                extra = min(cost - held, found[0] if found else 0)
                if extra:
                    cur.execute(sql["debit"], {"amount": extra, "account": account_id})
                charged = held + extra
            cur.execute(sql["usage"], _usage_params(usage, request_id, account_id, charged,
                                                    self._time(usage.created_at or now)))
            return charged

        return self._write(work)


def _usage_params(usage: UsageRecord, request_id: str, account_id: int, charged: int,
                  when: Any) -> Mapping[str, Any]:
    return {"rid": request_id, "now": when, "account": account_id, "key": usage.key_id,
            "endpoint": usage.endpoint, "model": usage.model, "provider": usage.provider,
            "status": usage.status, "prompt": usage.prompt_tokens,
            "completion": usage.completion_tokens, "cached": usage.cached_tokens,
            "details": json.dumps(usage.details or {}, separators=(",", ":"), sort_keys=True),
            "cost": charged, "latency": usage.latency_ms}


def _quiet_rollback(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # the connection is broken; the pool will discard it
        pass
