"""psycopg's waits on gevent's event loop directly.

psycopg runs every exchange with the server as a generator that says what it waits for
(readable, writable, either) and a wait function that waits for it. Under gevent's
monkey-patching psycopg picks `wait_poll`, which builds a patched `select.poll` object per
exchange and per wait a poll call with its own watchers and timer, and wakes every 0.1 s to
let Ctrl-C through: on PostgreSQL that was a large part of a request's CPU in the worker
(py-spy at concurrency 1). `wait` here starts one libev I/O watcher per wait and hands the
readiness it reports back to psycopg (psycopg's Wait/Ready values are libev's READ/WRITE
bits).

Contract
--------
- `install()` makes psycopg use `wait` in this process when the standard library is
  monkey-patched by gevent (a serving worker); anywhere else it changes nothing.
- `wait(gen, fileno, interval, timeout)` behaves as psycopg's wait functions do; a wait
  with a timeout (psycopg uses them for cancellation and notifications, never on the hot
  path) goes to psycopg's own function.
"""

from __future__ import annotations

import sys
from typing import Any


def wait(gen: Any, fileno: int, interval: float = 0.0, timeout: float | None = None) -> Any:
    """Drive `gen` to its end, waiting on the hub for what it asks."""
    if timeout is not None:
        return _fallback(gen, fileno, interval, timeout)
    from gevent.hub import Waiter, get_hub

    hub = get_hub()
    loop = hub.loop
    try:
        state = next(gen)
        while True:
            watcher = loop.io(fileno, state)
            waiter = Waiter(hub)
            watcher.start(waiter.switch, pass_events=True)
            try:
                ready = waiter.get()
            finally:
                watcher.stop()
                watcher.close()
            state = gen.send(ready)
    except StopIteration as end:
        return end.value


_fallback: Any = None


def install() -> None:
    """Use `wait` for psycopg's waits in this process, if gevent patched it."""
    global _fallback
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("select"):
        return
    from psycopg import waiting

    if waiting.wait is not wait:
        _fallback = waiting.wait
        waiting.wait = wait
