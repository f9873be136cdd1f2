"""The WAL checkpoint thread (runtime/store/checkpoint.py): under steady commits the WAL
file starts over instead of growing with every page written."""

from __future__ import annotations

import os
import sqlite3
import time

from runtime.store import checkpoint


def test_the_wal_stays_small_under_steady_commits(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "RESTART_BYTES", 256 * 1024)
    path = str(tmp_path / "db.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")   # as the hot path's connections
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    keeper = checkpoint.Checkpointer(path, interval=0.05)
    keeper.ensure_running()
    written, largest = 0, 0
    blob = os.urandom(4000)
    try:
        while written < 24 * 1024 * 1024:   # commits without a pause longer than 1 ms
            db.execute("BEGIN IMMEDIATE")
            for _ in range(4):
                db.execute("INSERT INTO t (v) VALUES (?)", (blob,))
            db.execute("COMMIT")
            written += 4 * len(blob)
            largest = max(largest, os.path.getsize(path + "-wal"))
            time.sleep(0.0005)
    finally:
        keeper._pid = None   # ends the thread at its next look
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] * len(blob) == written
    # PASSIVE checkpoints alone left a WAL holding every page written (24 MB and more)
    assert largest < 8 * 1024 * 1024, largest


def test_no_write_of_the_store_checkpoints_inside_its_commit(tmp_path) -> None:
    """Every connection the store writes with, the Core path's (console, background folds
    and prunes) as well as the hot path's, leaves checkpoints to the thread: one that
    checkpointed inside its commit (SQLite's default, once the WAL holds 1,000 pages)
    froze a gevent worker for the checkpoint's fsync."""
    from runtime.store import Store

    path = tmp_path / "gw.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    account = store.create_account("acme", 10**9)
    assert store.hold("rq-1", account.id, 10)   # a hot-path connection
    with store.engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for fast in store._fast._writer._idle:
        assert fast.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    # and the process checkpoints the file: the thread is running for it
    assert checkpoint._by_path[str(path)]._pid == os.getpid()
    store.close()
