"""Settlement writes behind the answer.

The charge of a request is decided before its last bytes leave: `Meter.settle` computes the
cost from the usage, and the answer (a whole body's `usage.cost`, a stream's final event)
shows it. Only the database write that records it (hold taken, balance, ledger entry,
usage row) is left. Under the gevent worker (`enable()`, called by runtime.serve's worker in
each worker process) that write runs in a greenlet of its own: the client gets its answer
without waiting for the commit (on PostgreSQL, a WAL flush), and the connection reads its
next request meanwhile, whose hold then often shares the commit with it (group commit).
Everywhere else (in-process tests, the CLI, threaded servers) the write runs inline and
`submit` returns its result.

Money: the hold stays in place until the write commits, so the account's balance never
shows more than it has; a write that fails is tried again (RETRY_PAUSES), and after the last
attempt the hold is left to the sweeper, as an inline settlement that failed would be.
`wait(timeout)` waits for the writes in flight: a worker calls it before it exits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tokmodel.billing")

RETRY_PAUSES = (0.05, 0.5, 2.0)  # seconds before each retry of a failed write

_behind = False
_pending: set[Any] = set()  # greenlets of the writes in flight


def enable() -> None:
    """Run settlement writes in their own greenlets from now on (gevent workers only)."""
    global _behind
    _behind = True


def submit(request_id: str, write: Callable[[], int]) -> int | None:
    """Run `write` (the settlement's database write, idempotent per request id): inline,
    returning what it returns, or behind the answer, returning None."""
    if not _behind:
        return write()
    import gevent

    writer = gevent.spawn(_write_with_retries, request_id, write)
    _pending.add(writer)
    writer.link(_pending.discard)
    return None


def pending() -> int:
    """Settlement writes not finished yet."""
    return len(_pending)


def wait(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the writes in flight; whether none is left."""
    if _pending:
        import gevent

        gevent.joinall(list(_pending), timeout=timeout)
    return not _pending


def _write_with_retries(request_id: str, write: Callable[[], int]) -> None:
    import gevent

    for attempt, pause in enumerate((*RETRY_PAUSES, None)):
        try:
            write()
            return
        except Exception:
            if pause is None:
                log.exception("settlement of %s failed %d times: its hold is left to the "
                              "sweeper", request_id, attempt + 1)
                return
            log.warning("settlement of %s failed, trying again in %s s", request_id, pause,
                        exc_info=True)
            gevent.sleep(pause)
