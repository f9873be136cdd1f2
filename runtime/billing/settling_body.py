"""A streamed response body that settles its request exactly once, whatever happens.

Subclasses produce the bytes in `_run()` (a generator, which calls `_finish()` when it
ends) and charge in `_finish()`. The server calls `close()` when the body is done or the
client went away: a body closed before its end is settled with status 499, also when it
was never started (a generator's own `finally` would not run then).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator

from runtime.billing.meter import Meter


class SettlingBody:
    # one per open stream: no per-instance dict (subclasses without __slots__ get one)
    __slots__ = ("_meter", "_status", "_gen")
    content_type = "text/event-stream"

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._status = 200
        self._gen = self._run()

    def __iter__(self) -> Iterator[bytes]:
        return self._gen

    def _run(self) -> Iterator[bytes]:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _note_interruption(self) -> None:
        """Called first in `_finish`: a body torn down by the server (GreenletExit when a
        worker stops at its shutdown deadline, GeneratorExit) is settled as 499, cut."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, Exception) and not self._meter.settled:
            self._status = 499

    def close(self) -> None:
        if inspect.getgeneratorstate(self._gen) == inspect.GEN_CREATED:
            self._gen.close()
            self._status = 499
            self._finish()
            return
        if not self._meter.settled:
            self._status = 499
        self._gen.close()
