"""The periodic task that folds usage rows into the daily sums the usage reports read
(runtime/store/usage_rollup.py), off the request path.

Every gateway worker runs one `UsageRollup` thread (a greenlet under gevent). Every
`TOKMODEL_USAGE_ROLLUP_SECONDS` (default 30; the first run spread at random over workers) it
folds the usage rows created more than `LAG_SECONDS` ago, `CHUNK` ids per short write
transaction, paced (runtime/periodic.py), until it has caught up or folded `ROWS_PER_RUN`
ids (the first runs on a large existing log fold it a part at a time). Passes of several
workers and nodes never fold a row twice: each one moves the fold's high-water mark only
from where it found it. Reports are exact whether or not a pass has run; the passes only
keep them fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from runtime.periodic import PeriodicTask
from runtime.store import Store

log = logging.getLogger("tokmodel.usage")

INTERVAL_ENV = "TOKMODEL_USAGE_ROLLUP_SECONDS"
DEFAULT_INTERVAL = 30.0
LAG_SECONDS = 10.0
# The database sums and applies a chunk (usage_rollup.py). On SQLite that is C code inside
# the worker, which holds the worker's event loop (every request of the worker waits) and
# the file's write lock meanwhile: chunks of 50 rows, 1-2 ms even when spread over as many
# keys and days (a filled log after a deploy) on a 2-core machine; 200 took 3-8 ms there and
# put up to 30 ms on requests under load (measured). On PostgreSQL the server does the work
# while the worker waits on its socket; chunks of 500 there showed more slow requests than
# 200 at concurrency 1 (the server's bursts compete for the same cores). A run folds up to
# 200,000 rows either way.
CHUNK = {"sqlite": 50, "postgresql": 200}
ROWS_PER_RUN = 200_000


def chunk_rows(store: Store) -> int:
    """How many usage rows a background chunk (a fold, a prune) takes on this database."""
    return CHUNK.get(store.engine.dialect.name, CHUNK["sqlite"])


def rollup_interval(env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    text = env.get(INTERVAL_ENV) or ""
    try:
        interval = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        interval = -1
    if not interval > 0:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds > 0, not {text!r}")
    return interval


class UsageRollup(PeriodicTask):
    name = "tokmodel-usage-rollup"
    first_wait = (0.05, 1.0)
    log = log

    def __init__(self, store: Store, interval_seconds: float = DEFAULT_INTERVAL) -> None:
        super().__init__()
        self.store = store
        self.interval_seconds = interval_seconds

    def interval(self) -> float:
        return self.interval_seconds

    def run_once(self) -> int:
        chunk = chunk_rows(self.store)
        total = self.in_chunks(lambda: self.store.rollup_usage(LAG_SECONDS, chunk),
                               ROWS_PER_RUN // chunk, lambda folded: folded == 0)
        if total:
            log.debug("usage rollup: %d usage rows folded", total)
        return total
