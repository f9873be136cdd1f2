"""The store against real databases: embedded SQLite, and PostgreSQL when
TOKMODEL_TEST_POSTGRES_URL names a server (each test gets its own schema)."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text, update

from runtime.store import (
    Account,
    AccountExists,
    AccountNotFound,
    KeyRecord,
    Store,
    StoreError,
    UsageRecord,
    ledger,
    open_store,
)
from runtime.store.engine import normalize_url
from runtime.store.migrations import MIGRATIONS
from runtime.store.schema import (
    accounts,
    holds,
    ledger_entries,
    metadata,
    schema_migrations,
    usage_log,
)
from tests.store.schema_v3 import create_v3, metadata_v3

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
    return account.balance_nano


def _debt(store: Store, name: str) -> int:
    return store.get_account(name).debt_nano


def _kinds(store: Store, account_id: int) -> list[str]:
    with store._engine.connect() as conn:
        return list(conn.execute(select(ledger_entries.c.kind)
                                 .where(ledger_entries.c.account_id == account_id)).scalars())


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
    assert acme.balance_nano == 1_000_000
    assert acme.created_at.tzinfo is not None
    assert store.get_account("acme") == acme
    assert store.get_account_by_id(acme.id) == acme
    assert store.get_account("nobody") is None
    assert store.get_account_by_id(acme.id + 1000) is None

    with pytest.raises(AccountExists):
        store.create_account("acme")
    assert store.topup("acme", 250).balance_nano == 1_000_250
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


def test_a_hold_on_a_cached_key_is_refused_once_the_key_changed(store: Store,
                                                                 db_url: str) -> None:
    """A process may authenticate a request from its cache of keys; the hold then checks
    that the key is as it was read. Any change a request is admitted on, made by another
    process, refuses that hold without touching the balance, and a fresh read sees it."""
    acme = store.create_account("acme", 1_000)
    record, secret = store.create_key("acme", "ci")
    assert store.authenticate(secret, cached=True) == record   # nothing cached yet: read
    assert store.authenticate(secret, cached=True) == replace(record, cached=True)
    held = 0
    with open_store(db_url) as elsewhere:
        changes = [
            lambda: elsewhere.update_key_limits(record.id, {"models": "openai/*"}),
            lambda: elsewhere.update_key_limits(record.id, {"rpm": 5, "tpm": 100}),
            lambda: elsewhere.update_key_limits(record.id, {"spend_limit_nano": 500}),
            lambda: elsewhere.update_key_limits(
                record.id, {"expires_at": datetime.now(UTC) + timedelta(days=1)}),
            lambda: elsewhere.rename_key(record.id, "renamed"),
            lambda: elsewhere.set_key_manage(record.id, True),
            lambda: elsewhere.set_account_disabled("acme", True),
        ]
        for n, change in enumerate(changes):
            cached = store.authenticate(secret, cached=True)
            assert cached.cached
            change()
            assert store.authenticate(secret, cached=True) == cached   # it cannot know
            assert not store.hold(f"stale-{n}", acme.id, 10, key_check=(cached.id,
                                                                       cached.version))
            assert _balance(store, "acme") == 1_000 - held
            fresh = store.authenticate(secret)
            assert not fresh.cached and fresh != replace(cached, cached=False)
            if fresh.account_disabled:
                elsewhere.set_account_disabled("acme", False)
                fresh = store.authenticate(secret)
            assert store.hold(f"fresh-{n}", acme.id, 10, key_check=(fresh.id, fresh.version))
            held += 10
            assert _balance(store, "acme") == 1_000 - held

        # what requests move on the key (its spend) leaves it as it was read
        cached = store.authenticate(secret, cached=True)
        assert store.reserve_key_spend(record.id, 10) is None
        assert store.hold("spending", acme.id, 10, record.id, (cached.id, cached.version))
        store.settle("spending", 7, UsageRecord("spending", acme.id, record.id, "chat",
                                                "openai/gpt-4o-mini", "openai", 200),
                     record.id)
        assert store.authenticate(secret).version == cached.version
        assert store.hold("again", acme.id, 10, key_check=(cached.id, cached.version))

        assert elsewhere.revoke_key(record.id)
    assert not store.hold("revoked", acme.id, 10, key_check=(cached.id, cached.version))
    assert store.authenticate(secret) is None
    assert store.authenticate(secret, cached=True) is None   # forgotten with the fresh read


def test_the_core_path_hold_checks_the_key_as_the_fast_path_does(store: Store) -> None:
    """The Core hold (taken when the fast path's driver fails, or after a debt is paid)
    refuses a key that is not at the version read, revoked, or of a disabled account."""
    acme = store.create_account("acme", 1_000)
    record, _ = store.create_key("acme", "ci")
    now = datetime.now(UTC)
    with store._engine.begin() as conn:
        assert not ledger.hold(conn, "stale", acme.id, 10, now, None,
                               (record.id, record.version + 1))
        assert not ledger.hold(conn, "other-key", acme.id, 10, now, None,
                               ("key_000000000000", record.version))
        assert ledger.hold(conn, "current", acme.id, 10, now, None,
                           (record.id, record.version))
    store.set_account_disabled("acme", True)
    with store._engine.begin() as conn:
        assert not ledger.hold(conn, "disabled", acme.id, 10, now, None,
                               (record.id, record.version))
        assert ledger.hold(conn, "unchecked", acme.id, 10, now)   # no key to check
    assert _balance(store, "acme") == 1_000 - 20


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
    assert (row.cost_nano, row.latency_ms, row.status) == (123_456, 87, 200)
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
    # A request id holds once: held again by mistake after its settle, it is refused.
    with pytest.raises(StoreError):
        store.hold("req", acme.id, 1_000)
    assert _balance(store, "acme") == 8_500
    assert len(store.usage("acme")) == 1
    assert store.audit("acme")["ok"]


def test_a_cost_beyond_hold_and_balance_is_a_debt_until_a_top_up_pays_it(store: Store) -> None:
    acme = store.create_account("acme", 1_000)
    assert store.hold("a", acme.id, 100)
    assert store.settle("a", 150, _usage("a", acme)) == 150  # overrun covered by the balance
    assert _balance(store, "acme") == 850
    assert store.hold("b", acme.id, 600)
    assert _balance(store, "acme") == 250
    # 5000 charged: 600 held, 250 left in the balance, the other 4150 is owed
    assert store.settle("b", 5_000, _usage("b", acme)) == 5_000
    after = store.get_account("acme")
    assert (after.balance_nano, after.debt_nano) == (0, 4_150)
    assert [u.cost_nano for u in store.usage("acme")] == [5_000, 150]
    report = store.audit("acme")
    assert report["ok"] and report["debt_nano"] == 4_150, report
    assert store.hold("c", acme.id, 0) is False  # an account in debt is refused outright
    assert (store.topup("acme", 4_000).balance_nano, _debt(store, "acme")) == (0, 150)
    assert store.hold("c", acme.id, 1) is False
    topped = store.topup("acme", 1_000)  # pays the last 150 first
    assert (topped.balance_nano, topped.debt_nano) == (850, 0)
    assert store.hold("c", acme.id, 850)
    assert store.settle("c", 850, _usage("c", acme)) == 850
    report = store.audit("acme")
    assert report["ok"] and (report["balance_nano"], report["debt_nano"]) == (0, 0), report
    assert _kinds(store, acme.id).count("debt_payment") == 2


def test_refunds_that_came_back_pay_a_debt_before_the_next_hold(store: Store) -> None:
    acme = store.create_account("acme", 1_000)
    assert store.hold("x", acme.id, 500) and store.hold("y", acme.id, 400)
    assert store.settle("x", 700, _usage("x", acme)) == 700  # 500 + the last 100 + 100 owed
    assert (_balance(store, "acme"), _debt(store, "acme")) == (0, 100)
    assert store.settle("y", 0, _usage("y", acme, status=502)) == 0  # 400 given back
    assert (_balance(store, "acme"), _debt(store, "acme")) == (400, 100)
    assert store.hold("z", acme.id, 300)  # the debt is paid from the refund first
    assert (_balance(store, "acme"), _debt(store, "acme")) == (0, 0)
    assert store.audit("acme")["ok"]


def test_every_movement_is_an_entry_and_the_ledger_is_append_only(store: Store, raw) -> None:
    acme = store.create_account("acme", 1_000)
    assert store.hold("r1", acme.id, 400)
    assert store.settle("r1", 250, _usage("r1", acme)) == 250
    assert store.hold("r2", acme.id, 100)
    assert store.release("r2") == 100
    store.topup("acme", 50)
    store.adjust("acme", -20, "goodwill reversed")
    with raw.connect() as conn:
        rows = conn.execute(select(ledger_entries.c.kind, ledger_entries.c.amount_nano,
                                   ledger_entries.c.reference, ledger_entries.c.note)
                            .where(ledger_entries.c.account_id == acme.id)).all()
    moves = sorted((kind, amount) for kind, amount, _, _ in rows)
    assert moves == sorted([("topup", 1_000), ("hold", -400), ("settle", 150),
                            ("hold", -100), ("release", 100), ("topup", 50),
                            ("adjustment", -20)])
    assert sum(amount for _, amount in moves) == _balance(store, "acme") == 780
    assert ("adjustment", "goodwill reversed") in {(k, n) for k, _, _, n in rows}
    for statement in (update(ledger_entries).values(amount_nano=0),
                      ledger_entries.delete()):
        with pytest.raises(Exception, match="append-only"), raw.begin() as conn:
            conn.execute(statement)
    assert store.audit("acme")["ok"]


def test_adjustments_either_sign_never_below_zero(store: Store) -> None:
    store.create_account("acme", 100)
    assert store.adjust("acme", 25, "credit note").balance_nano == 125
    assert store.adjust("acme", -125, "correction").balance_nano == 0
    with pytest.raises(ValueError):
        store.adjust("acme", -1, "too much")
    with pytest.raises(ValueError):
        store.adjust("acme", 0, "nothing")
    with pytest.raises(AccountNotFound):
        store.adjust("nobody", 5, "x")
    assert _balance(store, "acme") == 0 and store.audit("acme")["ok"]


def test_audit_names_each_discrepancy(store: Store, raw) -> None:
    acme = store.create_account("acme", 10_000)
    for rid in ("ok-1", "ok-2"):
        assert store.hold(rid, acme.id, 1_000)
        store.settle(rid, 300, _usage(rid, acme))
    assert store.hold("open", acme.id, 1_000)
    assert store.audit("acme")["ok"]
    with raw.begin() as conn:  # money changed behind the ledger's back
        conn.execute(update(accounts).where(accounts.c.id == acme.id)
                     .values(balance_nano=accounts.c.balance_nano + 7))
        conn.execute(update(usage_log).where(usage_log.c.request_id == "ok-2")
                     .values(cost_nano=299))
        conn.execute(holds.delete().where(holds.c.request_id == "open"))
    report = store.audit("acme")
    assert not report["ok"]
    text_ = "\n".join(report["problems"])
    assert "balance is 8407" in text_ and "sums to 8400" in text_
    assert "ok-2" in text_ and "ok-1" not in text_
    assert "open" in text_
    assert len(report["problems"]) == 3
    with pytest.raises(AccountNotFound):
        store.audit("nobody")


def test_settle_with_zero_cost_releases_the_hold(store: Store) -> None:
    acme = store.create_account("acme", 700)
    assert store.hold("r", acme.id, 700)
    assert _balance(store, "acme") == 0
    assert store.settle("r", 0, _usage("r", acme, status=502)) == 0
    assert _balance(store, "acme") == 700
    [row] = store.usage("acme")
    assert (row.cost_nano, row.status) == (0, 502)


def test_a_cost_equal_to_the_hold_takes_it_whole(store: Store) -> None:
    acme = store.create_account("acme", 1_000)
    assert store.hold("r", acme.id, 400)
    assert store.settle("r", 400, _usage("r", acme)) == 400
    assert _balance(store, "acme") == 600
    [row] = store.usage("acme")
    assert row.cost_nano == 400
    assert store.audit("acme")["ok"]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_covered_settlement_on_postgresql_is_one_statement(store: Store, monkeypatch) -> None:
    """A settlement whose hold covers its cost is written by one statement
    (fastpath._SETTLE_IN_ONE) without ledger.settle_with, which the others still need; both
    write the same money."""
    from runtime.store import fastpath

    acme = store.create_account("acme", 10_000)
    for rid in ("covered", "beyond"):
        assert store.hold(rid, acme.id, 1_000)
    general = fastpath.settle_with
    calls: list[str] = []

    def counted(db, request_id, cost, default_account):
        calls.append(request_id)
        return general(db, request_id, cost, default_account)

    monkeypatch.setattr(fastpath, "settle_with", counted)
    now = datetime.now(UTC)
    assert store._fast.settle("covered", 700, _usage("covered", acme), now) == 700
    assert store._fast.settle("beyond", 1_300, _usage("beyond", acme), now) == 1_300
    assert store._fast.settle("covered", 700, _usage("covered", acme), now) == 0  # settled
    assert calls == ["beyond", "covered"]
    assert _balance(store, "acme") == 10_000 - 700 - 1_300
    assert sorted(r.cost_nano for r in store.usage("acme")) == [700, 1_300]
    assert store.audit("acme")["ok"]


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
    metadata_v3(holds_with_rowid=True).create_all(engine)
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
        assert store.settle("req-open", 60_000, usage) == 60_000
        assert store.get_account("acme").balance_nano == 940_000
        assert store.audit("acme")["ok"]
    finally:
        store.close()


def test_a_version_3_database_moves_to_nano_credits_and_a_ledger_unchanged(db_url, raw):
    """Migration 4 on real balances, open holds and usage rows: every amount is the same
    money in nano-credits, the ledger explains it, and the account carries on."""
    if db_url.startswith("sqlite"):
        Path(normalize_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    create_v3(raw)
    past = "2026-01-02 03:04:05"
    with raw.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, name, balance_micro, created_at) VALUES "
                          "(1, 'acme', 12500001, :t), (2, 'beta', 0, :t), (3, 'idle', 7, :t)"),
                     {"t": past})
        conn.execute(text("INSERT INTO holds (request_id, account_id, amount_micro, created_at) "
                          "VALUES ('req-open', 1, 4000, :t), ('req-beta', 2, 1, :t)"),
                     {"t": past})
        for rid, account, cost in (("req-1", 1, 1234), ("req-2", 1, 0), ("req-3", 2, 99)):
            conn.execute(text(
                "INSERT INTO usage_log (request_id, created_at, account_id, key_id, endpoint, "
                "model, provider, status, prompt_tokens, completion_tokens, cached_tokens, "
                "details, cost_micro, latency_ms) VALUES (:rid, :t, :a, NULL, 'chat', "
                "'openai/gpt-4o', 'openai', 200, 10, 5, 0, '{}', :cost, 12)"),
                {"rid": rid, "t": past, "a": account, "cost": cost})
    with open_store(db_url) as store:
        with raw.connect() as conn:
            versions = conn.execute(select(schema_migrations.c.version)).scalars().all()
        assert sorted(versions) == ALL_VERSIONS
        acme, beta, idle = (store.get_account(n) for n in ("acme", "beta", "idle"))
        assert (acme.balance_nano, acme.debt_nano) == (12_500_001_000, 0)
        assert (beta.balance_nano, idle.balance_nano) == (0, 7_000)
        assert sorted(u.cost_nano for u in store.usage("acme")) == [0, 1_234_000]
        assert [u.cost_nano for u in store.usage("beta")] == [99_000]
        for name in ("acme", "beta", "idle"):
            report = store.audit(name)
            assert report["ok"], report["problems"]
        assert store.audit("acme")["open_holds"] == 1
        # the open hold of before settles in nano-credits; new money moves as usual
        usage = _usage("req-open", acme)
        assert store.settle("req-open", 1_500_000, usage) == 1_500_000
        assert _balance(store, "acme") == 12_500_001_000 + 4_000_000 - 1_500_000
        assert store.hold("req-new", acme.id, 80) and store.settle(
            "req-new", 80, _usage("req-new", acme)) == 80
        store.topup("beta", 5)
        for name in ("acme", "beta", "idle"):
            assert store.audit(name)["ok"]
    with raw.connect() as conn:  # the same shape as a database created at version 4
        migrated = inspect(conn)
        for table in metadata.sorted_tables:
            assert ({c["name"] for c in migrated.get_columns(table.name)}
                    == {c.name for c in table.columns}), table.name
            assert ({i["name"] for i in migrated.get_indexes(table.name) if not i["unique"]}
                    == {i.name for i in table.indexes}), table.name
        assert migrated.get_unique_constraints("usage_log") == []
        assert not any(i["unique"] for i in migrated.get_indexes("usage_log"))


def test_migration_4_refuses_amounts_nano_credits_cannot_hold(tmp_path):
    path = tmp_path / "big.db"
    engine = create_engine(f"sqlite:///{path}")
    create_v3(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, name, balance_micro, created_at) "
                          "VALUES (1, 'whale', :b, '2026-01-01 00:00:00')"), {"b": 2**62})
    engine.dispose()
    with pytest.raises(StoreError, match="balance_micro"):
        open_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # nothing changed: still version 3, in micro
        assert conn.execute("SELECT balance_micro FROM accounts").fetchone()[0] == 2**62
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 3


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


def test_the_hot_path_runs_on_the_driver_on_both_databases(store: Store) -> None:
    """Authenticate, reserve, hold and settle take the fast path (raw driver statements,
    runtime/store/fastpath.py) on SQLite and PostgreSQL alike; a statement the driver
    rejects would silently fall back to the slower Core path and show only in `make bench`."""
    from runtime.limits import spend as spendlib
    from runtime.store import keys as keylib

    account = store.create_account("fast", 10_000)
    record, secret = store.create_key("fast", "k", {"spend_limit_nano": 5_000})
    fast = store._fast
    assert fast.authenticate(keylib.hash_secret(secret))[0] == record.id
    params = {"amount": 3_000, "key": record.id, **spendlib.periods(store.clock())}
    assert fast.update_one(spendlib.RESERVE, params) is True
    assert fast.update_one(spendlib.RESERVE, params) is False  # 6,000 would pass 5,000
    now = datetime.now(UTC)
    assert fast.hold("rq-fast", account.id, 3_000, now, record.id) is True
    assert fast.hold("rq-poor", account.id, 20_000, now, record.id) is False
    usage = _usage("rq-fast", account, record.id)
    assert fast.settle("rq-fast", 1_000, usage, now, lambda db, run: spendlib.KeySpendStatements(
        db, run, record.id, now)) == 1_000
    assert store.get_account("fast").balance_nano == 9_000
    assert store.audit("fast")["ok"]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgresql_settlements_commit_without_waiting_for_the_wal_flush(store: Store) -> None:
    """On PostgreSQL a settlement commits with synchronous_commit off, as a hold and a key's
    spend reservation do: one that waited for the flush kept its account's row lock
    meanwhile, and the account's next hold waited with it (fastpath._PgConnections). Its money is
    written all the same."""
    account = store.create_account("relaxed", 10_000)
    now = datetime.now(UTC)
    fast = store._fast
    assert fast.hold("rq-relaxed", account.id, 3_000, now) is True
    seen: list[str] = []

    def looking(db, run):
        seen.append(run("SELECT current_setting('synchronous_commit')", {}).fetchone()[0])
        return db

    assert fast.settle("rq-relaxed", 1_000, _usage("rq-relaxed", account, None), now,
                       looking) == 1_000
    assert seen == ["off"]
    # a key's spend reservation, the request's other write before its answer, too
    assert fast.update_one("UPDATE accounts SET name = name WHERE id = :account AND "
                           "current_setting('synchronous_commit') = 'off'",
                           {"account": account.id}) is True
    assert store.get_account("relaxed").balance_nano == 9_000
    assert store.audit("relaxed")["ok"]


def test_a_fast_path_write_the_database_refuses_leaves_nothing_behind(store: Store) -> None:
    """A hold whose request id is taken fails inside its transaction (on PostgreSQL, in the
    middle of a pipeline): the fast path answers None (the Store then takes the Core path),
    nothing of it is written, and the connection it used serves the next write."""
    account = store.create_account("dup", 10_000)
    now = datetime.now(UTC)
    fast = store._fast
    assert fast.hold("rq-dup", account.id, 1_000, now) is True
    assert fast.hold("rq-dup", account.id, 2_000, now) is None
    for n in range(3):  # whichever pooled connection comes next
        assert fast.hold(f"rq-next-{n}", account.id, 1_000, now) is True
    assert store.get_account("dup").balance_nano == 6_000
    assert store.audit("dup")["ok"]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgresql_fast_path_keeps_a_bounded_set_of_connections(db_url: str) -> None:
    """Forty requests authenticating and holding at once all succeed, on no more server
    connections than the fast path's limits (beyond them a request waits for one), and
    closing the store closes them."""
    import threading
    import time

    import psycopg

    from runtime.store import fastpath

    name = "tm_crowd_" + uuid.uuid4().hex[:8]  # this store's connections, and no others
    store = open_store(f"{db_url}&application_name={name}")
    account = store.create_account("crowd", 1_000_000)
    _record, secret = store.create_key("crowd", "k")
    admin_url = os.environ[PG_ENV].replace("postgresql+psycopg://", "postgresql://", 1)
    mine = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    start = threading.Barrier(40)
    failures: list[str] = []

    def request(n: int) -> None:
        start.wait()
        if store.authenticate(secret) is None:
            failures.append(f"auth {n}")
        if not store.hold(f"rq-crowd-{n}", account.id, 1_000):
            failures.append(f"hold {n}")

    with psycopg.connect(admin_url, autocommit=True) as admin:
        try:
            threads = [threading.Thread(target=request, args=(n,)) for n in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert failures == []
            opened = admin.execute(mine, (name,)).fetchone()[0]
            pool = store._engine.pool
            assert 0 < opened <= (fastpath.PG_CONNECTIONS + fastpath.PG_RELAXED_CONNECTIONS
                                  + pool.size() + pool._max_overflow)
            assert store.get_account("crowd").balance_nano == 1_000_000 - 40 * 1_000
        finally:
            store.close()
        deadline = time.monotonic() + 10  # a backend leaves the view once it has exited
        while admin.execute(mine, (name,)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admin.execute(mine, (name,)).fetchone()[0] == 0
