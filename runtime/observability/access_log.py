"""The access log: one JSON object per line on the server's standard output.

Contract
--------
`write(line)` hands one already-encoded JSON line to the logger ``tokmodel.access`` (level
INFO). On first use the logger gets a handler writing the bare message plus a newline to
``sys.stdout`` (gunicorn's workers inherit the server's standard output), and does not
propagate, so a line is never printed twice by a root handler. An operator who attached
handlers to ``tokmodel.access`` before the first request keeps them instead.
``TOKMODEL_ACCESS_LOG=0`` (also ``false``/``no``/``off``) turns the log off: no line is
built at all. `configure(enabled, stream)` sets both explicitly (tests, embedding).

What goes into a line is decided by `runtime.observability.record`: never a key, an upstream
credential or prompt text.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

LOGGER_NAME = "tokmodel.access"
ENV = "TOKMODEL_ACCESS_LOG"

logger = logging.getLogger(LOGGER_NAME)

_enabled: bool | None = None  # None: not configured yet, decided from the environment


def _env_enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def configure(enabled: bool | None = None, stream: TextIO | None = None) -> None:
    """Turn the access log on or off (None: from TOKMODEL_ACCESS_LOG) and, with `stream`,
    replace the logger's handlers by one writing to it."""
    global _enabled
    _enabled = _env_enabled() if enabled is None else enabled
    if stream is not None:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(_line_handler(stream))
    elif not logger.handlers:
        logger.addHandler(_StdoutHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _line_handler(stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of the line (a test runner or an
    embedding server may replace it after the handler was made)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def enabled() -> bool:
    """Whether lines are written (configures from the environment on first call)."""
    if _enabled is None:
        configure()
    return bool(_enabled)


def write(line: str) -> None:
    """Log one JSON line (the caller checked `enabled()`)."""
    handlers = logger.handlers
    if len(handlers) == 1 and type(handlers[0]) is _StdoutHandler:
        # the default: straight to standard output, without building a LogRecord (a third
        # of a line's cost); an operator's own handlers still get records
        out = sys.stdout
        out.write(line + "\n")
        out.flush()
        return
    # makeRecord + handle instead of logger.info: no walk up the stack for the caller's
    # file and line, which this log never prints
    if logger.isEnabledFor(logging.INFO):
        logger.handle(logger.makeRecord(LOGGER_NAME, logging.INFO, __file__, 0, line, None,
                                        None))
