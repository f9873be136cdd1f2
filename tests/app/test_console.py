"""The web console (/console) in-process over `create_app`, with a real SQLite store: login
with API keys, key management, usage, CSRF and cookie integrity, operator pages and escaping."""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from falcon import testing
from sqlalchemy import select, update

from generated import registry
from runtime.app import create_app
from runtime.catalogue import load_catalogue
from runtime.console.session import SESSION_SECONDS, Signer
from runtime.settings import Settings
from runtime.store import Store, UsageRecord, open_store
from runtime.store.schema import console_sessions
from runtime.upstream import Upstream

ADMIN_TOKEN = "operator-token-0123456789abcdef"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SECRET = re.compile(r"tm-[A-Za-z0-9_-]{43}")
EVIL = "<script>alert(1)</script>"


@dataclass
class Browser:
    """A TestClient that keeps cookies like a browser (path-scoped, cleared on unset)."""

    client: testing.TestClient
    jar: dict[str, tuple[str, str]] = field(default_factory=dict)

    def _cookies(self, path: str) -> dict[str, str]:
        return {name: value for name, (value, scope) in self.jar.items()
                if path == scope or path.startswith(scope.rstrip("/") + "/")}

    def _keep(self, result: testing.Result) -> testing.Result:
        for name, cookie in result.cookies.items():
            if cookie.value == "" or (cookie.max_age is not None and cookie.max_age <= 0):
                self.jar.pop(name, None)
            else:
                self.jar[name] = (cookie.value, cookie.path or "/")
        return result

    def get(self, path: str, **kwargs) -> testing.Result:
        return self._keep(self.client.simulate_get(path, cookies=self._cookies(path), **kwargs))

    def post(self, path: str, form: dict[str, str], extra_headers: dict | None = None,
             **kwargs) -> testing.Result:
        headers = {"Content-Type": "application/x-www-form-urlencoded", **(extra_headers or {})}
        return self._keep(self.client.simulate_post(
            path, body=urlencode(form), cookies=self._cookies(path), headers=headers,
            **kwargs))

    def csrf(self, path: str) -> str:
        """GET a page and return the CSRF token of its forms."""
        page = self.get(path)
        assert page.status_code == 200, (path, page.status_code)
        return CSRF.search(page.text).group(1)

    def submit(self, page: str, action: str, extra_headers: dict | None = None,
               remote_addr: str | None = None, **form: str) -> testing.Result:
        """GET `page`, then POST `form` to `action` with the page's CSRF token."""
        kwargs = {"remote_addr": remote_addr} if remote_addr else {}
        return self.post(action, dict(form, csrf=self.csrf(page)), extra_headers, **kwargs)


@dataclass
class Env:
    store: Store
    app: object
    tmp_path: object

    def browser(self) -> Browser:
        return Browser(testing.TestClient(self.app))


def build(tmp_path, monkeypatch, admin_token: str | None = None,
          secret: str | None = None, redis_url: str | None = None) -> Env:
    for name, value in (("TOKMODEL_ADMIN_TOKEN", admin_token),
                        ("TOKMODEL_CONSOLE_SECRET", secret)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        redis_url=redis_url)
    store = open_store(settings.database_url)
    app = create_app(settings, registry, store, Upstream(2, 5), load_catalogue(env={}))
    return Env(store, app, tmp_path)


def login(env: Env, account: str = "acme", key_name: str = "laptop") -> tuple[Browser, str]:
    _, secret = env.store.create_key(account, key_name, manage=True)
    browser = env.browser()
    result = browser.submit("/console/login", "/console/login", key=secret)
    assert result.status_code == 303
    assert result.headers["location"].endswith("/console")
    return browser, secret


def admin_login(env: Env) -> Browser:
    browser = env.browser()
    result = browser.submit("/console/admin/login", "/console/admin/login", token=ADMIN_TOKEN)
    assert result.status_code == 303
    assert result.headers["location"].endswith("/console/admin")
    return browser


