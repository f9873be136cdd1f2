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

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    inspect,
    select,
    text,
)

from . import schema
from .errors import StoreError

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
    PostgreSQL has no rowid tables: nothing to do. The table is spelled out as it was at
    version 2, whatever schema.py says today."""
    if conn.dialect.name != "sqlite":
        return
    scratch = MetaData(naming_convention=schema.NAMING_CONVENTION)
    Table("accounts", scratch, Column("id", Integer, primary_key=True))  # the FK's target
    rebuilt = Table(
        "holds_rebuilt", scratch,
        Column("request_id", Text, primary_key=True),
        Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
        Column("amount_micro", BigInteger, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        CheckConstraint("amount_micro >= 0", name="amount_nonnegative"),
        sqlite_with_rowid=False)
    rebuilt.create(conn)
    conn.execute(text("INSERT INTO holds_rebuilt (request_id, account_id, amount_micro, "
                      "created_at) SELECT request_id, account_id, amount_micro, created_at "
                      "FROM holds"))
    conn.execute(text("DROP TABLE holds"))
    conn.execute(text("ALTER TABLE holds_rebuilt RENAME TO holds"))


_NANO_PER_MICRO = 1_000
_MONEY_COLUMNS = (("accounts", "balance_micro", "balance_nano"),
                  ("holds", "amount_micro", "amount_nano"),
                  ("usage_log", "cost_micro", "cost_nano"))
_USAGE_COLUMNS = ("id, request_id, created_at, account_id, key_id, endpoint, model, provider, "
                  "status, prompt_tokens, completion_tokens, cached_tokens, details, {cost}, "
                  "latency_ms")


def _usage_log_v4(metadata: MetaData, name: str) -> Table:
    """usage_log as version 4 has it: cost_nano, and no unique index on request_id (the
    request's settle entry is unique instead)."""
    Table("accounts", metadata, Column("id", Integer, primary_key=True), extend_existing=True)
    return Table(
        name, metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        Column("request_id", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
        Column("key_id", String(16), nullable=True),
        Column("endpoint", Text, nullable=False),
        Column("model", Text, nullable=False),
        Column("provider", Text, nullable=False),
        Column("status", Integer, nullable=False),
        Column("prompt_tokens", Integer, nullable=False, default=0),
        Column("completion_tokens", Integer, nullable=False, default=0),
        Column("cached_tokens", Integer, nullable=False, default=0),
        Column("details", Text, nullable=False, default="{}"),
        Column("cost_nano", BigInteger, nullable=False),
        Column("latency_ms", Integer, nullable=False, default=0))


def _usage_log_in_nano(conn: Connection) -> None:
    """usage_log.cost_micro -> cost_nano (x 1000) without the unique index on request_id.
    SQLite cannot drop a table's own constraint: the table is copied once into its new
    shape (the copy also does the multiplication); PostgreSQL alters it in place."""
    if conn.dialect.name != "sqlite":
        conn.execute(text("ALTER TABLE usage_log DROP CONSTRAINT uq_usage_log_request_id"))
        conn.execute(text("ALTER TABLE usage_log RENAME COLUMN cost_micro TO cost_nano"))
        conn.execute(text(f"UPDATE usage_log SET cost_nano = cost_nano * {_NANO_PER_MICRO}"))
        return
    _usage_log_v4(MetaData(), "usage_log_rebuilt").create(conn)
    conn.execute(text(
        f"INSERT INTO usage_log_rebuilt ({_USAGE_COLUMNS.format(cost='cost_nano')}) "
        f"SELECT {_USAGE_COLUMNS.format(cost=f'cost_micro * {_NANO_PER_MICRO}')} "
        "FROM usage_log"))
    conn.execute(text("DROP TABLE usage_log"))
    conn.execute(text("ALTER TABLE usage_log_rebuilt RENAME TO usage_log"))
    conn.execute(text("CREATE INDEX ix_usage_log_account_id_created_at "
                      "ON usage_log (account_id, created_at)"))


def _nano_credits_and_ledger(conn: Connection) -> None:
    """Money in nano-credits, accounts' debt, and the ledger, on a database at version 3.

    Every amount is multiplied by 1000 in place (no balance changes: 1 micro-credit is 1000
    nano-credits) and its column renamed (usage_log also loses its unique index on
    request_id); an amount too large for BIGINT nano-credits stops
    the migration, which then changes nothing. The ledger starts consistent with the data:
    a `hold` entry per open hold, a `settle` entry per usage row (its cost), and per
    account an `opening` entry of balance + open holds + past costs, so the balance is the
    sum of the entries and `audit` holds for the history too."""
    limit = (2**63 - 1) // _NANO_PER_MICRO
    for table, old, _new in _MONEY_COLUMNS:
        biggest = conn.execute(text(f"SELECT MAX({old}) FROM {table}")).scalar()
        if biggest is not None and biggest > limit:
            raise StoreError(f"{table}.{old} holds {biggest} micro-credits, more than "
                               "nano-credits can count in 64 bits")
    for table, old, new in _MONEY_COLUMNS[:2]:
        conn.execute(text(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}"))
        conn.execute(text(f"UPDATE {table} SET {new} = {new} * {_NANO_PER_MICRO}"))
    _usage_log_in_nano(conn)
    conn.execute(text("ALTER TABLE accounts ADD COLUMN debt_nano BIGINT NOT NULL DEFAULT 0 "
                      "CONSTRAINT ck_accounts_debt_nonnegative CHECK (debt_nano >= 0)"))
    schema.ledger_entries.create(conn)
    entry = ("INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, debt_nano, "
             "created_at, note) ")
    conn.execute(text(entry + "SELECT account_id, request_id, 'hold', -amount_nano, 0, "
                      "created_at, NULL FROM holds"))
    conn.execute(text(entry + "SELECT account_id, request_id, 'settle', -cost_nano, 0, "
                      "created_at, 'charged before the ledger' FROM usage_log"))
    opening = ("a.balance_nano"
               " + COALESCE((SELECT SUM(h.amount_nano) FROM holds h"
               " WHERE h.account_id = a.id), 0)"
               " + COALESCE((SELECT SUM(u.cost_nano) FROM usage_log u"
               " WHERE u.account_id = a.id), 0)")
    conn.execute(text(entry + f"SELECT a.id, 'opening', 'opening', {opening}, 0, :now, "
                      "'credits before the ledger' FROM accounts a "
                      f"WHERE {opening} <> 0").bindparams(
        bindparam("now", datetime.now(UTC), type_=DateTime(timezone=True))))


def _add_hold_columns(conn: Connection, names: tuple[str, ...]) -> None:
    """These columns of `holds`, as schema.py defines them, where missing (a database created
    fresh from schema.py has them all)."""
    present = {column["name"] for column in inspect(conn).get_columns("holds")}
    preparer = conn.dialect.identifier_preparer
    for name in names:
        if name in present:
            continue
        column = schema.holds.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE holds ADD COLUMN {preparer.quote(name)} {kind}"))


_LIMIT_COLUMNS = ("expires_at", "models", "rpm", "tpm", "spend_limit_nano", "daily_limit_nano",
                  "monthly_limit_nano", "held_nano", "spent_nano", "spent_day", "spent_day_nano",
                  "spent_month", "spent_month_nano")


def _key_limits(conn: Connection) -> None:
    """Per-key limit and spend columns on `api_keys` (schema.py) and `key_rates`."""
    preparer = conn.dialect.identifier_preparer
    present = {column["name"] for column in inspect(conn).get_columns("api_keys")}
    for column in schema.api_keys.columns:
        if column.name in present or column.name not in _LIMIT_COLUMNS:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        default = (f" NOT NULL DEFAULT {column.server_default.arg}"
                   if column.server_default is not None else "")
        conn.execute(text(f"ALTER TABLE api_keys ADD COLUMN {preparer.quote(column.name)} "
                          f"{kind}{default}"))
    schema.key_rates.create(conn, checkfirst=True)
def _management_keys_and_usage_queries(conn: Connection) -> None:
    """api_keys.manage (every key that exists now becomes a management key, so no account
    loses its console; new keys default to inference keys), accounts.disabled_at, the
    usage_log indexes of the usage API and the usage_retention watermark."""
    preparer = conn.dialect.identifier_preparer
    present = {column["name"] for column in inspect(conn).get_columns("api_keys")}
    if "manage" not in present:
        kind = schema.api_keys.c.manage.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE api_keys ADD COLUMN {preparer.quote('manage')} "
                          f"{kind} NOT NULL DEFAULT {_false(conn)}"))
        conn.execute(text(f"UPDATE api_keys SET {preparer.quote('manage')} = "
                          f"{_true(conn)}"))
    if "disabled_at" not in {c["name"] for c in inspect(conn).get_columns("accounts")}:
        kind = schema.accounts.c.disabled_at.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE accounts ADD COLUMN disabled_at {kind}"))
    existing = {index["name"] for index in inspect(conn).get_indexes("usage_log")}
    for index in schema.usage_log.indexes:
        if index.name not in existing:
            index.create(conn)
    schema.usage_retention.create(conn, checkfirst=True)


def _true(conn: Connection) -> str:
    return "1" if conn.dialect.name == "sqlite" else "TRUE"


def _false(conn: Connection) -> str:
    return "0" if conn.dialect.name == "sqlite" else "FALSE"


def _console_sessions_and_audit_log(conn: Connection) -> None:
    """The console's server-side sessions and the audit log (schema.py)."""
    schema.console_sessions.create(conn, checkfirst=True)
    schema.audit_log.create(conn, checkfirst=True)


def _add_indexes(conn: Connection, table: Table, names: tuple[str, ...]) -> None:
    """These indexes of `table`, as schema.py defines them, where missing."""
    existing = {index["name"] for index in inspect(conn).get_indexes(table.name)}
    for index in table.indexes:
        if index.name in names and index.name not in existing:
            index.create(conn)


def _key_versions(conn: Connection) -> None:
    """api_keys.version and the trigger that bumps it (schema.KEY_VERSION_DDL)."""
    if "version" not in {c["name"] for c in inspect(conn).get_columns("api_keys")}:
        conn.execute(text("ALTER TABLE api_keys ADD COLUMN version INTEGER NOT NULL DEFAULT 0"))
    for statement in schema.KEY_VERSION_DDL.get(conn.dialect.name, ()):
        conn.execute(text(statement))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "accounts, api_keys, holds, usage_log", _baseline),
    Migration(2, "holds without rowid (SQLite)", _holds_without_rowid),
    Migration(3, "stored_responses",
              lambda conn: schema.stored_responses.create(conn, checkfirst=True)),
    Migration(4, "nano-credits, debt, ledger_entries, usage_log without a unique request id",
              _nano_credits_and_ledger),
    # 4 and 5 are independent (5 touches only the new columns of `holds`): a database that
    # got 5 before 4 existed gets 4 when it is missing.
    Migration(5, "holds: owner, heartbeat_at, progress",
              lambda conn: _add_hold_columns(conn, ("owner", "heartbeat_at", "progress"))),
    Migration(6, "api_keys: limits and spend; key_rates", _key_limits),
    Migration(7, "api_keys.manage, accounts.disabled_at, usage_log indexes, usage_retention",
              _management_keys_and_usage_queries),
    Migration(8, "console_sessions, audit_log", _console_sessions_and_audit_log),
    Migration(9, "holds.spend_key", lambda conn: _add_hold_columns(conn, ("spend_key",))),
    Migration(10, "audit_log index on created_at (retention)",
              lambda conn: _add_indexes(conn, schema.audit_log, ("ix_audit_log_created_at",))),
    Migration(11, "ledger_entries: partial index of the money history's kinds",
              lambda conn: _add_indexes(conn, schema.ledger_entries,
                                        ("ix_ledger_entries_history",))),
    # the sums start empty: the periodic rollup folds the existing rows in, a chunk at a time
    Migration(12, "usage_rollup, usage_rollup_all, usage_rollup_state", lambda conn: [
        table.create(conn, checkfirst=True)
        for table in (schema.usage_rollup, schema.usage_rollup_all,
                      schema.usage_rollup_state)]),
    Migration(13, "api_keys.version and its trigger", _key_versions),
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
