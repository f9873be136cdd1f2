"""Console login throttling, audit log, Origin checks and the client address behind trusted
proxies, in-process over `create_app` with a real SQLite store."""

from __future__ import annotations

import logging

import pytest
from falcon import testing
from sqlalchemy import select

from runtime.console import console_config
from runtime.console.clientaddr import TrustedProxies
from runtime.store.schema import audit_log, console_sessions
from tests.app.test_console import ADMIN_TOKEN, build, login


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN)
    env.store.create_account("acme", 1_000_000_000)
    yield env
    env.store.close()


def audit_rows(env) -> list:
    with env.store.engine.connect() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.id)).all()


def test_ten_failed_logins_from_an_address_then_429_even_with_the_right_key(env, caplog):
    caplog.set_level(logging.INFO, logger="tokmodel.audit")
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    browser = env.browser()
    for _ in range(10):
        result = browser.submit("/console/login", "/console/login", key="tm-" + "x" * 43)
        assert result.status_code == 400
    refused = browser.submit("/console/login", "/console/login", key=secret)
    assert refused.status_code == 429
    assert "Too many failed logins. Try again after" in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 301
    assert "tokmodel_console" not in browser.jar
    operator = browser.submit("/console/admin/login", "/console/admin/login", token=ADMIN_TOKEN)
    assert operator.status_code == 429  # the same address guessing the operator token
    rows = audit_rows(env)
    assert [row.action for row in rows] == ["login_failed"] * 10
    assert {row.key_prefix for row in rows} == {"tm-xxxx…"}
    assert secret not in caplog.text and "tm-" + "x" * 43 not in caplog.text
    assert caplog.text.count("console login_failed") == 10


def test_failures_for_one_key_prefix_throttle_it_from_every_address(env):
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    wrong = secret[:7] + ("A" if secret[7] != "A" else "B") + secret[8:]
    for n in range(10):
        browser = env.browser()
        result = browser.submit("/console/login", "/console/login", key=wrong,
                                remote_addr=f"10.0.0.{n + 1}")
        assert result.status_code == 400
    fresh = env.browser()
    blocked = fresh.submit("/console/login", "/console/login", key=secret,
                           remote_addr="10.0.1.1")
    assert blocked.status_code == 429
    other_key = env.store.create_key("acme", "other", manage=True)[1]
    assert fresh.submit("/console/login", "/console/login", key=other_key,
                        remote_addr="10.0.1.1").status_code == 303


def test_limits_are_configurable_and_successes_are_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES", "2")
    env = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN)
    env.store.create_account("acme", 0)
    browser, secret = login(env)
    rows = audit_rows(env)
    assert [(row.action, row.key_prefix, row.client_addr) for row in rows] == [
        ("login", secret[:7] + "…", "127.0.0.1")]
    guesser = env.browser()
    for _ in range(2):
        assert guesser.submit("/console/admin/login", "/console/admin/login",
                              token="guess").status_code == 400
    assert guesser.submit("/console/admin/login", "/console/admin/login",
                          token=ADMIN_TOKEN).status_code == 429
    env.store.close()


def test_operator_actions_are_audited(env, caplog):
    caplog.set_level(logging.INFO, logger="tokmodel.audit")
    browser = env.browser()
    browser.submit("/console/admin/login", "/console/admin/login", token=ADMIN_TOKEN)
    account = env.store.get_account("acme")
    page = f"/console/admin/accounts/{account.id}"
    assert browser.submit(page, f"{page}/topup", amount="2.5").status_code == 303
    assert browser.submit(page, f"{page}/keys", name="ci").status_code == 303
    actions = [(row.actor, row.action, row.account_id, row.detail) for row in audit_rows(env)]
    assert actions[:2] == [("operator", "operator_login", None, None),
                           ("operator", "topup", account.id, "amount_nano=2500000000")]
    assert actions[2][:3] == ("operator", "key_create", account.id)
    assert "console topup actor=operator client=127.0.0.1" in caplog.text
    assert ADMIN_TOKEN not in caplog.text


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1:9999"},
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of the same host
    {"Origin": "null", "Sec-Fetch-Site": "same-site"},
])
def test_a_post_from_another_origin_is_refused(env, headers):
    browser, _ = login(env)
    token = browser.csrf("/console/keys")
    before = len(env.store.list_keys("acme"))
    result = browser.post("/console/keys", {"name": "x", "csrf": token},
                          extra_headers=headers)
    assert result.status_code == 403 and "another site" in result.text
    assert len(env.store.list_keys("acme")) == before
    fresh = env.browser()
    login_token = fresh.csrf("/console/login")
    _, secret = env.store.create_key("acme", "k", manage=True)
    refused = fresh.post("/console/login", {"key": secret, "csrf": login_token},
                         extra_headers=headers)
    assert refused.status_code == 403 and "tokmodel_console" not in fresh.jar


