"""Usage retention: the periodic task that prunes old usage rows, off the request path.

`TOKMODEL_USAGE_RETENTION_DAYS` (unset: keep forever) is how long usage rows are kept; a
fraction of a day is allowed. When set, every gateway worker runs a `UsagePruner` thread (a
greenlet under gevent) that every `TOKMODEL_USAGE_PRUNE_SECONDS` (default 600, spread at
random over workers) deletes rows older than that in batches of `BATCH` rows, one short
transaction each with a pause between them, so requests writing usage rows are never held
up for long. Balances and the ledger are never touched; the ledger audit knows that rows
older than the recorded watermark may be gone (runtime/store/usage_queries.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runtime.periodic import PeriodicTask
from runtime.store import Store

log = logging.getLogger("tokmodel.usage")

RETENTION_ENV = "TOKMODEL_USAGE_RETENTION_DAYS"
INTERVAL_ENV = "TOKMODEL_USAGE_PRUNE_SECONDS"
BATCH = 1000
BATCHES_PER_RUN = 100  # at most 100,000 rows a run; more wait for the next one
PAUSE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    days: float | None = None
    interval_seconds: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionSettings:
        env = os.environ if env is None else env
        raw = env.get(RETENTION_ENV) or None
        days = None if raw is None else float(raw)
        if days is not None and not days > 0:
            raise ValueError(f"{RETENTION_ENV} must be a number of days > 0 (unset: forever)")
        interval = float(env.get(INTERVAL_ENV) or cls().interval_seconds)
        if not interval > 0:
            raise ValueError(f"{INTERVAL_ENV} must be > 0")
        return cls(days, interval)


class UsagePruner(PeriodicTask):
    name = "tokmodel-usage-retention"
    first_wait = (0.1, 1.0)
    log = log

    def __init__(self, store: Store, settings: RetentionSettings) -> None:
        super().__init__()
        self.store = store
        self.settings = settings

    def start(self) -> None:
        if self.settings.days is not None:
            super().start()

    def interval(self) -> float:
        return self.settings.interval_seconds

    def run_once(self) -> int:
        return self.prune()

    def prune(self) -> int:
        """One run: delete rows older than the retention, batch by batch; return how many."""
        if self.settings.days is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.days)
        total = 0
        for _ in range(BATCHES_PER_RUN):
            deleted = self.store.prune_usage(cutoff, BATCH)
            total += deleted
            if deleted < BATCH or self.stopping:
                break
            time.sleep(PAUSE_SECONDS)
        if total:
            log.info("usage retention: %d usage rows older than %s pruned", total,
                     cutoff.isoformat())
        return total
