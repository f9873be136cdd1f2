"""WAL checkpoints of a SQLite file, off the request path.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold and ends with
an fsync. Under gevent that fsync is a C call that freezes every request of the worker, about
every 150 requests (measured: the hot path's own commits gained ~50 % throughput with it
off). So the hot path's connections turn automatic checkpoints off, and each process that
writes runs one native thread (not a greenlet: gevent would otherwise run it on the loop)
that makes a PASSIVE checkpoint every `interval` seconds on its own connection; PASSIVE never
waits for readers or writers, so it cannot stall a request either. When the WAL has grown
past WAL_LIMIT_BYTES anyway, a TRUNCATE checkpoint empties it: writers wait for that one.
"""

from __future__ import annotations

import logging
import os
import sqlite3

try:  # under gevent, the unpatched originals: a real OS thread and a real sleep
    from gevent import monkey

    _start_thread = monkey.get_original("_thread", "start_new_thread")
    _sleep = monkey.get_original("time", "sleep")
except ImportError:  # pragma: no cover - gevent is a dependency
    import _thread
    import time

    _start_thread, _sleep = _thread.start_new_thread, time.sleep

log = logging.getLogger("tokmodel.store")

INTERVAL_SECONDS = 1.0
# A PASSIVE checkpoint copies the WAL into the database but never restarts it while commits
# keep coming: under steady traffic the file grew by ~50 KB a request (2 GB in a long run).
WAL_LIMIT_BYTES = 256 * 1024 * 1024


class Checkpointer:
    """`ensure_running()` starts this process's checkpoint thread once (again after a fork)."""

    def __init__(self, path: str, interval: float = INTERVAL_SECONDS) -> None:
        self._path = path
        self._interval = interval
        self._pid: int | None = None

    def ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        _start_thread(self._loop, (self._pid,))

    def _loop(self, pid: int) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 1000")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while self._pid == pid == os.getpid():
                _sleep(self._interval)
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames * page > WAL_LIMIT_BYTES:
                        # the WAL only restarts when a checkpoint finds no writer behind it,
                        # which steady traffic never allows: past the limit, make writers
                        # wait once (on their cooperative lock wait) while it is emptied
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()
