"""The console's audit log and login throttle, both on the `audit_log` table.

Contract:
- `AuditLog.record(action, actor, client_addr, ...)` writes one row and one log line on the
  `tokmodel.audit` logger: logins (`login`, `login_failed`, `operator_login`,
  `operator_login_failed`), logouts (`logout`, `operator_logout`) and actions taken in the
  console (`account_create`, `topup`, `key_create`, `key_rename`, `key_revoke`). Callers
  pass a key's display prefix, never a secret; nothing here sees one.
- `AuditLog.retry_at(client_addr, key_prefix)`: when `max_failures` failed logins (key or
  operator) came from the address, or failed key logins named the prefix, within the last
  `window` seconds, the time at which the oldest of them leaves the window; else None. The
  rows live in the database, so every worker and node counts the same failures. A success
  does not reset the count: a valid key must not buy an attacker more guesses. This is the
  login throttle without Redis (runtime.console.throttle).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, insert, select

from runtime.store.schema import audit_log as table

log = logging.getLogger("tokmodel.audit")

FAILURES = ("login_failed", "operator_login_failed")


class AuditLog:
    def __init__(self, engine: Engine, max_failures: int, window: float) -> None:
        self._engine = engine
        self.max_failures = max_failures
        self.window = window

    def record(self, action: str, actor: str, client_addr: str, *,
               key_prefix: str | None = None, account_id: int | None = None,
               key_id: str | None = None, detail: str | None = None) -> None:
        log.info("console %s actor=%s client=%s key_prefix=%s account=%s key=%s %s",
                 action, actor, client_addr, key_prefix or "-", account_id or "-",
                 key_id or "-", detail or "")
        with self._engine.begin() as conn:
            conn.execute(insert(table).values(
                created_at=datetime.now(UTC), actor=actor, action=action,
                client_addr=client_addr, key_prefix=key_prefix, account_id=account_id,
                key_id=key_id, detail=detail))

    def retry_at(self, client_addr: str, key_prefix: str | None = None) -> datetime | None:
        since = datetime.now(UTC) - timedelta(seconds=self.window)
        checks = [(table.c.action.in_(FAILURES), table.c.client_addr == client_addr)]
        if key_prefix:
            checks.append((table.c.action == FAILURES[0], table.c.key_prefix == key_prefix))
        latest = None
        with self._engine.connect() as conn:
            for action, subject in checks:
                # the newest `max_failures` failures: the oldest of them decides the wait
                recent = (select(table.c.created_at).where(action, subject,
                                                           table.c.created_at > since)
                          .order_by(table.c.created_at.desc()).limit(self.max_failures)
                          .subquery())
                count, oldest = conn.execute(select(func.count(), func.min(
                    recent.c.created_at))).one()
                if count >= self.max_failures:
                    until = aware(oldest) + timedelta(seconds=self.window)
                    latest = until if latest is None else max(latest, until)
        return latest


def aware(value: datetime) -> datetime:
    """A timestamp read back from the database, in UTC (SQLite hands back naive ones)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
