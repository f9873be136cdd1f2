"""The SQLite database (and its -wal and -shm files) and the console secret are created
readable by their owner only, whatever the umask allows."""

from __future__ import annotations

import os
import stat

import pytest

from runtime.console.session import load_secret, secret_path
from runtime.store import open_store


@pytest.fixture
def open_umask():
    old = os.umask(0o022)     # the usual umask: files would be 0644
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_wal_shm_and_console_secret_are_0600(tmp_path, open_umask):
    db = tmp_path / "var" / "tokmodel.db"
    url = f"sqlite:///{db}"
    store = open_store(url)
    try:
        store.create_account("acme", 1_000)          # a write: the WAL and its index exist
        store.get_account("acme")
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert all(f.exists() for f in files), list(db.parent.iterdir())
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        secret = load_secret(url, env={})
        assert len(secret) >= 32
        assert secret_path(url) == db.parent / "console-secret"
        assert _mode(secret_path(url)) == 0o600
    finally:
        store.close()


def test_an_existing_database_open_to_others_is_reported(tmp_path, open_umask, caplog):
    db = tmp_path / "old.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    store = open_store(f"sqlite:///{db}")
    store.close()
    assert "readable by other users" in caplog.text
    assert _mode(db) == 0o644        # left as the operator has it
