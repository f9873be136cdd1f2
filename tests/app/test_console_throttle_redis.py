"""The console's login throttle counted in a real Redis (TOKMODEL_TEST_REDIS_URL; skipped,
saying so, without one), in process over `create_app`: per client address and per key
prefix, the window sliding by, two app instances with separate databases sharing the counts,
and the database's counts taking over when Redis is unreachable. Every test counts under
client addresses of its own, so runs never share a count."""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid

import pytest
import redis
from sqlalchemy import func, select

from runtime.store.schema import audit_log
from tests.app.test_console import ADMIN_TOKEN, build

REDIS_ENV = "TOKMODEL_TEST_REDIS_URL"


@pytest.fixture
def redis_url():
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} not set: the Redis login throttle needs a server")
    return url


@pytest.fixture
def fresh(redis_url):
    """fresh.address() / fresh.wrong_key(): a client address, or a wrong key with a prefix,
    no earlier run used; their Redis counts are deleted afterwards."""

    class Fresh:
        def __init__(self) -> None:
            self.made: list[str] = []

        def address(self) -> str:
            raw = uuid.uuid4().bytes
            address = f"2001:db8:{raw[0]:x}{raw[1]:02x}:{raw[2]:x}{raw[3]:02x}::1"
            self.made.append(f"tokmodel:{{login}}:addr:{address}")
            return address

        def wrong_key(self) -> str:
            key = "tm-" + secrets.token_urlsafe(32)[:43]
            self.made.append(f"tokmodel:{{login}}:prefix:{key[:7]}…")
            return key

    made = Fresh()
    yield made
    if made.made:
        redis.Redis.from_url(redis_url).delete(*made.made)


def failures_in(env) -> int:
    with env.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "login_failed")).scalar()


def attempt(env, key: str, address: str):
    return env.browser().submit("/console/login", "/console/login", key=key,
                                remote_addr=address)


def test_ten_failures_from_an_address_then_429_counted_in_redis(tmp_path, monkeypatch,
                                                                 redis_url, fresh):
    env = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN, redis_url=redis_url)
    env.store.create_account("acme", 0)
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    guesser, bystander, wrong = fresh.address(), fresh.address(), fresh.wrong_key()
    for _ in range(10):
        assert attempt(env, wrong, guesser).status_code == 400
    refused = attempt(env, secret, guesser)
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert 290 <= int(refused.headers["retry-after"]) <= 301
    operator = env.browser().submit("/console/admin/login", "/console/admin/login",
                                    token=ADMIN_TOKEN, remote_addr=guesser)
    assert operator.status_code == 429  # the same address guessing the operator token
    count = redis.Redis.from_url(redis_url).zcard(f"tokmodel:{{login}}:addr:{guesser}")
    assert count == 10
    assert attempt(env, secret, bystander).status_code == 303  # another address logs in
    assert failures_in(env) == 10  # and every failure is still in the audit log
    env.store.close()


def test_failures_naming_one_key_prefix_throttle_it_from_every_address(
        tmp_path, monkeypatch, redis_url, fresh):
    env = build(tmp_path, monkeypatch, redis_url=redis_url)
    env.store.create_account("acme", 0)
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    wrong = secret[:7] + ("A" if secret[7] != "A" else "B") + secret[8:]
    prefix_key = f"tokmodel:{{login}}:prefix:{secret[:7]}…"
    try:
        for _ in range(10):
            assert attempt(env, wrong, fresh.address()).status_code == 400
        assert attempt(env, secret, fresh.address()).status_code == 429
        other = env.store.create_key("acme", "other", manage=True)[1]
        if other[:7] != secret[:7]:
            assert attempt(env, other, fresh.address()).status_code == 303
    finally:
        redis.Redis.from_url(redis_url).delete(prefix_key)
    env.store.close()


def test_the_window_slides_and_operator_failures_count_for_the_address(
        tmp_path, monkeypatch, redis_url, fresh):
    monkeypatch.setenv("TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES", "2")
    monkeypatch.setenv("TOKMODEL_CONSOLE_LOGIN_WINDOW_SECONDS", "1")
    env = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN, redis_url=redis_url)
    env.store.create_account("acme", 0)
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    address = fresh.address()
    for _ in range(2):
        assert env.browser().submit("/console/admin/login", "/console/admin/login",
                                    token="guess", remote_addr=address).status_code == 400
    refused = attempt(env, secret, address)
    assert refused.status_code == 429 and refused.headers["retry-after"] in ("1", "2")
    time.sleep(1.1)
    assert attempt(env, secret, address).status_code == 303
    env.store.close()


def test_two_app_instances_with_separate_databases_share_the_counts(
        tmp_path, monkeypatch, redis_url, fresh):
    one = build(tmp_path / "one", monkeypatch, redis_url=redis_url)
    two = build(tmp_path / "two", monkeypatch, redis_url=redis_url)
    for env in (one, two):
        env.store.create_account("acme", 0)
    secret = two.store.create_key("acme", "laptop", manage=True)[1]
    address, wrong = fresh.address(), fresh.wrong_key()
    for env in (one, two, one, two, one, two, one, two, one, two):
        assert attempt(env, wrong, address).status_code == 400
    assert (failures_in(one), failures_in(two)) == (5, 5)  # neither database has 10
    assert attempt(two, secret, address).status_code == 429
    assert attempt(one, fresh.wrong_key(), address).status_code == 429
    for env in (one, two):
        env.store.close()


def test_an_unreachable_redis_leaves_the_database_counting(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tokmodel.console")
    env = build(tmp_path, monkeypatch, redis_url="redis://127.0.0.1:1/0")  # nothing listens
    env.store.create_account("acme", 0)
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    address = "192.0.2.77"
    assert attempt(env, secret, address).status_code == 303
    for _ in range(10):
        assert attempt(env, "tm-" + "x" * 43, address).status_code == 400
    assert attempt(env, secret, address).status_code == 429
    assert "Redis unavailable" in caplog.text and "judging by the database" in caplog.text
    env.store.close()
