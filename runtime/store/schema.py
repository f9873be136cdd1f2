"""Table definitions (SQLAlchemy Core) shared by SQLite and PostgreSQL.

This is the current shape of the database: a fresh database is created from it, and every
change here comes with a migration in migrations.py that brings an existing database to the
same shape. Money columns are BIGINT micro-credits; timestamps are stored in UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
_Timestamp = DateTime(timezone=True)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("applied_at", _Timestamp, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("balance_micro", BigInteger, nullable=False),
    Column("created_at", _Timestamp, nullable=False),
    CheckConstraint("balance_micro >= 0", name="balance_nonnegative"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("display_prefix", Text, nullable=False),
    Column("created_at", _Timestamp, nullable=False),
    Column("revoked_at", _Timestamp, nullable=True),
)

holds = Table(
    "holds",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount_micro", BigInteger, nullable=False),
    Column("created_at", _Timestamp, nullable=False),
    # Who keeps the hold alive and when it last said so (runtime/store/holds.py): a hold
    # whose heartbeat (else created_at) is older than the grace period belongs to a lost
    # worker and is settled by a sweeper at `progress`, the JSON record of what was produced.
    Column("owner", Text, nullable=True),
    Column("heartbeat_at", _Timestamp, nullable=True),
    Column("progress", Text, nullable=True),
    CheckConstraint("amount_micro >= 0", name="amount_nonnegative"),
    # One b-tree keyed by request id instead of a rowid table plus its key index: a hold and
    # its settlement each write half the pages (measured on the hot path's commits).
    sqlite_with_rowid=False,
)

usage_log = Table(
    "usage_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("request_id", Text, nullable=False, unique=True),
    Column("created_at", _Timestamp, nullable=False),
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
    Column("cost_micro", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False, default=0),
    Index("ix_usage_log_account_id_created_at", "account_id", "created_at"),
)

# Responses API conversations the gateway keeps for `previous_response_id`, GET and DELETE:
# in full for providers that keep none (`native` false), or only as ownership and location
# for responses the provider stored itself (`native` true: which deployment holds them).
stored_responses = Table(
    "stored_responses",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("model", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("deployment", Text, nullable=True),
    Column("native", Boolean, nullable=False),
    Column("input_items", Text, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_at", _Timestamp, nullable=False),
    Column("expires_at", _Timestamp, nullable=False),
    Index("ix_stored_responses_expires_at", "expires_at"),
)
