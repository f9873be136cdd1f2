"""What each key was charged in all, today and this month (UTC), from the usage log.

Contract: `spend_by_key(conn, key_ids, now)` gives a `KeySpend` for every id asked (zeros
for a key that spent nothing); days and months are UTC and start at `now`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, func, select

from .schema import usage_log


@dataclass(frozen=True, slots=True)
class KeySpend:
    total: int = 0
    today: int = 0
    month: int = 0


def spend_by_key(conn: Connection, key_ids: list[str], now: datetime) -> dict[str, KeySpend]:
    found = {key_id: KeySpend() for key_id in key_ids}
    if not key_ids:
        return found
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    cost = usage_log.c.cost_nano
    query = (select(usage_log.c.key_id, func.sum(cost),
                    func.sum(case((usage_log.c.created_at >= day, cost), else_=0)),
                    func.sum(case((usage_log.c.created_at >= month, cost), else_=0)))
             .where(usage_log.c.key_id.in_(key_ids)).group_by(usage_log.c.key_id))
    for key_id, total, today, this_month in conn.execute(query):
        found[key_id] = KeySpend(int(total or 0), int(today or 0), int(this_month or 0))
    return found
