"""A key's spend limits and rates in the store, on SQLite and PostgreSQL, with the clock
moved by the test: UTC days and months, the sliding window, migration 6 on an older
database, and a key without limits reading as one."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text

from runtime.limits import rates
from runtime.limits.admission import RateLimited, check_rates
from runtime.store import UsageRecord, open_store
from runtime.store import keys as keylib
from tests.store.schema_v3 import metadata_v3
from tests.store.test_holds import db_url, raw  # noqa: F401  (fixtures)

CREDIT = 1_000_000_000
REDIS_ENV = "TOKMODEL_TEST_REDIS_URL"


@pytest.fixture
def store(db_url):  # noqa: F811
    with open_store(db_url) as store:
        store.create_account("acme", 100 * CREDIT)
        yield store


def _spend(store, key_id: str, request_id: str, hold: int, cost: int) -> str | None:
    """One request of the key: reserve its spend and hold, then settle at `cost`; the limit
    refused, or None."""
    refused = store.reserve_key_spend(key_id, hold)
    if refused:
        return refused
    account = store.get_account("acme")
    assert store.hold(request_id, account.id, hold, key_id)
    usage = UsageRecord(request_id, account.id, key_id, "chat", "m", "p", 200)
    store.settle(request_id, cost, usage, key_id)
    return None


def test_daily_and_monthly_limits_follow_utc_days_and_months(store):
    key, _ = store.create_key("acme", "k", {"daily_limit_nano": 2 * CREDIT,
                                            "monthly_limit_nano": 5 * CREDIT})
    yesterday = datetime(2026, 3, 14, 23, 30, tzinfo=UTC)
    store.clock = lambda: yesterday
    assert _spend(store, key.id, "r1", 2 * CREDIT, 2 * CREDIT) is None
    assert _spend(store, key.id, "r2", 1, 1) == "daily limit"
    today = yesterday + timedelta(hours=1)
    store.clock = lambda: today
    spend = store.key_spend(key.id)
    # yesterday's spend counts for the month, not for the day
    assert (spend.total, spend.today, spend.month) == (2 * CREDIT, 0, 2 * CREDIT)
    assert _spend(store, key.id, "r3", 2 * CREDIT, 2 * CREDIT) is None
    store.clock = lambda: today + timedelta(days=1)
    assert _spend(store, key.id, "r4", 2 * CREDIT, CREDIT) == "monthly limit"
    assert _spend(store, key.id, "r5", CREDIT, CREDIT) is None
    store.clock = lambda: datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
    spend = store.key_spend(key.id)
    assert (spend.total, spend.today, spend.month, spend.held) == (5 * CREDIT, 0, 0, 0)
    assert _spend(store, key.id, "r6", 2 * CREDIT, 0) is None


def test_the_hold_counts_until_settled_and_a_refused_hold_gives_the_reservation_back(store):
    key, _ = store.create_key("acme", "k", {"spend_limit_nano": 3 * CREDIT})
    assert store.reserve_key_spend(key.id, 2 * CREDIT) is None
    assert store.reserve_key_spend(key.id, 2 * CREDIT) == "spend limit"
    store.unreserve_key_spend(key.id, 2 * CREDIT)
    assert store.key_spend(key.id).held == 0
    # settled below its hold: only the cost stays spent; a second settle changes nothing
    assert _spend(store, key.id, "r1", 3 * CREDIT, CREDIT) is None
    usage = UsageRecord("r1", store.get_account("acme").id, key.id, "chat", "m", "p", 200)
    assert store.settle("r1", CREDIT, usage, key.id) == 0
    spend = store.key_spend(key.id)
    assert (spend.total, spend.held) == (CREDIT, 0)
    assert store.audit("acme")["ok"]


@pytest.fixture(params=["database", "redis"])
def counter(request, store):
    """The rate counters, in the store's database or in Redis (TOKMODEL_TEST_REDIS_URL)."""
    if request.param == "database":
        yield rates.DatabaseRates(store.write)
        return
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} not set: the Redis variant needs a server")
    yield rates.RedisRates(url)


def test_rates_slide_over_the_minute_and_recover(store, counter):
    key, _ = store.create_key("acme", "k", {"rpm": 2})
    limits = store.get_key(key.id).limits
    start = 1_800_000_000.0 + 30   # half way through a minute
    check_rates(counter, key.id, limits, 0, start)
    check_rates(counter, key.id, limits, 0, start + 1)
    with pytest.raises(RateLimited) as err:
        check_rates(counter, key.id, limits, 0, start + 2)
    wait = int(err.value.headers["Retry-After"])
    assert 30 < wait <= 90
    # still refused a little before, admitted once the Retry-After has passed
    with pytest.raises(RateLimited):
        check_rates(counter, key.id, limits, 0, start + 2 + wait - 5)
    admitted = check_rates(counter, key.id, limits, 0, start + 2 + wait)
    assert admitted.requests.limit == 2


def test_token_estimates_are_corrected_to_what_was_used(store, counter):
    key, _ = store.create_key("acme", "k", {"tpm": 1000})
    limits = store.get_key(key.id).limits
    now = 1_800_000_000.0
    first = check_rates(counter, key.id, limits, 900, now)
    assert first.tokens.remaining == 100
    with pytest.raises(RateLimited):
        check_rates(counter, key.id, limits, 200, now + 1)
    counter.correct(key.id, first.minute, 50 - 900)   # it used 50
    assert check_rates(counter, key.id, limits, 900, now + 2).tokens.remaining == 50


