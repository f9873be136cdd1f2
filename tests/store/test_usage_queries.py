"""Migration 7 and the usage queries against real databases (SQLite, and PostgreSQL when
TOKMODEL_TEST_POSTGRES_URL is set): keys that existed become management keys, pages stay
stable under inserts, totals and the daily series sum the whole filter, and pruning old rows
leaves balances, the ledger and the audit as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from runtime.store import Store, UsageRecord, open_store
from runtime.store.engine import normalize_url
from runtime.store.usage_queries import UsageFilter, decode_cursor, encode_cursor
from tests.store.schema_v3 import create_v3
from tests.store.test_store import db_url, raw, store  # noqa: F401 - shared fixtures


def charge(db: Store, account: str, rid: str, cost: int, key_id: str | None = None,
           model: str = "openai/gpt-4o-mini", **details) -> None:
    acct = db.get_account(account)
    assert db.hold(rid, acct.id, cost)
    db.settle(rid, cost, UsageRecord(rid, acct.id, key_id, "chat", model, "openai", 200,
                                        prompt_tokens=10, completion_tokens=5,
                                        details=details))


def test_keys_that_existed_before_migration_7_become_management_keys(db_url, raw):  # noqa: F811
    if db_url.startswith("sqlite"):
        Path(normalize_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    create_v3(raw)
    with raw.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, name, balance_micro, created_at) "
                          "VALUES (1, 'acme', 5, '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO api_keys (id, account_id, name, secret_hash, "
                          "display_prefix, created_at) VALUES ('key_old', 1, 'old', "
                          "'h', 'tm-x', '2026-01-01 00:00:00')"))
    migrated = open_store(db_url)
    try:
        assert migrated.get_key("key_old").manage is True
        fresh, _ = migrated.create_key("acme", "batch-job")
        assert migrated.get_key(fresh.id).manage is False
        assert migrated.get_account("acme").disabled_at is None
        indexes = {ix["name"] for ix in inspect(raw).get_indexes("usage_log")}
        assert {"ix_usage_log_account_id_id", "ix_usage_log_key_id_id",
                "ix_usage_log_created_at"} <= indexes
        assert migrated.get_key("key_old").version == 0
        assert migrated.set_key_manage("key_old", False)
        assert migrated.get_key("key_old").manage is False
        # migration 13's trigger: a change a request is admitted on bumps the key's version
        assert migrated.get_key("key_old").version == 1
    finally:
        migrated.close()


def test_a_disabled_accounts_keys_say_so_when_they_authenticate(store):  # noqa: F811
    store.create_account("acme", 10)
    _, secret = store.create_key("acme", "k", manage=True)
    assert store.authenticate(secret).account_disabled is False
    assert store.set_account_disabled("acme", True).disabled_at is not None
    key = store.authenticate(secret)
    assert key.account_disabled is True and key.manage is True
    assert store.set_account_disabled("acme", False).disabled_at is None
    assert store.authenticate(secret).account_disabled is False


def test_pages_walk_down_without_repeats_while_rows_are_added(store):  # noqa: F811
    store.create_account("acme", 10**12)
    store.create_account("other", 10**12)
    for i in range(7):
        charge(store, "acme", f"a{i}", 100 + i)
    charge(store, "other", "o0", 1)
    where = UsageFilter(account_id=store.get_account("acme").id)
    rows, cursor = store.usage_page(where, 3)
    charge(store, "acme", "late", 5)  # arrives between pages
    seen = [r.request_id for r in rows]
    while cursor:
        rows, cursor = store.usage_page(where, 3, cursor)
        seen += [r.request_id for r in rows]
    assert seen == [f"a{i}" for i in reversed(range(7))]
    assert decode_cursor(encode_cursor(12345)) == 12345
    for bad in ("", "abc", encode_cursor(1)[:-1] + "!", "dTE6LTE"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_totals_and_the_daily_series_cover_the_whole_filter(store):  # noqa: F811
    store.create_account("acme", 10**12)
    charge(store, "acme", "r1", 1_000_000_001)
    charge(store, "acme", "r2", 2, images=2)
    charge(store, "acme", "r3", 3, images=2)
    charge(store, "acme", "r4", 4, model="anthropic/claude-haiku-4-5", audio_seconds=1.5)
    where = UsageFilter(account_id=store.get_account("acme").id)
    totals = store.usage_totals(where)
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (4, 40, 20)
    assert totals.cost_nano == 1_000_000_010
    assert totals.units == {"audio_seconds": 1.5, "images": 4}
    only = store.usage_totals(UsageFilter(account_id=where.account_id,
                                          model="anthropic/claude-haiku-4-5"))
    assert (only.requests, only.cost_nano) == (1, 4)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert store.usage_daily(where) == [
        {"day": today, "model": "anthropic/claude-haiku-4-5", "requests": 1, "cost_nano": 4},
        {"day": today, "model": "openai/gpt-4o-mini", "requests": 3,
         "cost_nano": 1_000_000_006}]
    future = UsageFilter(account_id=where.account_id,
                         since=datetime.now(UTC) + timedelta(minutes=1))
    assert store.usage_totals(future).requests == 0


def test_pruning_old_rows_keeps_balances_ledger_and_audit(store):  # noqa: F811
    store.create_account("acme", 10**12)
    for i in range(5):
        charge(store, "acme", f"old{i}", 10)
    balance = store.get_account("acme").balance_nano
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert store.prune_usage(cutoff, batch=2) == 2
    assert store.audit("acme")["ok"]  # part-way through is consistent too
    assert store.prune_usage(cutoff, batch=2) == 2
    assert store.prune_usage(cutoff, batch=2) == 1
    assert store.prune_usage(cutoff, batch=2) == 0
    assert store.usage("acme") == []
    assert store.get_account("acme").balance_nano == balance
    charge(store, "acme", "new", 10)
    report = store.audit("acme")
    assert report["ok"], report["problems"]
    # an older cutoff never moves the watermark back
    assert store.prune_usage(cutoff - timedelta(days=1)) == 0
    assert store.audit("acme")["ok"]
