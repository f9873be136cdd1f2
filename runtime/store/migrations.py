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

from sqlalchemy import Connection, Engine, MetaData, insert, inspect, select, text

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


def _holds_without_rowid(conn: Connection) -> None:
    """SQLite: rebuild `holds` as one b-tree keyed by request id (schema.py says why).
    PostgreSQL has no rowid tables: nothing to do."""
    if conn.dialect.name != "sqlite":
        return
    scratch = MetaData()
    schema.accounts.to_metadata(scratch)  # the foreign key's target
    rebuilt = schema.holds.to_metadata(scratch, name="holds_rebuilt")
    rebuilt.create(conn)
    conn.execute(text("INSERT INTO holds_rebuilt (request_id, account_id, amount_micro, "
                      "created_at) SELECT request_id, account_id, amount_micro, created_at "
                      "FROM holds"))
    conn.execute(text("DROP TABLE holds"))
    conn.execute(text("ALTER TABLE holds_rebuilt RENAME TO holds"))


def _hold_heartbeats(conn: Connection) -> None:
    """Owner, heartbeat and progress on `holds` (schema.py). Only the columns missing are
    added: a SQLite database coming from version 1 got them already when version 2 rebuilt
    `holds` from schema.py."""
    present = {column["name"] for column in inspect(conn).get_columns("holds")}
    preparer = conn.dialect.identifier_preparer
    for name in ("owner", "heartbeat_at", "progress"):
        if name in present:
            continue
        column = schema.holds.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE holds ADD COLUMN {preparer.quote(name)} {kind}"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "accounts, api_keys, holds, usage_log", _baseline),
    Migration(2, "holds without rowid (SQLite)", _holds_without_rowid),
    Migration(3, "stored_responses",
              lambda conn: schema.stored_responses.create(conn, checkfirst=True)),
    # Version 4 is reserved for money in nano-credits and the ledger table. Versions need
    # only ascend and each is applied when missing, so 5 touches only `holds` and applies
    # after 3 until 4 exists.
    Migration(5, "holds: owner, heartbeat_at, progress", _hold_heartbeats),
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
