"""The console's login throttle shared by two gateway nodes under gunicorn through a real
Redis (TOKMODEL_TEST_REDIS_URL; skipped, saying so, without one). The nodes have separate
SQLite databases, so only Redis can carry a failure seen by one node to the other. Both
trust 127.0.0.1 as their proxy and read the client from X-Forwarded-For, so each test
counts under addresses of its own."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import uuid

import pytest
import redis
import requests
from sqlalchemy import func, select

from runtime.store.schema import audit_log

pytestmark = pytest.mark.integration

REDIS_ENV = "TOKMODEL_TEST_REDIS_URL"
TOKEN = "operator-token-for-redis-tests-0123"


@pytest.fixture(scope="module")
def redis_url():
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} not set: the shared login throttle needs a Redis server")
    return url


@pytest.fixture(scope="module")
def nodes(redis_url, gateway_factory):
    env = {"TOKMODEL_REDIS_URL": redis_url, "TOKMODEL_TRUSTED_PROXIES": "127.0.0.1",
           "TOKMODEL_ADMIN_TOKEN": TOKEN}
    return gateway_factory("node-a", env, workers=2), gateway_factory("node-b", env, workers=2)


@pytest.fixture
def counted(redis_url):
    """The Redis keys a test counts under, deleted afterwards."""
    keys: list[str] = []
    yield keys
    if keys:
        redis.Redis.from_url(redis_url).delete(*keys)


def new_address(counted: list[str]) -> str:
    address = str(ipaddress.ip_address(f"2001:db8::{uuid.uuid4().hex[:4]}:"
                                       f"{uuid.uuid4().hex[:4]}"))  # as the gateway spells it
    counted.append(f"tokmodel:{{login}}:addr:{address}")
    return address


def wrong_key(counted: list[str]) -> str:
    key = "tm-" + secrets.token_urlsafe(32)[:43]
    counted.append(f"tokmodel:{{login}}:prefix:{key[:7]}…")
    return key


def log_in(gw, address: str, key: str | None = None, token: str | None = None
           ) -> requests.Response:
    """One login attempt through the node's real login form, as the client `address`."""
    path = "/console/login" if token is None else "/console/admin/login"
    browser = requests.Session()
    browser.headers["X-Forwarded-For"] = address
    page = browser.get(gw.url + path, timeout=20)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    form = {"csrf": csrf, **({"key": key} if token is None else {"token": token})}
    return browser.post(gw.url + path, data=form, allow_redirects=False, timeout=20)


def failures(gw) -> int:
    with gw.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action.in_(("login_failed", "operator_login_failed")))).scalar()


def test_failures_on_one_node_count_on_the_other(nodes, counted):
    a, b = nodes
    b.store.create_account("acme-redis", 0)
    secret = b.store.create_key("acme-redis", "owner", manage=True)[1]
    address, wrong = new_address(counted), wrong_key(counted)
    before = (failures(a), failures(b))
    for node in (a, a, a, a, a, a, b, b, b):
        assert log_in(node, address, wrong).status_code == 400
    assert log_in(a, address, token="a guess").status_code == 400  # the operator form too
    # ten failures in all, neither database holding more than six of them
    assert (failures(a) - before[0], failures(b) - before[1]) == (7, 3)
    refused = log_in(b, address, secret)  # the right key, on the node that saw three
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 301
    assert log_in(a, address, token=TOKEN).status_code == 429
    assert log_in(b, new_address(counted), secret).status_code == 303  # another client


def test_failures_naming_a_key_prefix_count_on_every_node(nodes, counted):
    a, b = nodes
    b.store.create_account("beta-redis", 0)
    secret = b.store.create_key("beta-redis", "owner", manage=True)[1]
    wrong = secret[:7] + ("A" if secret[7] != "A" else "B") + secret[8:]
    counted.append(f"tokmodel:{{login}}:prefix:{secret[:7]}…")
    for n in range(10):  # ten clients, five on each node, all naming the same key prefix
        node = a if n % 2 else b
        assert log_in(node, new_address(counted), wrong).status_code == 400
    assert log_in(b, new_address(counted), secret).status_code == 429
    assert log_in(a, new_address(counted), secret).status_code == 429
