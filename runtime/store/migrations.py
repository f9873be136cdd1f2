"""Versioned, ordered schema migrations recorded in `schema_migrations`.

`migrate(engine)` is idempotent and safe when several processes start at once: it runs in
one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: transactional DDL under an
advisory lock). A database with no recorded version is created from schema.py and stamped
with every version; an existing one gets the versions it lacks, in order. To change the
schema: edit schema.py and append a Migration that brings an existing database to that shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select, text

from . import schema

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any fixed 64-bit number; this one spells "tokmodel".
_PG_LOCK_KEY = 0x746F6B6D6F64656C


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _baseline(conn: Connection) -> None:
    schema.metadata.create_all(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "accounts, api_keys, holds, usage_log", _baseline),
)


def _check_order(migrations: tuple[Migration, ...]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or not versions or versions[0] < 1:
        raise RuntimeError("migrations must have unique, ascending, positive versions")


def migrate(engine: Engine, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring the database up to date; return the versions applied now (empty when current)."""
    _check_order(migrations)
    table = schema.schema_migrations
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        table.create(conn, checkfirst=True)
        done = set(conn.execute(select(table.c.version)).scalars())
        if not done:
            schema.metadata.create_all(conn, checkfirst=True)
            pending = list(migrations)
        else:
            pending = [m for m in migrations if m.version not in done]
            newer = max(done) - migrations[-1].version
            if newer > 0:
                log.warning(
                    "database schema is at version %d, newer than this code knows (%d)",
                    max(done),
                    migrations[-1].version,
                )
            for migration in pending:
                migration.apply(conn)
        now = datetime.now(UTC)
        for migration in pending:
            conn.execute(
                insert(table),
                {"version": migration.version, "name": migration.name, "applied_at": now},
            )
    return [m.version for m in pending]
