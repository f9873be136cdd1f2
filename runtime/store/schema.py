"""Table definitions (SQLAlchemy Core) shared by SQLite and PostgreSQL.

This is the current shape of the database: a fresh database is created from it, and every
change here comes with a migration in migrations.py that brings an existing database to the
same shape. Money columns are BIGINT nano-credits (1 credit = 10^9, named `*_nano`);
timestamps are stored in UTC.

`ledger_entries` is append-only (UPDATE and DELETE are refused by triggers on both
databases): every movement of an account's money is one row, written in the same
transaction as the change to `accounts`, so `accounts.balance_nano` is always the sum of
the account's `amount_nano` and `accounts.debt_nano` the sum of its `debt_nano`.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    false,
    text,
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
    Column("balance_nano", BigInteger, nullable=False),
    Column("created_at", _Timestamp, nullable=False),
    # What the account owes: the part of a request's cost that neither its hold nor the
    # balance covered. Requests are refused while it is above zero; a top-up pays it first.
    Column("debt_nano", BigInteger, nullable=False, server_default="0"),
    # Set while an operator has disabled the account: its keys are refused everywhere.
    Column("disabled_at", _Timestamp, nullable=True),
    CheckConstraint("balance_nano >= 0", name="balance_nonnegative"),
    CheckConstraint("debt_nano >= 0", name="debt_nonnegative"),
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
    # A management key may open the console and manage the account's keys; an inference
    # key (the default) may only call the API.
    Column("manage", Boolean, nullable=False, server_default=false()),
    # Per-key limits (runtime/limits/): NULL is "no limit". `models` is the allow-list
    # (comma-separated ids and globs); amounts are nano-credits.
    Column("expires_at", _Timestamp, nullable=True),
    Column("models", Text, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("spend_limit_nano", BigInteger, nullable=True),
    Column("daily_limit_nano", BigInteger, nullable=True),
    Column("monthly_limit_nano", BigInteger, nullable=True),
    # The key's spend, kept on its own row so a limit check and its reservation are one
    # conditional UPDATE: `held_nano` is what requests in flight hold, `spent_day` and
    # `spent_month` ('2026-12-04', '2026-12': UTC) the periods the two counters are of.
    Column("held_nano", BigInteger, nullable=False, server_default="0"),
    Column("spent_nano", BigInteger, nullable=False, server_default="0"),
    Column("spent_day", Text, nullable=True),
    Column("spent_day_nano", BigInteger, nullable=False, server_default="0"),
    Column("spent_month", Text, nullable=True),
    Column("spent_month_nano", BigInteger, nullable=False, server_default="0"),
    # Bumped by a trigger (KEY_VERSION_DDL) whenever anything a request is admitted on
    # changes: the secret, revocation, the account, the flags, the limits. A process may
    # authenticate a request from its cache of keys; the hold then checks this version, so
    # a change committed before the hold is never missed (runtime/store/key_cache.py).
    Column("version", Integer, nullable=False, server_default="0"),
)

# The columns whose change bumps api_keys.version: what a KeyRecord reads from the key's row
# (but its id, prefix and creation time, which never change), not the spend counters, which
# requests move (a request's own spend reservation must not outdate its key).
KEY_VERSION_COLUMNS = ("account_id", "name", "secret_hash", "revoked_at", "manage",
                       "expires_at", "models", "rpm", "tpm", "spend_limit_nano",
                       "daily_limit_nano", "monthly_limit_nano")
_key_columns = ", ".join(KEY_VERSION_COLUMNS)
KEY_VERSION_DDL = {
    "sqlite": (
        f"CREATE TRIGGER api_keys_version AFTER UPDATE OF {_key_columns} ON api_keys "
        "BEGIN UPDATE api_keys SET version = version + 1 WHERE id = NEW.id; END",),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION api_keys_version() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$",
        f"CREATE TRIGGER api_keys_version BEFORE UPDATE OF {_key_columns} ON api_keys "
        "FOR EACH ROW EXECUTE FUNCTION api_keys_version()"),
}
for _dialect, _statements in KEY_VERSION_DDL.items():
    for _statement in _statements:
        event.listen(api_keys, "after_create", DDL(_statement).execute_if(dialect=_dialect))

# Request and token counts of rate-limited keys per UTC minute (runtime/limits/rates.py);
# rows older than two minutes are never read again and are deleted as keys are counted.
key_rates = Table(
    "key_rates",
    metadata,
    Column("key_id", String(16), nullable=False),
    Column("minute", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    PrimaryKeyConstraint("key_id", "minute"),
    sqlite_with_rowid=False,
)

holds = Table(
    "holds",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("created_at", _Timestamp, nullable=False),
    # Who keeps the hold alive and when it last said so (runtime/store/holds.py): a hold
    # whose heartbeat (else created_at) is older than the grace period belongs to a lost
    # worker and is settled by a sweeper at `progress`, the JSON record of what was produced.
    Column("owner", Text, nullable=True),
    Column("heartbeat_at", _Timestamp, nullable=True),
    Column("progress", Text, nullable=True),
    # The key whose spend limits reserved this hold (runtime/limits/spend.py), so that a hold
    # given back without its worker (sweeper, operator) also gives back the key's reservation.
    Column("spend_key", Text, nullable=True),
    CheckConstraint("amount_nano >= 0", name="amount_nonnegative"),
    # One b-tree keyed by request id instead of a rowid table plus its key index: a hold and
    # its settlement each write half the pages (measured on the hot path's commits).
    sqlite_with_rowid=False,
)

usage_log = Table(
    "usage_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    # One row per request id: the request's settle entry in ledger_entries is unique and
    # written in the same transaction (a unique index here would be one more b-tree write
    # per request).
    Column("request_id", Text, nullable=False),
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
    Column("cost_nano", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False, default=0),
    Index("ix_usage_log_account_id_created_at", "account_id", "created_at"),
    # Keyset pages of the usage API walk ids downwards, per account or per key; retention
    # prunes by time (runtime/store/usage_queries.py).
    Index("ix_usage_log_account_id_id", "account_id", "id"),
    Index("ix_usage_log_key_id_id", "key_id", "id"),
    Index("ix_usage_log_created_at", "created_at"),
)

def _sum_columns() -> list[Column]:
    """The sums both rollup tables keep per key (a Column belongs to one table: new ones
    each call)."""
    return [Column(name, BigInteger, nullable=False) for name in (
        "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_nano")] + [
        Column("units", Text, nullable=False)]


# The usage log summed per UTC day, account, key, model and endpoint (runtime/store/
# usage_rollup.py): what totals, the daily series, the distinct models and key spend read
# instead of every usage row. It covers exactly the usage rows with ids up to
# usage_rollup_state.rolled_to; rows above it are read from usage_log. Written off the
# request path by a periodic task, so the per-request INSERT into usage_log writes nothing
# more. `key_id` is '' for rows without a key; `units` is the JSON of the other priced
# units summed (images, audio seconds, searches, ...).
usage_rollup = Table(
    "usage_rollup",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("day", String(10), nullable=False),  # YYYY-MM-DD, UTC
    Column("key_id", String(16), nullable=False),
    Column("model", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    *_sum_columns(),
    PrimaryKeyConstraint("account_id", "day", "key_id", "model", "endpoint"),
    Index("ix_usage_rollup_key_id_day", "key_id", "day"),
    sqlite_with_rowid=False,
)

# The same sums over every account and key: per UTC day, model and endpoint. What reports
# without an account or key filter read (a few rows a day, however many keys there are).
usage_rollup_all = Table(
    "usage_rollup_all",
    metadata,
    Column("day", String(10), nullable=False),
    Column("model", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    *_sum_columns(),
    PrimaryKeyConstraint("day", "model", "endpoint"),
    sqlite_with_rowid=False,
)

# One row (id 1): the highest usage_log id folded into the rollups, and a version that
# pruning bumps, so a rollup pass computed before a prune is not applied after it.
usage_rollup_state = Table(
    "usage_rollup_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("rolled_to", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)
# The row exists from the table's creation on: a prune always finds it to bump.
event.listen(usage_rollup_state, "after_create", DDL(
    "INSERT INTO usage_rollup_state (id, rolled_to, version) VALUES (1, 0, 0)"))

# One row (id 1) once usage rows have been pruned: rows created before `pruned_before` may
# be gone, so the audit does not expect a usage row for settle entries older than that.
usage_retention = Table(
    "usage_retention",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("pruned_before", _Timestamp, nullable=False),
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


# What a ledger entry records (`kind`); `reference` is the request id for the movements of
# a request (hold, settle, release, debt) and a generated id otherwise.
LEDGER_KINDS = (
    "opening",       # the balance an account had when the ledger began (migration 4)
    "topup",         # credits added by an operator (also an account's initial credits)
    "adjustment",    # a manual correction, either sign
    "hold",          # a request's worst case taken from the balance before forwarding
    "settle",        # the request's net movement once charged: hold - cost given back
                     # (a refund) or, above the hold, the overrun taken from the balance
    "release",       # a hold given back in full (nothing was charged)
    "debt",          # the part of a request's cost nothing covered (debt_nano > 0)
    "debt_payment",  # credits that paid a debt (amount_nano < 0, debt_nano < 0)
)

# The ledger kinds an account's money history shows (runtime/store/money_history.py), and the
# predicate of the partial index it reads: spelled out once, since SQLite uses a partial index
# only for a query that repeats its WHERE term.
HISTORY_KINDS = ("topup", "adjustment", "debt", "debt_payment")
HISTORY_PREDICATE = text("kind IN (" + ", ".join(f"'{k}'" for k in HISTORY_KINDS) + ")")

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("reference", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("debt_nano", BigInteger, nullable=False),
    Column("created_at", _Timestamp, nullable=False),
    Column("note", Text, nullable=True),
    # The key is also the guarantee: one entry of each kind per request and account, so a
    # request can be held once and settled once; entries of an account are one range.
    PrimaryKeyConstraint("account_id", "reference", "kind"),
    CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in LEDGER_KINDS) + ")",
                    name="kind_known"),
    # One b-tree and no other index the hot path writes: a request's hold and settle entries
    # are one page write each. The money history's partial index holds only the history
    # kinds (top-ups, adjustments, debts), newest last per account.
    Index("ix_ledger_entries_history", "account_id", "created_at", "reference", "kind",
          sqlite_where=HISTORY_PREDICATE, postgresql_where=HISTORY_PREDICATE),
    sqlite_with_rowid=False,
)

_APPEND_ONLY = "ledger entries are append-only"
for _event in ("UPDATE", "DELETE"):
    event.listen(ledger_entries, "after_create", DDL(
        f"CREATE TRIGGER ledger_entries_no_{_event.lower()} BEFORE {_event} ON ledger_entries "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END").execute_if(dialect="sqlite"))
event.listen(ledger_entries, "after_create", DDL(
    "CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger "
    f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$").execute_if(
        dialect="postgresql"))
event.listen(ledger_entries, "after_create", DDL(
    "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
    "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()").execute_if(
        dialect="postgresql"))

# The web console's server-side sessions (runtime.console.sessions). The cookie holds a
# random id; only its SHA-256 is stored, so a copy of the database opens no session. `flash`
# holds a new key's secret until the one page that shows it has been rendered.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # 'account' or 'operator'
    Column("account_id", Integer, nullable=True, index=True),
    Column("key_id", String(16), nullable=True, index=True),
    Column("binding", String(64), nullable=False),  # what the session's CSRF token signs
    Column("created_at", _Timestamp, nullable=False),
    Column("expires_at", _Timestamp, nullable=False, index=True),
    Column("flash", Text, nullable=True),
)

# Console logins (both outcomes) and operator actions. Failed logins in the last minutes are
# also what throttles further attempts, per client address and per key prefix, when Redis
# does not count them. Rows older than TOKMODEL_AUDIT_RETENTION_DAYS are pruned.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("created_at", _Timestamp, nullable=False),
    Column("actor", Text, nullable=False),  # 'operator', or 'key:<id>' for an account's key
    Column("action", Text, nullable=False),
    Column("client_addr", Text, nullable=False),
    Column("key_prefix", Text, nullable=True),
    Column("account_id", Integer, nullable=True),
    Column("key_id", String(16), nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_audit_log_action_client_addr_created_at", "action", "client_addr", "created_at"),
    Index("ix_audit_log_action_key_prefix_created_at", "action", "key_prefix", "created_at"),
    # retention deletes the oldest rows first (runtime/admin/retention.py)
    Index("ix_audit_log_created_at", "created_at"),
)