def log_usage(store: Store, account: str, request_id: str, cost_nano: int,
              model: str = "openai/gpt-4o-mini") -> None:
    acct = store.get_account(account)
    assert store.hold(request_id, acct.id, cost_nano)
    store.settle(request_id, cost_nano, UsageRecord(
        request_id=request_id, account_id=acct.id, key_id=None, endpoint="chat",
        model=model, provider="openai", status=200, prompt_tokens=11, completion_tokens=7))


# login and sessions

def test_login_with_a_live_key_opens_a_signed_httponly_session(env):
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    browser = env.browser()
    result = browser.submit("/console/login", "/console/login", key=secret)
    assert result.status_code == 303
    assert result.headers["location"].endswith("/console")
    cookie = result.cookies["tokmodel_console"]
    assert cookie.http_only and cookie.same_site == "Lax" and cookie.path == "/console"
    assert cookie.max_age == SESSION_SECONDS
    assert secret not in cookie.value
    page = browser.get("/console")
    assert page.status_code == 200 and "acme" in page.text
    assert browser.get("/console/login").headers["location"].endswith("/console")


def test_login_form_needs_its_csrf_token(env):
    _, secret = env.store.create_key("acme", "laptop", manage=True)
    browser = env.browser()
    browser.csrf("/console/login")  # sets the pre-login cookie
    for form in ({"key": secret}, {"key": secret, "csrf": "f" * 64}):
        assert browser.post("/console/login", form).status_code == 403
    fresh = env.browser()  # a token without the matching pre-login cookie
    token = browser.csrf("/console/login")
    assert fresh.post("/console/login", {"key": secret, "csrf": token}).status_code == 403
    assert "tokmodel_console" not in browser.jar and "tokmodel_console" not in fresh.jar


def test_dashboard_shows_the_exact_balance_and_recent_usage(env):
    browser, _ = login(env)
    log_usage(env.store, "acme", "req_dash1", 1_234_000)
    page = browser.get("/console")
    assert page.status_code == 200
    assert "1.233333" in page.text  # 1_234_567_000 - 1_234_000 nano-credits, exact
    assert "openai/gpt-4o-mini" in page.text and "0.001234" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_login_with_a_revoked_key_is_refused(env):
    record, secret = env.store.create_key("acme", "old", manage=True)
    env.store.revoke_key(record.id)
    browser = env.browser()
    result = browser.submit("/console/login", "/console/login", key=secret)
    assert result.status_code == 400
    assert "That key was not accepted" in result.text
    assert "tokmodel_console" not in browser.jar


@pytest.mark.parametrize("garbage", ["", "nonsense", "tm-" + "x" * 43, EVIL])
def test_login_with_garbage_gives_the_generic_error(env, garbage):
    browser = env.browser()
    result = browser.submit("/console/login", "/console/login", key=garbage)
    assert result.status_code == 400
    assert "That key was not accepted" in result.text
    assert "<script>alert" not in result.text
    assert "tokmodel_console" not in browser.jar


def test_not_logged_in_pages_redirect_to_login(env):
    browser = env.browser()
    for path in ("/console", "/console/keys", "/console/usage"):
        result = browser.get(path)
        assert result.status_code == 303
        assert result.headers["location"].endswith("/console/login")


