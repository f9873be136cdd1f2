"""Settlement writes behind the answer.

The charge of a request is decided before its last bytes leave: `Meter.settle` computes the
cost from the usage, and the answer (a whole body's `usage.cost`, a stream's final event)
shows it. Only the database write that records it (hold taken, balance, ledger entry,
usage row) is left. Under the gevent worker (`enable()`, called by runtime.serve's worker in
each worker process) that write runs in another greenlet: the client gets its answer
without waiting for the commit, and the connection reads its next request meanwhile, whose
hold then often shares the commit with it (group commit).
Everywhere else (in-process tests, the CLI, threaded servers) the write runs inline and
`submit` returns its result.

Money: the hold stays in place until the write commits, so the account's balance never
shows more than it has; a write that fails is tried again (RETRY_PAUSES), and after the last
attempt the hold is left to the sweeper, as an inline settlement that failed would be.
`wait(timeout)` waits for the writes in flight: a worker calls it before it exits.
`write(behind)` is told which way it runs: a write behind the answer may wait a moment for
the next request's hold to share its commit (Store.settle).

The writes are taken from a queue by up to WRITERS long-lived greenlets, started as they are
needed: a greenlet spawned per write cost about 15 us and an mmap/munmap pair per request.
WRITERS is above the writes a worker has in flight under load, so they still reach the
database together and share commits (runtime/store/group_commit.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("tokmodel.billing")

RETRY_PAUSES = (0.05, 0.5, 2.0)  # seconds before each retry of a failed write
WRITERS = 128  # most writes of one process in flight at once

_behind = False


class _Writers:
    """The queue of writes and the greenlets that write them (in one worker process)."""

    def __init__(self) -> None:
        from gevent.event import Event
        from gevent.queue import Queue

        self.jobs: Queue = Queue()
        self.drained = Event()
        self.drained.set()
        self.pending = 0      # submitted and not finished
        self.idle = 0         # writers waiting for a job
        self.started = 0

    def submit(self, request_id: str, write: Callable[[bool], int]) -> None:
        self.pending += 1
        self.drained.clear()
        self.jobs.put((request_id, write))
        # writes waiting beyond the writers about to take them: one more writer, if allowed
        if self.jobs.qsize() > self.idle and self.started < WRITERS:
            import gevent

            self.started += 1
            gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.idle += 1
            try:
                request_id, write = self.jobs.get()
            finally:
                self.idle -= 1
            try:
                _write_with_retries(request_id, write)
            finally:
                self.pending -= 1
                if self.pending == 0:
                    self.drained.set()


_writers: _Writers | None = None


def enable() -> None:
    """Write settlements behind the answers from now on (gevent workers only)."""
    global _behind, _writers
    _behind = True
    if _writers is None:
        _writers = _Writers()


def submit(request_id: str, write: Callable[[bool], int]) -> int | None:
    """Run `write(behind)` (the settlement's database write, idempotent per request id):
    inline, returning what it returns, or behind the answer, returning None."""
    if not _behind or _writers is None:
        return write(False)
    _writers.submit(request_id, write)
    return None


def pending() -> int:
    """Settlement writes not finished yet."""
    return 0 if _writers is None else _writers.pending


def wait(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the writes in flight; whether none is left."""
    if _writers is None:
        return True
    return _writers.drained.wait(timeout)


def _write_with_retries(request_id: str, write: Callable[[bool], int]) -> None:
    import gevent

    for attempt, pause in enumerate((*RETRY_PAUSES, None)):
        try:
            write(True)
            return
        except Exception:
            if pause is None:
                log.exception("settlement of %s failed %d times: its hold is left to the "
                              "sweeper", request_id, attempt + 1)
                return
            log.warning("settlement of %s failed, trying again in %s s", request_id, pause,
                        exc_info=True)
            gevent.sleep(pause)
