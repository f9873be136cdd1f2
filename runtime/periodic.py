"""A task a worker runs in the background at a fixed interval (a thread, so a greenlet under
gevent): the holds' heartbeat and sweep, retention, the usage rollup.

Contract: `start()` starts it once (later calls do nothing); the first run comes after a random
part of the interval, so workers started together spread their runs; `stop()` ends it at the
next wait. A failing run is logged and tried again after the interval (the database may be
away for a while); nothing is raised to the worker. `in_chunks` runs a run's work a chunk at
a time, paced so that it takes at most a tenth of the time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

# Between two chunks a task waits this many times as long as the last chunk took (10 ms at
# least): background work then takes at most a tenth of the time of the worker and of the
# database, which the requests share with it (a backlog, such as a filled usage log after a
# deploy, is worked through over minutes instead of taking every other millisecond).
IDLE_PER_BUSY = 9
MIN_PAUSE_SECONDS = 0.01


class PeriodicTask:
    """Subclasses define `name`, `interval()`, `run_once()` and `log`."""

    name = "tokmodel-task"
    first_wait = (0.1, 0.5)           # fractions of the interval
    log = logging.getLogger("tokmodel")

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def interval(self) -> float:
        raise NotImplementedError

    def run_once(self) -> object:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = self.interval()
        wait = random.uniform(*self.first_wait) * interval
        while not self._stop.wait(wait):
            wait = interval
            try:
                self.run_once()
            except Exception:
                self.log.exception("%s failed; trying again in %s s", self.name, interval)

    def in_chunks(self, chunk: Callable[[], int], most: int,
                  last: Callable[[int], bool]) -> int:
        """Call `chunk()` (it returns how many items it did) up to `most` times, until
        `last(that count)` or a stop, pausing between calls (IDLE_PER_BUSY); the total."""
        total = 0
        for _ in range(most):
            started = time.monotonic()
            done = chunk()
            total += done
            if last(done) or self.stopping:
                break
            busy = time.monotonic() - started
            if self._stop.wait(max(MIN_PAUSE_SECONDS, busy * IDLE_PER_BUSY)):
                break
        return total