def test_an_unknown_or_expired_session_goes_back_to_login(env):
    browser, _ = login(env)
    value, path = browser.jar["tokmodel_console"]
    for cookie in (value[:-1] + ("A" if value[-1] != "A" else "B"), "garbage", "x" * 300):
        browser.jar["tokmodel_console"] = (cookie, path)
        result = browser.get("/console")
        assert result.status_code == 303
        assert result.headers["location"].endswith("/console/login?m=ended")
        assert "tokmodel_console" not in browser.jar  # the dead cookie is cleared
    browser.jar["tokmodel_console"] = (value, path)
    assert browser.get("/console").status_code == 200
    with env.store.engine.begin() as conn:  # the session's 12 hours are over
        conn.execute(update(console_sessions).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert browser.get("/console").headers["location"].endswith("/console/login?m=ended")
    with env.store.engine.connect() as conn:
        assert conn.execute(select(console_sessions)).first() is None


def test_the_session_cookie_is_a_random_id_stored_only_as_a_digest(env):
    browser, secret = login(env)
    value, _ = browser.jar["tokmodel_console"]
    assert len(value) >= 43 and secret not in value
    with env.store.engine.connect() as conn:
        rows = conn.execute(select(console_sessions)).all()
    assert len(rows) == 1 and value not in repr(rows)


def test_revoking_the_login_key_elsewhere_ends_the_session_at_once(env):
    browser, secret = login(env)
    assert browser.get("/console/keys").status_code == 200
    key = env.store.authenticate(secret)
    env.store.revoke_key(key.id)
    result = browser.get("/console/keys")
    assert result.status_code == 303
    assert result.headers["location"].endswith("/console/login?m=ended")
    assert browser.get("/console").status_code == 303
    assert "session has ended" in browser.get("/console/login?m=ended").text


def test_logout_ends_the_session_on_the_server(env):
    browser, _ = login(env)
    copied = dict(browser.jar)
    result = browser.submit("/console", "/console/logout")
    assert result.status_code == 303
    assert "tokmodel_console" not in browser.jar
    assert browser.get("/console").status_code == 303
    browser.jar = copied  # a copy of the cookie taken before logging out
    assert browser.get("/console").headers["location"].endswith("/console/login?m=ended")


def test_revoking_a_key_from_the_cli_deletes_its_sessions_at_once(env):
    browser, secret = login(env)
    other, _ = login(env, key_name="other")
    env.store.revoke_key(env.store.authenticate(secret).id)
    with env.store.engine.connect() as conn:
        assert len(conn.execute(select(console_sessions)).all()) == 1
    assert browser.get("/console").status_code == 303
    assert other.get("/console").status_code == 200


# keys

def test_create_key_shows_the_secret_exactly_once(env, caplog):
    caplog.set_level(logging.DEBUG)
    browser, _ = login(env)
    before = len(env.store.list_keys("acme"))
    posted = browser.submit("/console/keys", "/console/keys", name="prod-api-server")
    assert posted.status_code == 303
    assert posted.headers["location"].endswith("/console/keys/created")
    assert not SECRET.search(posted.text)
    result = browser.get("/console/keys/created")
    assert result.status_code == 200
    assert result.headers["cache-control"] == "no-store"
    assert "http://falconframework.org/v1" in result.text  # the base URL to use
    again = browser.get("/console/keys/created")  # a reload: no secret, no second key
    assert again.status_code == 303 and again.headers["location"].endswith("done=shown")
    assert not SECRET.search(again.text)
    assert len(env.store.list_keys("acme")) == before + 1
    secrets_shown = set(SECRET.findall(result.text))
    assert len(secrets_shown) == 1
    secret = secrets_shown.pop()
    key = env.store.authenticate(secret)
    assert key is not None and key.name == "prod-api-server" and key.account_name == "acme"
    listing = browser.get("/console/keys")
    assert "prod-api-server" in listing.text and key.display_prefix in listing.text
    assert secret not in listing.text and not SECRET.search(listing.text)
    assert secret not in caplog.text


def test_create_key_needs_a_name(env):
    browser, _ = login(env)
    before = len(env.store.list_keys("acme"))
    result = browser.submit("/console/keys", "/console/keys", name="   ")
    assert result.status_code == 400
    assert "Enter a key name" in result.text
    assert len(env.store.list_keys("acme")) == before


def test_rename_key(env):
    browser, secret = login(env)
    key = env.store.authenticate(secret)
    page = f"/console/keys/{key.id}/rename"
    result = browser.submit(page, page, name="  local-dev-alice ")
    assert result.status_code == 303
    assert result.headers["location"].endswith("/console/keys?done=renamed")
    assert env.store.get_key(key.id).name == "local-dev-alice"
    assert "Key renamed." in browser.get("/console/keys?done=renamed").text
    assert browser.submit(page, page, name="").status_code == 400
    assert env.store.get_key(key.id).name == "local-dev-alice"


def test_revoke_key_asks_first_then_takes_effect_immediately(env):
    browser, _ = login(env)
    record, secret = env.store.create_key("acme", "staging-worker", manage=True)
    page = f"/console/keys/{record.id}/revoke"
    confirm = browser.get(page)
    assert confirm.status_code == 200
    assert "staging-worker" in confirm.text and f'action="{page}"' in confirm.text
    assert env.store.authenticate(secret) is not None  # a GET changes nothing
    result = browser.submit(page, page)
    assert result.status_code == 303
    assert result.headers["location"].endswith("/console/keys?done=revoked")
    assert env.store.authenticate(secret) is None
    assert browser.get("/console/keys").status_code == 200  # the login key still works


def test_revoking_your_own_login_key_logs_you_out(env):
    browser, secret = login(env)
    key = env.store.authenticate(secret)
    page = f"/console/keys/{key.id}/revoke"
    assert "also logs you out" in browser.get(page).text
    result = browser.submit(page, page)
    assert result.headers["location"].endswith("/console/login?m=revoked")
    assert env.store.authenticate(secret) is None
    assert browser.get("/console").status_code == 303


def test_keys_of_another_account_are_404(env):
    browser, _ = login(env)
    env.store.create_account("rival")
    record, secret = env.store.create_key("rival", "theirs", manage=True)
    for path in (f"/console/keys/{record.id}/rename", f"/console/keys/{record.id}/revoke",
                 "/console/keys/key_nope/revoke"):
        assert browser.get(path).status_code == 404
    token = browser.csrf("/console/keys")
    result = browser.post(f"/console/keys/{record.id}/revoke", {"csrf": token})
    assert result.status_code == 404
    assert env.store.authenticate(secret) is not None


# CSRF

def test_posts_without_or_with_a_wrong_csrf_token_are_403(env):
    browser, secret = login(env)
    key = env.store.authenticate(secret)
    other, _ = login(env, key_name="other-session")
    foreign = other.csrf("/console/keys")  # valid, but bound to another session
    before = len(env.store.list_keys("acme"))
    for form in ({"name": "x"}, {"name": "x", "csrf": "0" * 64}, {"name": "x", "csrf": foreign}):
        assert browser.post("/console/keys", form).status_code == 403
        assert browser.post(f"/console/keys/{key.id}/revoke", form).status_code == 403
        assert browser.post(f"/console/keys/{key.id}/rename", form).status_code == 403
        assert browser.post("/console/logout", form).status_code == 403
    assert len(env.store.list_keys("acme")) == before
    assert env.store.authenticate(secret) is not None
    assert browser.get("/console").status_code == 200


def test_forms_must_be_urlencoded(env):
    browser, _ = login(env)
    token = browser.csrf("/console/keys")
    result = browser.client.simulate_post(
        "/console/keys", json={"name": "x", "csrf": token},
        cookies={name: value for name, (value, _) in browser.jar.items()})
    assert result.status_code == 415


# usage

def test_usage_lists_cost_per_request_and_the_total(env):
    browser, _ = login(env)
    log_usage(env.store, "acme", "req_u1", 250_000_000, model="openai/gpt-4o")
    log_usage(env.store, "acme", "req_u2", 1_500_000)
    page = browser.get("/console/usage")
    assert page.status_code == 200
    assert "0.25" in page.text and "0.0015" in page.text
    assert re.search(r'class="t-cost total">0\.2515 credits<', page.text)
    assert re.search(r'class="t-requests">2<', page.text)
    assert "openai/gpt-4o" in page.text


# operator pages

def test_admin_pages_are_404_without_the_token(env):
    browser = env.browser()
    for path in ("/console/admin", "/console/admin/login", "/console/admin/accounts/1"):
        assert browser.get(path).status_code == 404
    assert browser.post("/console/admin/login", {"token": ""}).status_code == 404


def test_admin_login_with_the_token(admin_env):
    browser = admin_env.browser()
    assert browser.get("/console/admin").headers["location"].endswith("/console/admin/login")
    wrong = browser.submit("/console/admin/login", "/console/admin/login", token="guess")
    assert wrong.status_code == 400 and "That token was not accepted." in wrong.text
    assert "tokmodel_admin" not in browser.jar
    browser = admin_login(admin_env)
    cookie_path = browser.jar["tokmodel_admin"][1]
    assert cookie_path == "/console/admin"
    page = browser.get("/console/admin")
    assert page.status_code == 200 and "acme" in page.text and "1</td>" in page.text
    assert browser.get("/console").status_code == 303  # an operator is not an account


def test_admin_session_ends_when_the_token_changes(tmp_path, monkeypatch):
    env = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN)
    browser = admin_login(env)
    env.store.close()
    rotated = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN + "-rotated")
    browser.client = testing.TestClient(rotated.app)
    assert browser.get("/console/admin").status_code == 303
    rotated.store.close()