def test_a_same_origin_post_passes_and_the_public_url_decides(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKMODEL_PUBLIC_URL", "https://gw.example.com/")
    env = build(tmp_path, monkeypatch)
    env.store.create_account("acme", 0)
    _, secret = env.store.create_key("acme", "k", manage=True)
    browser = env.browser()
    token = browser.csrf("/console/login")
    assert browser.post("/console/login", {"key": secret, "csrf": token}, extra_headers={
        "Origin": "http://falconframework.org"}).status_code == 403
    result = browser.post("/console/login", {"key": secret, "csrf": token}, extra_headers={
        "Origin": "https://gw.example.com"})
    assert result.status_code == 303
    assert result.cookies["tokmodel_console"].secure  # the public URL is https
    browser.submit("/console/keys", "/console/keys", name="n",
                   extra_headers={"Origin": "https://gw.example.com"})
    assert "https://gw.example.com/v1" in browser.get("/console/keys/created").text
    env.store.close()


def test_bad_console_settings_are_named():
    for env, name in (({"TOKMODEL_PUBLIC_URL": "gw.example.com"}, "TOKMODEL_PUBLIC_URL"),
                      ({"TOKMODEL_TRUSTED_PROXIES": "10.0.0.1,nope"}, "TOKMODEL_TRUSTED_PROXIES"),
                      ({"TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES": "0"},
                       "TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES")):
        with pytest.raises(ValueError, match=name):
            console_config(env)


def _client(proxies: str, peer: str, forwarded: str | None) -> str:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    req = testing.create_req(remote_addr=peer, headers=headers)
    return TrustedProxies.parse(proxies).client_address(req)


@pytest.mark.parametrize("proxies, peer, forwarded, client", [
    ("", "203.0.113.9", "1.2.3.4", "203.0.113.9"),              # no proxy trusted
    ("10.0.0.1", "203.0.113.9", "1.2.3.4", "203.0.113.9"),      # peer is not the proxy
    ("10.0.0.1", "10.0.0.1", "1.2.3.4", "1.2.3.4"),
    ("10.0.0.1", "10.0.0.1", "6.6.6.6, 1.2.3.4", "1.2.3.4"),     # left part is forgeable
    ("10.0.0.0/8", "10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4"),
    ("10.0.0.0/8", "10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # all trusted: left-most
    ("10.0.0.1", "10.0.0.1", None, "10.0.0.1"),
    ("10.0.0.1", "10.0.0.1", "garbage", "10.0.0.1"),
    ("10.0.0.1,2001:db8::/32", "2001:db8::1", "[2001:db9::5]:4711", "2001:db9::5"),
])
def test_the_client_address_behind_trusted_proxies(proxies, peer, forwarded, client):
    assert _client(proxies, peer, forwarded) == client


def test_throttling_counts_the_forwarded_address_of_a_trusted_proxy(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKMODEL_TRUSTED_PROXIES", "127.0.0.1")
    monkeypatch.setenv("TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES", "3")
    env = build(tmp_path, monkeypatch)
    env.store.create_account("acme", 0)
    guesser = env.browser()
    for _ in range(3):
        guesser.submit("/console/login", "/console/login", key="nope",
                       extra_headers={"X-Forwarded-For": "198.51.100.7"})
    assert guesser.submit("/console/login", "/console/login", key="nope", extra_headers={
        "X-Forwarded-For": "198.51.100.7"}).status_code == 429
    _, secret = env.store.create_key("acme", "k", manage=True)
    other = env.browser()  # another client behind the same proxy is not blocked
    assert other.submit("/console/login", "/console/login", key=secret, extra_headers={
        "X-Forwarded-For": "6.6.6.6, 198.51.100.8"}).status_code == 303
    assert {row.client_addr for row in audit_rows(env)} == {"198.51.100.7", "198.51.100.8"}
    env.store.close()


def test_disabling_an_account_ends_its_sessions_at_once(env):
    browser, _ = login(env)
    assert browser.get("/console").status_code == 200
    env.store.set_account_disabled("acme", True)
    with env.store.engine.connect() as conn:
        assert conn.execute(select(console_sessions)).first() is None
    assert browser.get("/console").headers["location"].endswith("/console/login?m=ended")
