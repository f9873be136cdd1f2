"""The store against real databases: embedded SQLite, and PostgreSQL when
TOKMODEL_TEST_POSTGRES_URL names a server (each test gets its own schema)."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, func, select, text, update

from runtime.store import (
    Account,
    AccountExists,
    AccountNotFound,
    KeyRecord,
    Store,
    StoreError,
    UsageRecord,
    open_store,
)
from runtime.store.engine import normalize_url
from runtime.store.migrations import MIGRATIONS
from runtime.store.schema import holds, metadata, schema_migrations, usage_log

ALL_VERSIONS = [m.version for m in MIGRATIONS]
PG_ENV = "TOKMODEL_TEST_POSTGRES_URL"
PG_SKIP = f"{PG_ENV} not set: PostgreSQL tests need a server"


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/var/tokmodel.db"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    import psycopg

    admin_url = base.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = "tm_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _pg_schema_url(base, schema)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def raw(db_url: str) -> Iterator:
    """A plain engine on the same database, for looking behind the store's back."""
    engine = create_engine(normalize_url(db_url))
    try:
        yield engine
    finally:
        engine.dispose()


def _usage(request_id: str, account: Account, key_id: str | None = None, **kw) -> UsageRecord:
    fields = dict(
        request_id=request_id,
        account_id=account.id,
        key_id=key_id,
        endpoint="/v1/chat/completions",
        model="openai/gpt-4o-mini",
        provider="openai",
        status=200,
    )
    fields.update(kw)
    return UsageRecord(**fields)


def _balance(store: Store, name: str) -> int:
    account = store.get_account(name)
    assert account is not None
    return account.balance_micro


# migrations


def test_migrations_apply_once_and_reopen_is_idempotent(db_url: str, raw) -> None:
    first = Store(db_url)
    try:
        assert first.migrate() == ALL_VERSIONS
        assert first.migrate() == []
        first.create_account("acme", 5)
    finally:
        first.close()
    with open_store(db_url) as second:
        assert second.migrate() == []
        assert _balance(second, "acme") == 5
    with raw.connect() as conn:
        versions = conn.execute(select(schema_migrations.c.version)).scalars().all()
        assert versions == ALL_VERSIONS
        for table in metadata.sorted_tables:
            conn.execute(select(func.count()).select_from(table)).scalar()


def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "tokmodel.db"
    with open_store(f"sqlite:///{path}") as store:
        assert path.parent.is_dir()
        assert store.ping()
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_in_memory_sqlite_works() -> None:
    with open_store("sqlite://") as store:
        account = store.create_account("mem", 10)
        assert store.hold("r", account.id, 4)
        assert store.settle("r", 3, _usage("r", account)) == 3
        assert _balance(store, "mem") == 7


def test_url_is_masked_and_unreachable_server_pings_false() -> None:
    store = Store("postgresql://user:hunter2@127.0.0.1:1/nowhere?connect_timeout=2")
    try:
        assert "hunter2" not in store.url
        assert store.url.startswith("postgresql+psycopg://")
        assert store.ping() is False
        with pytest.raises(StoreError) as info:
            store.get_account("x")
        assert "hunter2" not in str(info.value)
    finally:
        store.close()


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(StoreError):
        open_store("mysql://root@127.0.0.1/x")


# accounts


