"""Retention: the periodic task that prunes old usage rows and old audit-log rows, off the
request path.

- `TOKMODEL_USAGE_RETENTION_DAYS` (unset: keep forever; a fraction of a day is allowed) is
  how long usage rows are kept.
- `TOKMODEL_AUDIT_RETENTION_DAYS` (default 365; `0` keeps it forever; otherwise at least 1
  day, since the console's login throttle reads the last minutes of it when Redis is not
  configured) is how long console/operator audit-log rows are kept.

Every gateway worker runs one `RetentionPruner` thread (a greenlet under gevent) when either
is set; every `TOKMODEL_USAGE_PRUNE_SECONDS` (default 600, the first run spread at random over
workers) it deletes the rows older than each setting in batches (`rollup.chunk_rows`), one short
transaction each with a pause between them, so requests writing usage rows are never held
up for long. Balances and the ledger are never touched; the ledger audit knows that usage
rows older than the recorded watermark may be gone (runtime/store/usage_queries.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runtime.admin.rollup import chunk_rows
from runtime.periodic import PeriodicTask
from runtime.store import Store

log = logging.getLogger("tokmodel.retention")

RETENTION_ENV = "TOKMODEL_USAGE_RETENTION_DAYS"
AUDIT_RETENTION_ENV = "TOKMODEL_AUDIT_RETENTION_DAYS"
INTERVAL_ENV = "TOKMODEL_USAGE_PRUNE_SECONDS"
DEFAULT_AUDIT_DAYS = 365.0
# A usage batch is also taken out of the daily sums (usage_rollup.unfold) in the same write
# transaction: batches are the rollup's chunks, sized for the same reason (rollup.chunk_rows).
ROWS_PER_RUN = 100_000  # of each kind; more wait for the next run


def _days(env: Mapping[str, str], name: str) -> float:
    text = env.get(name) or ""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of days, not {text!r}") from None


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    days: float | None = None                     # usage rows; None: kept forever
    interval_seconds: float = 600.0
    audit_days: float | None = DEFAULT_AUDIT_DAYS  # audit-log rows; None: kept forever

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionSettings:
        env = os.environ if env is None else env
        days = _days(env, RETENTION_ENV) if env.get(RETENTION_ENV) else None
        if days is not None and not days > 0:
            raise ValueError(f"{RETENTION_ENV} must be a number of days > 0 (unset: forever)")
        audit_days: float | None = DEFAULT_AUDIT_DAYS
        if env.get(AUDIT_RETENTION_ENV):
            audit_days = _days(env, AUDIT_RETENTION_ENV)
            if audit_days == 0:
                audit_days = None
            elif not audit_days >= 1:
                raise ValueError(f"{AUDIT_RETENTION_ENV} must be 0 (keep forever) or a "
                                 "number of days >= 1")
        interval = float(env.get(INTERVAL_ENV) or cls().interval_seconds)
        if not interval > 0:
            raise ValueError(f"{INTERVAL_ENV} must be > 0")
        return cls(days, interval, audit_days)


class RetentionPruner(PeriodicTask):
    name = "tokmodel-retention"
    first_wait = (0.1, 1.0)
    log = log

    def __init__(self, store: Store, settings: RetentionSettings) -> None:
        super().__init__()
        self.store = store
        self.settings = settings

    def start(self) -> None:
        if self.settings.days is not None or self.settings.audit_days is not None:
            super().start()

    def interval(self) -> float:
        return self.settings.interval_seconds

    def run_once(self) -> int:
        return self.prune() + self.prune_audit()

    def prune(self) -> int:
        """Delete usage rows older than their retention, batch by batch; return how many."""
        return self._prune(self.settings.days, self.store.prune_usage, "usage rows")

    def prune_audit(self) -> int:
        """Delete audit-log rows older than their retention; return how many."""
        return self._prune(self.settings.audit_days, self.store.prune_audit,
                           "audit-log rows")

    def _prune(self, days: float | None, delete: Callable[[datetime, int], int],
               what: str) -> int:
        if days is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=days)
        batch = chunk_rows(self.store)
        total = self.in_chunks(lambda: delete(cutoff, batch), ROWS_PER_RUN // batch,
                               lambda deleted: deleted < batch)
        if total:
            log.info("retention: %d %s older than %s pruned", total, what, cutoff.isoformat())
        return total