def test_admin_top_up_is_exact(admin_env):
    browser = admin_login(admin_env)
    account = admin_env.store.get_account("acme")
    page = f"/console/admin/accounts/{account.id}"
    result = browser.submit(page, f"{page}/topup", amount="12.5")
    assert result.status_code == 303
    assert result.headers["location"].endswith(f"{page}?done=topup")
    assert admin_env.store.get_account("acme").balance_nano == 1_000_000_000 + 12_500_000_000
    assert "13.5" in browser.get(f"{page}?done=topup").text


def test_nano_credit_amounts_and_a_debt_are_shown_exactly(admin_env):
    store = admin_env.store
    account = store.get_account("acme")
    log_usage(store, "acme", "req_tiny", 80)  # a 4-token embedding at 0.02 USD per M
    # a request that cost 1.000000001 credits more than its hold and the balance
    assert store.hold("req_big", account.id, 999_999_920)
    store.settle("req_big", 1_999_999_921, UsageRecord(
        request_id="req_big", account_id=account.id, key_id=None, endpoint="chat",
        model="openai/gpt-4o", provider="openai", status=200))
    browser = admin_login(admin_env)
    listing = browser.get("/console/admin").text
    assert re.search(r">0</td>\s*<td class=\"num\">1\.000000001</td>", listing), listing
    page = browser.get(f"/console/admin/accounts/{account.id}").text
    assert "0.00000008" in page and "Debt: 1.000000001 credits" in page
    result = browser.submit(f"/console/admin/accounts/{account.id}",
                            f"/console/admin/accounts/{account.id}/topup", amount="1.5")
    assert result.status_code == 303
    after = store.get_account("acme")
    assert (after.balance_nano, after.debt_nano) == (499_999_999, 0)
    assert "0.499999999" in browser.get(f"/console/admin/accounts/{account.id}").text
    assert store.audit("acme")["ok"]


