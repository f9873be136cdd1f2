"""The console's sessions, login throttle and audit-log retention on both databases (SQLite,
and PostgreSQL when TOKMODEL_TEST_POSTGRES_URL is set): what one worker writes, another
worker's objects read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from runtime.admin.retention import RetentionPruner, RetentionSettings
from runtime.console.audit import AuditLog
from runtime.console.sessions import ACCOUNT, OPERATOR, Sessions
from runtime.store import UsageRecord, open_store
from runtime.store.schema import audit_log, console_sessions
from tests.store.test_store import db_url  # noqa: F401 - the fixture: sqlite and postgres


def test_sessions_end_on_logout_revocation_expiry_and_token_change(db_url):  # noqa: F811
    with open_store(db_url) as store:
        store.create_account("acme")
        key, _ = store.create_key("acme", "k")
        worker_a = Sessions(store.engine, 3600, "token-one")
        worker_b = Sessions(store.engine, 3600, "token-one")
        account_sid = worker_a.open(ACCOUNT, key.account_id, key.id)
        session = worker_b.read(ACCOUNT, account_sid)
        assert session is not None and session.key_id == key.id
        assert worker_b.read(OPERATOR, account_sid) is None  # kinds do not mix
        worker_a.put_flash(session, "shown once")
        assert worker_b.take_flash(session) == "shown once"
        assert worker_a.take_flash(session) is None
        store.revoke_key(key.id)
        assert worker_b.read(ACCOUNT, account_sid) is None

        operator_sid = worker_a.open(OPERATOR)
        assert worker_b.read(OPERATOR, operator_sid) is not None
        rotated = Sessions(store.engine, 3600, "token-two")
        assert rotated.read(OPERATOR, operator_sid) is None
        assert worker_b.end(worker_b.read(OPERATOR, operator_sid)) == 1
        assert worker_a.read(OPERATOR, operator_sid) is None

        expiring = worker_a.open(OPERATOR)
        with store.engine.begin() as conn:
            conn.execute(update(console_sessions).values(
                expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert worker_b.read(OPERATOR, expiring) is None


def test_throttle_counts_failures_in_the_window_across_workers(db_url):  # noqa: F811
    with open_store(db_url) as store:
        worker_a = AuditLog(store.engine, 3, 300)
        worker_b = AuditLog(store.engine, 3, 300)
        for worker in (worker_a, worker_b, worker_a):
            assert worker_b.retry_at("192.0.2.1", "tm-abcd…") is None
            worker.record("login_failed", "key:?", "192.0.2.1", key_prefix="tm-abcd…")
        until = worker_b.retry_at("192.0.2.1")
        assert until is not None
        assert 290 < (until - datetime.now(UTC)).total_seconds() <= 300
        assert worker_a.retry_at("192.0.2.9", "tm-abcd…") is not None  # same prefix
        assert worker_a.retry_at("192.0.2.9", "tm-wxyz…") is None
        worker_a.record("login", "key:k1", "192.0.2.9", key_prefix="tm-wxyz…")
        assert worker_a.retry_at("192.0.2.9", "tm-wxyz…") is None  # successes do not count
        with store.engine.begin() as conn:  # the failures are 6 minutes old now
            conn.execute(update(audit_log).values(
                created_at=datetime.now(UTC) - timedelta(seconds=360)))
        assert worker_b.retry_at("192.0.2.1", "tm-abcd…") is None


def test_audit_retention_prunes_old_rows_only_and_leaves_money_alone(db_url):  # noqa: F811
    with open_store(db_url) as store:
        store.create_account("acme", 7_000_000_000)
        key, _ = store.create_key("acme", "k")
        assert store.hold("req-1", key.account_id, 2_000_000)
        store.settle("req-1", 1_500_000, UsageRecord(
            request_id="req-1", account_id=key.account_id, key_id=key.id, endpoint="chat",
            model="openai/gpt-4o-mini", provider="openai", status=200))
        balance = store.get_account("acme").balance_nano
        audit = AuditLog(store.engine, 10, 300)
        for n in range(2500):  # several batches
            audit.record("login_failed", "key:?", f"192.0.2.{n % 250}")
        audit.record("topup", "operator", "192.0.2.1", account_id=key.account_id)
        with store.engine.begin() as conn:  # all of these are 400 days old now
            conn.execute(update(audit_log).values(
                created_at=datetime.now(UTC) - timedelta(days=400)))
        audit.record("login", f"key:{key.id}", "192.0.2.9", key_id=key.id)
        audit.record("key_revoke", "operator", "192.0.2.9", key_id=key.id)
        with store.engine.begin() as conn:  # 300 days old: inside the default 365
            conn.execute(update(audit_log).where(audit_log.c.action == "key_revoke").values(
                created_at=datetime.now(UTC) - timedelta(days=300)))

        pruner = RetentionPruner(store, RetentionSettings.from_env({}))
        assert pruner.settings.audit_days == 365 and pruner.settings.days is None
        assert pruner.run_once() == 2501
        with store.engine.connect() as conn:
            kept = conn.execute(select(audit_log.c.action).order_by(audit_log.c.id)).scalars()
            assert list(kept) == ["login", "key_revoke"]
        assert pruner.run_once() == 0
        # balances, the ledger and usage rows are not the audit log's retention's business
        assert store.get_account("acme").balance_nano == balance
        assert [u.request_id for u in store.usage("acme")] == ["req-1"]
        assert store.audit("acme")["ok"]

        forever = RetentionPruner(store, RetentionSettings.from_env(
            {"TOKMODEL_AUDIT_RETENTION_DAYS": "0"}))
        assert forever.settings.audit_days is None and forever.prune_audit() == 0


@pytest.mark.parametrize("value", ["-1", "0.5", "soon"])
def test_bad_audit_retention_settings_are_named(value):
    with pytest.raises(ValueError, match="TOKMODEL_AUDIT_RETENTION_DAYS"):
        RetentionSettings.from_env({"TOKMODEL_AUDIT_RETENTION_DAYS": value})
