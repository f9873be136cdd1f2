"""The console's sessions and login throttle on both databases (SQLite, and PostgreSQL when
TOKMODEL_TEST_POSTGRES_URL is set): what one worker writes, another worker's objects read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from runtime.console.audit import AuditLog
from runtime.console.sessions import ACCOUNT, OPERATOR, Sessions
from runtime.store import open_store
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
