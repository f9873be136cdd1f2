"""The console in a real headless Chromium against the gateway under gunicorn: login,
logout (a copied cookie stops working), a cross-origin form from another port of the same
host refused, reloading the new-key page, a management key making another management key
(and an inference key that still cannot log in), and throttling after 10 bad logins."""

from __future__ import annotations

import re
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.harness import Gateway

SECRET = re.compile(r"tm-[A-Za-z0-9_-]{43}")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def new_account(gw: Gateway, name: str) -> str:
    gw.store.create_account(name, 1_000_000_000)
    return gw.store.create_key(name, "login", manage=True)[1]


def log_in(page, gw: Gateway, secret: str) -> None:
    page.goto(f"{gw.url}/console/login")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gw.url}/console")


def test_login_then_logout_and_the_old_cookie_is_refused(browser, gateway):
    secret = new_account(gateway, "browser-logout")
    page = browser.new_page()
    log_in(page, gateway, secret)
    assert "browser-logout" in page.content()
    saved = browser.cookies()
    session = next(c for c in saved if c["name"] == "tokmodel_console")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    page.click("form.logout button")
    page.wait_for_url(re.compile(r"/console/login\?m=out$"))
    browser.clear_cookies()
    browser.add_cookies(saved)  # the cookie as it was copied before logging out
    page.goto(f"{gateway.url}/console")
    assert page.url.endswith("/console/login?m=ended")
    assert "Log in" in page.content()


class _Attacker(BaseHTTPRequestHandler):
    """A page on another port of 127.0.0.1: it plants its own login-form cookie (cookies do
    not separate ports) and posts the attacker's key to the gateway's login form."""

    page = b""
    cookie = ""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Set-Cookie", self.cookie)
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


@pytest.fixture
def attacker_site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_login_form_posted_from_another_port_is_refused(browser, gateway, attacker_site):
    attacker_key = new_account(gateway, "browser-attacker")
    login_page = requests.get(f"{gateway.url}/console/login", timeout=10)
    nonce = login_page.cookies["tokmodel_login"]
    token = CSRF.search(login_page.text).group(1)
    _Attacker.cookie = f"tokmodel_login={nonce}; Path=/console"
    _Attacker.page = (
        "<!doctype html><form id=f method=post "
        f'action="{gateway.url}/console/login">'
        f'<input name=csrf value="{escape(token)}"><input name=key value="{attacker_key}">'
        "</form><script>document.getElementById('f').submit()</script>").encode()
    page = browser.new_page()
    with page.expect_navigation(url=f"{gateway.url}/console/login") as navigation:
        page.goto(f"http://127.0.0.1:{attacker_site.server_port}/")
    response = navigation.value
    assert response.status == 403
    assert "another site" in page.content()
    assert not [c for c in browser.cookies() if c["name"] == "tokmodel_console"]
    page.goto(f"{gateway.url}/console")
    assert page.url.endswith("/console/login")  # not logged in as the attacker


def test_reloading_the_new_key_page_creates_no_second_key(browser, gateway):
    secret = new_account(gateway, "browser-keys")
    page = browser.new_page()
    log_in(page, gateway, secret)
    page.goto(f"{gateway.url}/console/keys")
    page.fill("input[name=name]", "prod-server")
    page.click("form[action='/console/keys'] button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/keys/created")
    (shown,) = set(SECRET.findall(page.content()))
    assert gateway.store.authenticate(shown).name == "prod-server"
    assert f"{gateway.url}/v1" in page.inner_text("#base-url")
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.url)
    page.click("button[data-copy]")  # shown by the console's script, allowed by its CSP
    page.wait_for_selector("button[data-copy]:has-text('Copied')")  # the copy is async
    assert page.evaluate("navigator.clipboard.readText()") == shown
    page.reload()
    assert page.url.endswith("/console/keys?done=shown")
    assert not SECRET.search(page.content())
    assert [k.name for k in gateway.store.list_keys("browser-keys")] == ["login", "prod-server"]


def create_key(page, gw: Gateway, name: str, manage: bool) -> str:
    """Create a key on the keys page, ticking "Management key" or not; the secret shown."""
    page.goto(f"{gw.url}/console/keys")
    page.fill("input[name=name]", name)
    assert not page.is_checked("#manage")  # off by default
    if manage:
        page.check("label[for=manage]")  # the label's text ticks the box, as a user would
    page.click("form[action='/console/keys'] button[type=submit]")
    page.wait_for_url(f"{gw.url}/console/keys/created")
    (shown,) = set(SECRET.findall(page.content()))
    page.click("text=I have copied the key")
    page.wait_for_url(re.compile(r"/console/keys"))
    return shown


def test_a_management_key_makes_a_management_key_and_an_inference_key(browser, gateway):
    secret = new_account(gateway, "browser-manage")
    page = browser.new_page()
    log_in(page, gateway, secret)
    page.goto(f"{gateway.url}/console/keys")
    assert "Management key" in page.inner_text("label[for=manage]")
    deputy = create_key(page, gateway, "deputy", manage=True)
    batch = create_key(page, gateway, "batch-job", manage=False)
    rows = page.locator("table.data tbody tr")
    tagged = {rows.nth(i).locator("td").first.inner_text().split()[0]
              for i in range(rows.count())
              if rows.nth(i).locator("td").first.locator(".tag:text('management')").count()}
    assert tagged == {"login", "deputy"}
    page.click("form.logout button")
    page.wait_for_url(re.compile(r"/console/login\?m=out$"))
    log_in(page, gateway, deputy)  # the new management key opens the console
    assert "browser-manage" in page.content()
    page.click("form.logout button")
    page.wait_for_url(re.compile(r"/console/login\?m=out$"))
    page.fill("#key", batch)
    with page.expect_response(f"{gateway.url}/console/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 403
    assert "That is an inference key" in page.content()
    assert {k.name: k.manage for k in gateway.store.list_keys("browser-manage")} == {
        "login": True, "deputy": True, "batch-job": False}


def test_ten_bad_logins_then_even_the_right_key_waits(browser, own_gateway):
    secret = new_account(own_gateway, "browser-throttle")
    page = browser.new_page()
    for n in range(10):
        page.goto(f"{own_gateway.url}/console/login")
        page.fill("#key", f"tm-{n:043d}")
        page.click("button[type=submit]")
        assert "That key was not accepted" in page.content()
    page.goto(f"{own_gateway.url}/console/login")
    page.fill("#key", secret)
    with page.expect_response(f"{own_gateway.url}/console/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 429
    assert "Too many failed logins. Try again after" in page.content()
    assert int(answer.value.headers["retry-after"]) > 0
    page.goto(f"{own_gateway.url}/console")
    assert page.url.endswith("/console/login")