@pytest.mark.parametrize("amount", ["", "abc", "-1", "0", "0.0000000001", "1e3", "NaN",
                                    "Infinity", "1,5", "+5", "12.5.1", "9" * 41,
                                    "9223372036.854775808"])
def test_admin_invalid_amounts_show_an_error_and_change_nothing(admin_env, amount):
    browser = admin_login(admin_env)
    account = admin_env.store.get_account("acme")
    page = f"/console/admin/accounts/{account.id}"
    result = browser.submit(page, f"{page}/topup", amount=amount)
    assert result.status_code == 400
    assert 'class="error"' in result.text
    assert admin_env.store.get_account("acme").balance_nano == 1_000_000_000


def test_admin_creates_an_account_and_a_key_for_it(admin_env):
    browser = admin_login(admin_env)
    result = browser.submit("/console/admin", "/console/admin/accounts", name="globex")
    assert result.status_code == 303
    account = admin_env.store.get_account("globex")
    assert result.headers["location"].endswith(f"/console/admin/accounts/{account.id}"
                                               "?done=created")
    duplicate = browser.submit("/console/admin", "/console/admin/accounts", name="globex")
    assert duplicate.status_code == 400 and "already exists" in duplicate.text
    page = f"/console/admin/accounts/{account.id}"
    posted = browser.submit(page, f"{page}/keys", name="prod")
    assert posted.headers["location"].endswith("/console/admin/keys/created")
    created = browser.get("/console/admin/keys/created")
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    (secret,) = set(SECRET.findall(created.text))
    assert browser.get("/console/admin/keys/created").status_code == 303
    assert len(admin_env.store.list_keys("globex")) == 1
    assert admin_env.store.authenticate(secret).account_name == "globex"
    assert admin_env.store.authenticate(secret).manage is False  # the box was not ticked
    assert secret not in browser.get(page).text
    assert browser.get("/console/admin/accounts/999999").status_code == 404
    browser.submit(page, f"{page}/keys", name="owner", manage="1")
    (owner,) = set(SECRET.findall(browser.get("/console/admin/keys/created").text))
    assert admin_env.store.authenticate(owner).manage is True
    listed = browser.get(page).text
    assert re.search(r"<td>owner <span class=\"tag\">management</span></td>", listed)
    assert re.search(r"<td>prod</td>", listed)


