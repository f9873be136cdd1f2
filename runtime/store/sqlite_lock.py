"""Taking a SQLite file's write lock without freezing a gevent worker.

SQLite's own busy handler sleeps inside C: under gevent that freezes every request of the
worker while another connection (another worker, the checkpoint thread) holds the write
lock. `begin_immediate(cur)` instead tries `BEGIN IMMEDIATE` with the connection's busy
timeout at 0 and, while the file is locked, retries after `time.sleep`, which gevent turns
into a cooperative wait (a plain sleep under threads): from 0.1 ms up to 2 ms between tries,
for up to `wait_seconds`, after which the last "database is locked" error is raised.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any


def is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def begin_immediate(cur: Any, wait_seconds: float) -> None:
    """`BEGIN IMMEDIATE` on a cursor whose connection has busy_timeout 0."""
    delay, deadline = 0.0001, time.monotonic() + wait_seconds
    while True:
        try:
            cur.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.002)
