"""Engines for the store: URL handling, SQLite set-up, pools, fork safety.

`make_engines(url)` returns (writer, reader). A transaction opened on the writer takes the
write lock up front (SQLite: `BEGIN IMMEDIATE` from a "begin" event, so two writers never both
hold a read lock and then fail to upgrade; the lock is waited for cooperatively, see
sqlite_lock.py); the reader runs single statements outside any
transaction (SQLite: a second pool whose connections never BEGIN, which keeps the event
machinery off the read path; PostgreSQL: autocommit on the same pool). `postgresql://` and
`postgres://` URLs use psycopg 3. SQLite files get WAL, busy_timeout, synchronous=NORMAL and
foreign keys, and their parent directory is created. A new SQLite file is created mode 0600
(balances and key hashes are nobody else's business); SQLite gives its -wal and -shm files the
database file's mode. An existing file readable by others is reported, not changed. Pools are
dropped in a forked child.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool, StaticPool

from . import pg_wait
from .checkpoint import take_over_checkpoints
from .errors import StoreError
from .sqlite_lock import begin_immediate

log = logging.getLogger("tokmodel.store")

SQLITE_BUSY_TIMEOUT_MS = 10_000
FILE_MODE = 0o600
_READ_ONLY = "tokmodel_read_only"


def normalize_url(url: str) -> URL:
    """Parse a database URL; plain PostgreSQL schemes are pointed at psycopg 3."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # ArgumentError and friends; never echo the URL (password)
        raise StoreError("invalid database URL") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database backend {backend!r}: use sqlite or postgresql")
    return parsed


def make_engines(url: str) -> tuple[Engine, Engine]:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, writer=True)
        if _sqlite_in_memory(parsed):  # one shared connection: mark reads instead
            reader = engine.execution_options(**{_READ_ONLY: True})
        else:
            reader = _sqlite_engine(parsed, writer=False)
            _dispose_after_fork(reader)
    else:
        engine = _postgres_engine(parsed)
        reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    _dispose_after_fork(engine)
    return engine, reader


def _sqlite_in_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def _sqlite_engine(url: URL, *, writer: bool) -> Engine:
    database = url.database or ""
    memory = _sqlite_in_memory(url)
    connect_args: dict[str, Any] = {"check_same_thread": False}
    if hasattr(sqlite3, "LEGACY_TRANSACTION_CONTROL"):  # Python 3.12+: keep BEGIN in our hands
        connect_args["autocommit"] = sqlite3.LEGACY_TRANSACTION_CONTROL
    kwargs: dict[str, Any] = {"connect_args": connect_args}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            create_private(Path(database))
        # Connections are cheap and each call holds one only for microseconds; gevent
        # greenlets and threads share the pool.
        kwargs.update(poolclass=QueuePool, pool_size=8, max_overflow=32, pool_timeout=30)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: BEGIN is issued below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not memory:
                _enable_wal(cursor)
                if writer and not database.startswith("file:"):
                    # checkpoints in checkpoint.py's thread, not inside this one's commits
                    # (under gevent, a C call with an fsync that froze the worker)
                    take_over_checkpoints(dbapi_connection, database)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    if writer:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            if not connection.get_execution_options().get(_READ_ONLY):
                _begin_immediate(connection.connection.dbapi_connection)

    return engine


def _begin_immediate(dbapi_connection: Any) -> None:
    """The write transaction's BEGIN IMMEDIATE, waiting for the write lock cooperatively
    (sqlite_lock.py) rather than in SQLite's busy handler, which would freeze a gevent
    worker's every request meanwhile (background folds and prunes, console writes)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            begin_immediate(cursor, SQLITE_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.OperationalError as exc:
            raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite would create it
    with the umask's mode (usually 0644); warn when an existing one is open to others."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        try:
            loose = path.stat().st_mode & 0o077
        except OSError:
            return
        if loose:
            log.warning("%s is readable by other users; chmod 600 it (and its -wal, -shm)",
                        path)
        return
    os.close(fd)   # an empty file is an empty SQLite database


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL once. The switch needs an exclusive lock and SQLite answers
    "database is locked" at once (without its busy handler) while another process holds
    one, as when several workers open a new database together: retry for a while."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _postgres_engine(url: URL) -> Engine:
    pg_wait.install()
    connect_args: dict[str, Any] = {}
    if "application_name" not in url.query:
        connect_args["application_name"] = "tokmodel"
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    return create_engine(
        url,
        connect_args=connect_args,
        pool_size=5,
        max_overflow=10,
        pool_timeout=30,
        pool_recycle=1800,
    )


def _dispose_after_fork(engine: Engine) -> None:
    """A forked child must not reuse the parent's connections; it opens its own."""
    ref = weakref.ref(engine)

    def _in_child() -> None:
        live = ref()
        if live is not None:
            live.dispose(close=False)

    os.register_at_fork(after_in_child=_in_child)
