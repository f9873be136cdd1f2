"""The databases the bench runs the gateway on: a SQLite file in the work directory, or a
throwaway PostgreSQL database made on a given server and dropped afterwards; and their
statistics, read around a measurement to explain it.

Contract
--------
- `Database(kind, url, label)`: `url` is what TOKMODEL_DATABASE_URL gets; `kind` is
  "sqlite" or "postgresql".
- `sqlite(path, label)` -> Database for a file (created by the gateway's first command).
- `postgres(base_url, label)` is a context manager: it creates an empty database named
  `tokmodel_bench_<random>` on the server of `base_url` (which must allow CREATE DATABASE)
  and yields its Database; on leaving, also on an error, it drops it (WITH (FORCE): the
  gateway's connections go too). Nothing else on the server is touched.
- `stats(db)` -> JSON-ready counters: SQLite: file and WAL sizes (bytes); PostgreSQL:
  commits, rollbacks, blocks read and hit, temp bytes, deadlocks and WAL bytes of the
  database, checkpoints of the server, and per filled table live/dead tuples and
  autovacuum/autoanalyze counts. `delta(before, after)` subtracts the numeric counters.
  A database that cannot be read gives {"error": ...}, never an exception.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TABLES = ("usage_log", "ledger_entries", "holds", "accounts", "api_keys")


@dataclass(frozen=True)
class Database:
    kind: str
    url: str
    label: str

    @property
    def path(self) -> Path | None:
        return Path(self.url[len("sqlite:///"):]) if self.kind == "sqlite" else None

    @property
    def driver_url(self) -> str:
        """The URL for psycopg (no SQLAlchemy driver suffix)."""
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlite(path: Path, label: str) -> Database:
    return Database("sqlite", f"sqlite:///{path}", label)


def _with_dbname(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextmanager
def postgres(base_url: str, label: str) -> Iterator[Database]:
    import psycopg

    name = "tokmodel_bench_" + secrets.token_hex(5)
    admin_url = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Database("postgresql", _with_dbname(admin_url, name), label)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def stats(db: Database) -> dict[str, Any]:
    if db.kind == "sqlite":
        path = db.path
        assert path is not None
        return {"file_bytes": _size(path), "wal_bytes": _size(Path(f"{path}-wal"))}
    try:
        import psycopg

        with psycopg.connect(db.driver_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit, xact_rollback, blks_read, blks_hit, temp_bytes, deadlocks "
                "FROM pg_stat_database WHERE datname = current_database()").fetchone()
            out: dict[str, Any] = dict(zip(("commits", "rollbacks", "blocks_read",
                                            "blocks_hit", "temp_bytes", "deadlocks"), row,
                                           strict=True))
            ckpt = conn.execute("SELECT checkpoints_timed, checkpoints_req, "
                                "buffers_checkpoint, buffers_backend FROM pg_stat_bgwriter"
                                ).fetchone()
            out.update(zip(("checkpoints_timed", "checkpoints_req", "buffers_checkpoint",
                            "buffers_backend"), ckpt, strict=True))
            out["wal_lsn_bytes"] = int(conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])
            tables = {}
            for name, live, dead, vacuums, analyzes in conn.execute(
                    "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, "
                    "autoanalyze_count FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                    (list(TABLES),)):
                tables[name] = {"live": live, "dead": dead, "autovacuums": vacuums,
                                "autoanalyzes": analyzes}
            out["tables"] = tables
            return out
    except Exception as exc:  # statistics explain a run; they never end one
        return {"error": f"{type(exc).__name__}: {exc}"}


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = delta(old, value)
        elif isinstance(value, int | float) and isinstance(old, int | float):
            out[key] = value - old
    return out
