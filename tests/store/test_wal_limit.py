"""The WAL of a SQLite database under steady writes is emptied once it passes its limit
(runtime/store/checkpoint.py), instead of growing for as long as traffic lasts."""

from __future__ import annotations

import os
import sqlite3
import time

from runtime.store import checkpoint


def test_the_wal_is_emptied_past_its_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "WAL_LIMIT_BYTES", 64 * 1024)
    path = str(tmp_path / "db.sqlite")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (v BLOB)")
    checkpointer = checkpoint.Checkpointer(path, interval=0.05)
    checkpointer.ensure_running()
    wal = path + "-wal"
    biggest, emptied = 0, False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not emptied:
        for _ in range(20):  # steady traffic: a commit every few milliseconds
            writer.execute("INSERT INTO t VALUES (randomblob(2000))")
            size = os.path.getsize(wal) if os.path.exists(wal) else 0
            emptied = emptied or (biggest > 64 * 1024 and size < biggest // 4)
            biggest = max(biggest, size)
            time.sleep(0.002)
    checkpointer._pid = None  # ends its thread at the next wake-up
    writer.close()
    assert emptied, f"the WAL grew to {biggest} bytes and was never emptied"
    assert biggest < 4 * 1024 * 1024
