"""A key's spend limits, enforced like the account's balance: reserved with the hold,
corrected with the settle.

The key's row carries its limits and its spend (api_keys: `held_nano` in flight, `spent_nano`
in all, `spent_day_nano` / `spent_month_nano` of the UTC day / month named in `spent_day` /
`spent_month`). `RESERVE` adds a request's hold to `held_nano` only if, for every limit set,
spend of the period + everything held + this hold stays within it: one conditional UPDATE
of one row, so concurrent requests (workers, nodes; PostgreSQL re-checks the condition on
the row it waited for) can never together pass a limit. Holds in flight count against every
period, whichever day they started: conservative, never over. `KeySpendStatements` makes
the settle of a request move its hold out of `held_nano` and its cost into the counters in
the settle's own transaction (a counter of a past day or month starts again from 0).
Parameter names are lowercase words: the hot path rewrites them for each driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_TODAY = "(CASE WHEN spent_day = :day THEN spent_day_nano ELSE 0 END)"
_MONTH = "(CASE WHEN spent_month = :month THEN spent_month_nano ELSE 0 END)"

RESERVE = (
    "UPDATE api_keys SET held_nano = held_nano + :amount WHERE id = :key"
    " AND (spend_limit_nano IS NULL OR spent_nano + held_nano + :amount <= spend_limit_nano)"
    f" AND (daily_limit_nano IS NULL OR {_TODAY} + held_nano + :amount <= daily_limit_nano)"
    f" AND (monthly_limit_nano IS NULL OR {_MONTH} + held_nano + :amount"
    " <= monthly_limit_nano)")
UNRESERVE = ("UPDATE api_keys SET held_nano = CASE WHEN held_nano > :amount "
             "THEN held_nano - :amount ELSE 0 END WHERE id = :key")
SETTLE = (
    "UPDATE api_keys SET held_nano = CASE WHEN held_nano > :held THEN held_nano - :held "
    "ELSE 0 END, spent_nano = spent_nano + :cost, "
    f"spent_day_nano = {_TODAY} + :cost, spent_day = :day, "
    f"spent_month_nano = {_MONTH} + :cost, spent_month = :month WHERE id = :key")
READ = ("SELECT spent_nano, held_nano, spent_day, spent_day_nano, spent_month, "
        "spent_month_nano, spend_limit_nano, daily_limit_nano, monthly_limit_nano "
        "FROM api_keys WHERE id = :key")


def periods(now: datetime) -> dict[str, str]:
    """The UTC day and month `now` falls in, as the counters name them."""
    return {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m")}


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What a key spent (nano-credits): in all, today and this month (UTC), and holds."""

    total: int
    today: int
    month: int
    held: int

    @classmethod
    def from_row(cls, row: Any, now: datetime) -> KeySpend:
        names = periods(now)
        return cls(row[0], row[3] if row[2] == names["day"] else 0,
                   row[5] if row[4] == names["month"] else 0, row[1])

    def refused_by(self, row: Any, amount: int) -> str:
        """The limit a hold of `amount` would pass (row as READ returns it)."""
        for name, spent, limit in (("spend limit", self.total, row[6]),
                                   ("daily limit", self.today, row[7]),
                                   ("monthly limit", self.month, row[8])):
            if limit is not None and spent + self.held + amount > limit:
                return name
        return "spend limit"   # the spend changed since: name the total


class KeySpendStatements:
    """ledger.SettleStatements that also move the request's hold and cost on the key."""

    def __init__(self, inner: Any, run: Callable[[str, dict[str, Any]], Any], key_id: str,
                 now: datetime) -> None:
        self._inner, self._run, self._key, self._now = inner, run, key_id, now
        self._held = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def take_hold(self, request_id: str) -> tuple[int, int] | None:
        row = self._inner.take_hold(request_id)
        self._held = 0 if row is None else row[1]
        return row

    def log(self, account_id: int, charged: int) -> None:
        self._inner.log(account_id, charged)
        self._run(SETTLE, {"held": self._held, "cost": charged, "key": self._key,
                           **periods(self._now)})


def core_wrap(conn: Any, key_id: str, now: datetime) -> Callable[[Any], KeySpendStatements]:
    """The `wrap` of ledger.settle for SQLAlchemy Core: the key's statements on `conn`."""
    from sqlalchemy import text

    return lambda db: KeySpendStatements(db, lambda sql, params: conn.execute(
        text(sql), params), key_id, now)
