"""The database as migration 3 left it (micro-credits, no ledger), frozen here so that later
migrations can be tested on a real database of that version whatever schema.py says now."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from runtime.store.schema import NAMING_CONVENTION

_BigId = BigInteger().with_variant(Integer(), "sqlite")
_Timestamp = DateTime(timezone=True)


def metadata_v3(holds_with_rowid: bool = False) -> MetaData:
    """Version 3's tables (version 1's when `holds_with_rowid` and without stored_responses
    is all a test needs)."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table("schema_migrations", md,
          Column("version", Integer, primary_key=True, autoincrement=False),
          Column("name", Text, nullable=False),
          Column("applied_at", _Timestamp, nullable=False))
    Table("accounts", md,
          Column("id", Integer, primary_key=True),
          Column("name", Text, nullable=False, unique=True),
          Column("balance_micro", BigInteger, nullable=False),
          Column("created_at", _Timestamp, nullable=False),
          CheckConstraint("balance_micro >= 0", name="balance_nonnegative"))
    Table("api_keys", md,
          Column("id", String(16), primary_key=True),
          Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
          Column("name", Text, nullable=False),
          Column("secret_hash", String(64), nullable=False, unique=True),
          Column("display_prefix", Text, nullable=False),
          Column("created_at", _Timestamp, nullable=False),
          Column("revoked_at", _Timestamp, nullable=True))
    Table("holds", md,
          Column("request_id", Text, primary_key=True),
          Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
          Column("amount_micro", BigInteger, nullable=False),
          Column("created_at", _Timestamp, nullable=False),
          CheckConstraint("amount_micro >= 0", name="amount_nonnegative"),
          sqlite_with_rowid=holds_with_rowid)
    Table("usage_log", md,
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
          Index("ix_usage_log_account_id_created_at", "account_id", "created_at"))
    Table("stored_responses", md,
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
          Index("ix_stored_responses_expires_at", "expires_at"))
    return md


def create_v3(engine: Engine) -> None:
    """A database at version 3: its tables, stamped with versions 1 to 3."""
    metadata_v3().create_all(engine)
    with engine.begin() as conn:
        for version in (1, 2, 3):
            conn.execute(text("INSERT INTO schema_migrations VALUES (:v, :n, :t)"),
                         {"v": version, "n": f"v{version}", "t": "2026-01-01 00:00:00"})
