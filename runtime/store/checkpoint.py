"""WAL checkpoints of a SQLite file, off the request path.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold and ends with
an fsync. Under gevent that fsync is a C call that freezes every request of the worker, about
every 150 requests (measured: the hot path's own commits gained ~50 % throughput with it
off). So every connection that writes turns automatic checkpoints off
(`take_over_checkpoints`), and each process that writes runs one native thread (not a
greenlet: gevent would otherwise run it on the loop) that makes a PASSIVE checkpoint every
`interval` seconds on its own connection; PASSIVE never waits for readers or writers, so it
cannot stall a request either. But under steady traffic
PASSIVE never lets the WAL start over (commits keep coming while it copies), so the file
grows by every page every request writes: at concurrency 1 about 30 MB a second. So when the
WAL holds more than RESTART_BYTES after the PASSIVE pass, a RESTART checkpoint copies the few
frames added meanwhile and makes the next commit write from the start of the file again:
writers wait for that one, a few milliseconds (the rest was copied already, and the file is
not shrunk); one that finds readers still in the WAL gives up after RESTART_WAIT_MS. Only a
WAL that grew past WAL_LIMIT_BYTES anyway (RESTARTs that could not finish) is emptied with
TRUNCATE; writers wait for that one longer (freeing a file of that size on a filesystem
mounted with `discard` stalled writers for ~80 ms, measured).
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
RESTART_BYTES = 16 * 1024 * 1024
RESTART_WAIT_MS = 10
WAL_LIMIT_BYTES = 256 * 1024 * 1024

_by_path: dict[str, Checkpointer] = {}  # one checkpoint thread per file and process


def take_over_checkpoints(conn: sqlite3.Connection, path: str) -> None:
    """Turn off `conn`'s automatic checkpoints (every connection that writes to the file
    must: one left on checkpoints inside its commits once the WAL passes 1,000 pages, which
    it always does between two RESTARTs) and make sure this process's thread checkpoints
    `path` instead."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    checkpointer = _by_path.get(path)
    if checkpointer is None:
        checkpointer = _by_path.setdefault(path, Checkpointer(path))
    checkpointer.ensure_running()


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
        # a RESTART checkpoint holds new writers back while it waits for readers: it gives
        # up after RESTART_WAIT_MS (tried again next interval) rather than stall requests
        conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while self._pid == pid == os.getpid():
                _sleep(self._interval)
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames * page > WAL_LIMIT_BYTES:
                        conn.execute("PRAGMA busy_timeout = 1000")
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                        conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                    elif frames * page > RESTART_BYTES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()