def test_a_request_admitted_again_is_taken_back_once(store, counter):
    """A request whose key changed before its hold is admitted again with the fresh key
    (runtime/pipeline/run.py): its first count is taken back, so it counts once."""
    key, _ = store.create_key("acme", "k", {"rpm": 2})
    limits = store.get_key(key.id).limits
    now = 1_800_000_000.0
    first = check_rates(counter, key.id, limits, 0, now)
    counter.correct(key.id, first.minute, 0, requests=-1)
    assert check_rates(counter, key.id, limits, 0, now + 1).requests.remaining == 1
    assert check_rates(counter, key.id, limits, 0, now + 2).requests.remaining == 0
    with pytest.raises(RateLimited):
        check_rates(counter, key.id, limits, 0, now + 3)


def test_a_key_without_limits_reads_as_none_and_limits_can_be_cleared(store):
    key, secret = store.create_key("acme", "plain")
    assert store.authenticate(secret).limits is None
    store.update_key_limits(key.id, {"models": "openai/*", "rpm": 5})
    limits = store.authenticate(secret).limits
    assert limits.models == ("openai/*",) and limits.rpm == 5
    assert limits.allows("openai/gpt-4o") and not limits.allows("anthropic/claude-haiku-4-5")
    store.update_key_limits(key.id, {"models": None, "rpm": None})
    assert store.authenticate(secret).limits is None
    with pytest.raises(ValueError):
        store.update_key_limits(key.id, {"rpm": 0})
    with pytest.raises(ValueError):
        store.update_key_limits(key.id, {"secret_hash": "x"})


def test_migration_6_gives_existing_keys_no_limits(db_url, raw):  # noqa: F811
    old = metadata_v3()
    then = datetime.now(UTC) - timedelta(days=1)
    secret = keylib.new_secret()
    with raw.begin() as conn:
        old.create_all(conn)
        conn.execute(insert(old.tables["schema_migrations"]),
                     [{"version": v, "name": f"v{v}", "applied_at": then} for v in (1, 2, 3)])
        conn.execute(insert(old.tables["accounts"]),
                     {"id": 1, "name": "acme", "balance_micro": 900, "created_at": then})
        conn.execute(insert(old.tables["api_keys"]), {
            "id": "key_000000000001", "account_id": 1, "name": "old",
            "secret_hash": keylib.hash_secret(secret), "display_prefix": "tm-…",
            "created_at": then})
    with open_store(db_url) as store:
        key = store.authenticate(secret)
        assert key.name == "old" and key.limits is None
        assert store.key_spend(key.id).total == 0
        store.update_key_limits(key.id, {"spend_limit_nano": 5})
        assert store.authenticate(secret).limits.spend_limit_nano == 5


def test_a_first_spend_limit_counts_what_the_key_spent_before(store):
    key, _ = store.create_key("acme", "k")
    account = store.get_account("acme").id
    assert store.hold("r1", account, 3 * CREDIT)
    store.settle("r1", 2 * CREDIT, UsageRecord("r1", account, key.id, "chat", "m", "p", 200))
    store.update_key_limits(key.id, {"spend_limit_nano": 3 * CREDIT})
    assert store.key_spend(key.id).total == 2 * CREDIT
    assert store.reserve_key_spend(key.id, 2 * CREDIT) == "spend limit"
    assert store.reserve_key_spend(key.id, CREDIT) is None


def test_a_swept_hold_of_a_limited_key_moves_its_spend(db_url):  # noqa: F811
    with open_store(db_url) as worker, open_store(db_url) as sweeper:
        worker.create_account("acme", 10 * CREDIT)
        key, _ = worker.create_key("acme", "k", {"spend_limit_nano": 5 * CREDIT})
        account = worker.get_account("acme").id
        assert worker.reserve_key_spend(key.id, 4 * CREDIT) is None
        assert worker.hold("lost", account, 4 * CREDIT, key.id)
        with sweeper.write() as conn:   # the worker recorded progress, then was lost
            conn.execute(text("UPDATE holds SET progress = :p WHERE request_id = 'lost'"),
                         {"p": json.dumps({"cost": CREDIT, "key_id": key.id,
                                           "endpoint": "chat", "model": "m",
                                           "provider": "p"})})
        [swept] = sweeper.sweep_stale_holds(0)
        assert swept.charged == CREDIT
        spend = sweeper.key_spend(key.id)
        assert (spend.total, spend.held) == (CREDIT, 0)


def test_a_hold_given_back_without_its_worker_gives_back_the_keys_reservation(db_url):  # noqa: F811
    """A worker lost before the provider accepted (no progress), and an operator's refund:
    the hold goes back to the balance and its amount leaves the key's spend in flight, so
    the key can spend up to its limit again."""
    with open_store(db_url) as worker, open_store(db_url) as sweeper:
        worker.create_account("acme", 10 * CREDIT)
        key, _ = worker.create_key("acme", "k", {"spend_limit_nano": 5 * CREDIT})
        account = worker.get_account("acme").id
        assert worker.reserve_key_spend(key.id, 4 * CREDIT) is None
        assert worker.hold("lost", account, 4 * CREDIT, key.id)
        assert worker.reserve_key_spend(key.id, 2 * CREDIT) == "spend limit"
        [swept] = sweeper.sweep_stale_holds(0)
        assert (swept.charged, swept.logged) == (0, False)
        spend = sweeper.key_spend(key.id)
        assert (spend.total, spend.held) == (0, 0)
        assert worker.get_account("acme").balance_nano == 10 * CREDIT
        # the same through the operator's full refund
        assert worker.reserve_key_spend(key.id, 5 * CREDIT) is None
        assert worker.hold("refunded", account, 5 * CREDIT, key.id)
        assert sweeper.release_stale_holds(0) == 1
        assert sweeper.key_spend(key.id).held == 0
        assert worker.reserve_key_spend(key.id, 5 * CREDIT) is None
        assert sweeper.audit("acme")["ok"]