def test_admin_posts_need_the_csrf_token(admin_env):
    browser = admin_login(admin_env)
    account = admin_env.store.get_account("acme")
    result = browser.post(f"/console/admin/accounts/{account.id}/topup",
                          {"amount": "5", "csrf": "bad"})
    assert result.status_code == 403
    assert browser.post("/console/admin/accounts", {"name": "x"}).status_code == 403
    assert admin_env.store.get_account("acme").balance_nano == 1_000_000_000
    assert admin_env.store.get_account("x") is None


# escaping

def test_pages_escape_account_and_key_names(admin_env):
    store = admin_env.store
    store.create_account(EVIL, 5_000_000_000)
    browser, _ = login(admin_env, account=EVIL, key_name=EVIL)
    browser.submit("/console/keys", "/console/keys", name=EVIL)
    created = browser.get("/console/keys/created")
    pages = [created, browser.get("/console"), browser.get("/console/keys"),
             browser.get("/console/usage")]
    key = store.list_keys(EVIL)[0]
    pages += [browser.get(f"/console/keys/{key.id}/rename"),
              browser.get(f"/console/keys/{key.id}/revoke")]
    operator = admin_login(admin_env)
    account = store.get_account(EVIL)
    pages += [operator.get("/console/admin"),
              operator.get(f"/console/admin/accounts/{account.id}")]
    for page in pages:
        assert page.status_code == 200
        assert "<script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# secret and static file

def test_the_generated_secret_is_a_0600_file_next_to_the_database(env):
    path = env.tmp_path / "console-secret"
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32


def test_configured_secret_signs_the_forms_and_no_file_is_written(tmp_path, monkeypatch):
    env = build(tmp_path, monkeypatch, secret="s" * 40)
    assert not (tmp_path / "console-secret").exists()
    env.store.create_account("acme")
    browser, _ = login(env)
    token = browser.csrf("/console/keys")
    assert token == Signer(b"s" * 40).csrf_token(_binding(env))
    assert token != Signer(b"t" * 40).csrf_token(_binding(env))
    env.store.close()


def _binding(env: Env) -> str:
    with env.store.engine.connect() as conn:
        return conn.execute(select(console_sessions.c.binding)).scalar_one()


def test_stylesheet_is_served(env):
    result = env.browser().get("/console/static/console.css")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/css")
    assert "http" not in result.text  # no external assets