def test_accounts_create_get_duplicate_topup(store: Store) -> None:
    acme = store.create_account("acme", 1_000_000)
    assert isinstance(acme, Account)
    assert acme.balance_micro == 1_000_000
    assert acme.created_at.tzinfo is not None
    assert store.get_account("acme") == acme
    assert store.get_account_by_id(acme.id) == acme
    assert store.get_account("nobody") is None
    assert store.get_account_by_id(acme.id + 1000) is None

    with pytest.raises(AccountExists):
        store.create_account("acme")
    assert store.topup("acme", 250).balance_micro == 1_000_250
    assert _balance(store, "acme") == 1_000_250
    with pytest.raises(AccountNotFound):
        store.topup("nobody", 5)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            store.topup("acme", bad)
    with pytest.raises(TypeError):
        store.topup("acme", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.topup("acme", 2**63 - 1)  # would overflow BIGINT
    with pytest.raises(ValueError):
        store.create_account("neg", -1)
    with pytest.raises(ValueError):
        store.create_account("")

    store.create_account("beta")
    assert [a.name for a in store.list_accounts()] == ["acme", "beta"]
    assert _balance(store, "beta") == 0


# keys


def test_keys_create_list_rename_revoke_authenticate(store: Store, db_url: str) -> None:
    acme = store.create_account("acme")
    record, secret = store.create_key("acme", "ci")
    assert isinstance(record, KeyRecord)
    assert re.fullmatch(r"tm-[A-Za-z0-9_-]{43}", secret)
    assert re.fullmatch(r"key_[0-9a-f]{12}", record.id)
    assert record.display_prefix == secret[:7] + "…"
    assert (record.account_id, record.account_name, record.name) == (acme.id, "acme", "ci")
    assert record.revoked_at is None

    other, other_secret = store.create_key("acme")
    assert other.name == "default" and other_secret != secret
    assert [k.id for k in store.list_keys("acme")] == [record.id, other.id]
    assert store.list_keys("nobody") == []
    with pytest.raises(AccountNotFound):
        store.create_key("nobody")

    assert store.authenticate(secret) == record
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("tm-short") is None
    assert store.authenticate("") is None

    assert store.rename_key(record.id, "deploy")
    assert store.authenticate(secret).name == "deploy"
    assert not store.rename_key("key_000000000000", "x")

    # Another process's view: a second Store on the same database, used before and after.
    with open_store(db_url) as elsewhere:
        assert elsewhere.authenticate(secret) is not None
        assert store.revoke_key(record.id)
        assert elsewhere.authenticate(secret) is None
        assert elsewhere.authenticate(other_secret) is not None
    assert store.authenticate(secret) is None
    assert not store.revoke_key(record.id)
    assert not store.revoke_key("key_000000000000")
    listed = {k.id: k for k in store.list_keys("acme")}
    assert listed[record.id].revoked_at is not None
    assert listed[other.id].revoked_at is None


def test_secret_is_never_stored(store: Store, raw, db_url: str) -> None:
    store.create_account("acme")
    secrets = [store.create_key("acme", f"k{i}")[1] for i in range(3)]
    with raw.connect() as conn:
        dump = []
        for table in metadata.sorted_tables:
            dump.extend(repr(tuple(row)) for row in conn.execute(select(table)))
    blob = "\n".join(dump)
    for secret in secrets:
        assert secret not in blob
        assert secret[3:] not in blob  # not even without its prefix
    if db_url.startswith("sqlite"):
        store.close()
        path = Path(normalize_url(db_url).database)
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        data = b"".join(p.read_bytes() for p in files)
        for secret in secrets:
            assert secret.encode() not in data
            assert secret[3:].encode() not in data


# credits


def test_hold_refused_when_balance_cannot_cover(store: Store, raw) -> None:
    acme = store.create_account("acme", 1_000)
    assert store.hold("r1", acme.id, 1_001) is False
    assert _balance(store, "acme") == 1_000
    assert store.hold("r2", acme.id, 1_000) is True
    assert _balance(store, "acme") == 0
    assert store.hold("r3", acme.id, 1) is False
    assert store.hold("r4", acme.id + 1000, 1) is False  # unknown account
    with raw.connect() as conn:
        assert conn.execute(select(holds.c.request_id)).scalars().all() == ["r2"]
    with pytest.raises(StoreError):
        store.hold("r2", acme.id, 0)  # request id already holding
    with pytest.raises(ValueError):
        store.hold("r5", acme.id, -1)


def test_settle_charges_exactly_and_logs_one_row(store: Store, raw) -> None:
    acme = store.create_account("acme", 1_000_000)
    key, _ = store.create_key("acme")
    assert store.hold("req-1", acme.id, 500_000)
    assert _balance(store, "acme") == 500_000
    usage = _usage(
        "req-1",
        acme,
        key.id,
        prompt_tokens=12,
        completion_tokens=34,
        cached_tokens=5,
        details={"images": 2, "audio_seconds": "1.5"},
        latency_ms=87,
    )
    assert store.settle("req-1", 123_456, usage) == 123_456
    assert _balance(store, "acme") == 1_000_000 - 123_456
    rows = store.usage("acme")
    assert len(rows) == 1
    row = rows[0]
    assert (row.request_id, row.account_id, row.key_id) == ("req-1", acme.id, key.id)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (12, 34, 5)
    assert row.details == {"images": 2, "audio_seconds": "1.5"}
    assert (row.cost_micro, row.latency_ms, row.status) == (123_456, 87, 200)
    assert row.created_at is not None and row.created_at.tzinfo is not None
    with raw.connect() as conn:
        assert conn.execute(select(func.count()).select_from(holds)).scalar() == 0


def test_settle_is_idempotent(store: Store, raw) -> None:
    acme = store.create_account("acme", 10_000)
    assert store.hold("req", acme.id, 4_000)
    assert store.settle("req", 1_500, _usage("req", acme)) == 1_500
    assert store.settle("req", 1_500, _usage("req", acme)) == 0
    assert store.settle("req", 9_999, _usage("req", acme)) == 0
    assert _balance(store, "acme") == 8_500
    with raw.connect() as conn:
        assert conn.execute(select(func.count()).select_from(usage_log)).scalar() == 1
    # The same request id held again by mistake: the hold is given back, nothing logged.
    assert store.hold("req", acme.id, 1_000)
    assert store.settle("req", 500, _usage("req", acme)) == 0
    assert _balance(store, "acme") == 8_500
    assert len(store.usage("acme")) == 1


def test_settle_above_hold_takes_from_balance_but_never_below_zero(store: Store) -> None:
    acme = store.create_account("acme", 1_000)
    assert store.hold("a", acme.id, 100)
    assert store.settle("a", 150, _usage("a", acme)) == 150  # overrun covered by the balance
    assert _balance(store, "acme") == 850
    assert store.hold("b", acme.id, 600)
    assert _balance(store, "acme") == 250
    assert store.settle("b", 5_000, _usage("b", acme)) == 850  # capped at hold + balance
    assert _balance(store, "acme") == 0
    assert [u.cost_micro for u in store.usage("acme")] == [850, 150]


def test_settle_with_zero_cost_releases_the_hold(store: Store) -> None:
    acme = store.create_account("acme", 700)
    assert store.hold("r", acme.id, 700)
    assert _balance(store, "acme") == 0
    assert store.settle("r", 0, _usage("r", acme, status=502)) == 0
    assert _balance(store, "acme") == 700
    [row] = store.usage("acme")
    assert (row.cost_micro, row.status) == (0, 502)


def test_release_gives_back_without_logging(store: Store) -> None:
    acme = store.create_account("acme", 700)
    assert store.hold("r", acme.id, 300)
    assert store.release("r") == 300
    assert store.release("r") == 0
    assert _balance(store, "acme") == 700
    assert store.usage("acme") == []


def test_release_stale_holds(store: Store, raw) -> None:
    acme = store.create_account("acme", 10_000)
    beta = store.create_account("beta", 10_000)
    assert store.hold("old-a", acme.id, 1_000)
    assert store.hold("old-b", beta.id, 2_000)
    assert store.hold("fresh", acme.id, 3_000)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with raw.begin() as conn:
        conn.execute(
            update(holds)
            .where(holds.c.request_id.in_(["old-a", "old-b"]))
            .values(created_at=long_ago)
        )
    assert store.release_stale_holds(3600) == 2
    assert store.release_stale_holds(3600) == 0
    assert _balance(store, "acme") == 10_000 - 3_000
    assert _balance(store, "beta") == 10_000
    assert store.settle("fresh", 1_000, _usage("fresh", acme)) == 1_000
    assert _balance(store, "acme") == 9_000
    # A request whose hold was released still settles: charged from the balance, logged once.
    assert store.settle("old-a", 400, _usage("old-a", acme)) == 400
    assert store.settle("old-a", 400, _usage("old-a", acme)) == 0
    assert _balance(store, "acme") == 8_600
    with pytest.raises(ValueError):
        store.release_stale_holds(-1)


def test_usage_is_newest_first_and_limited(store: Store) -> None:
    acme = store.create_account("acme", 1_000_000)
    other = store.create_account("other", 1_000_000)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(5):
        rid = f"r{i}"
        assert store.hold(rid, acme.id, 100)
        store.settle(rid, i, _usage(rid, acme, created_at=start + timedelta(seconds=i)))
    assert store.hold("o", other.id, 100)
    store.settle("o", 1, _usage("o", other))
    assert [u.request_id for u in store.usage("acme")] == ["r4", "r3", "r2", "r1", "r0"]
    assert [u.request_id for u in store.usage("acme", limit=2)] == ["r4", "r3"]
    assert store.usage("acme")[0].created_at == start + timedelta(seconds=4)
    assert store.usage("nobody") == []
    assert store.usage("acme", limit=0) == []


def test_ping_and_database_errors_are_store_errors(store: Store, raw) -> None:
    assert store.ping() is True
    with raw.begin() as conn:
        conn.execute(text("DROP TABLE holds"))
    acme = store.create_account("acme", 10)
    with pytest.raises(StoreError):
        store.hold("r", acme.id, 1)
    assert _balance(store, "acme") == 10


def test_a_version_1_sqlite_database_keeps_its_holds_when_migrated(tmp_path):
    """Version 2 rebuilds `holds` without rowid; an open hold survives and settles."""
    path = tmp_path / "v1.db"
    engine = create_engine(f"sqlite:///{path}")
    v1 = MetaData()
    for table in metadata.tables.values():
        copy = table.to_metadata(v1)
        copy.dialect_options["sqlite"]._non_defaults.pop("with_rowid", None)
    v1.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO schema_migrations VALUES (1, 'v1', '2026-01-01')")
        conn.exec_driver_sql("INSERT INTO accounts (id, name, balance_micro, created_at) "
                             "VALUES (1, 'acme', 900, '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO holds (request_id, account_id, amount_micro, "
                             "created_at) VALUES ('req-open', 1, 100, '2026-01-01 00:00:00')")
    engine.dispose()

    store = open_store(f"sqlite:///{path}")
    try:
        sql = sqlite3.connect(path).execute(
            "SELECT sql FROM sqlite_master WHERE name = 'holds'").fetchone()[0]
        assert "WITHOUT ROWID" in sql
        usage = UsageRecord(request_id="req-open", account_id=1, key_id=None, endpoint="chat",
                            model="m", provider="p", status=200)
        assert store.settle("req-open", 60, usage) == 60
        assert store.get_account("acme").balance_micro == 940
    finally:
        store.close()


# the cheap credit check made before a large request body is read

def test_can_spend_needs_a_positive_balance(store: Store) -> None:
    empty = store.create_account("empty", 0)
    funded = store.create_account("funded", 1)
    assert not store.can_spend(empty.id)
    assert store.can_spend(funded.id)
    assert not store.can_spend(funded.id + 1000)   # no such account
    store.topup("empty", 5)
    assert store.can_spend(empty.id)
    assert store.hold("req-all", funded.id, 1)       # the whole balance held: nothing left
    assert not store.can_spend(funded.id)
