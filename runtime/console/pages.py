"""The account's console pages: login with an API key, dashboard, API keys, usage.

Contract:
- Logging in takes one of the account's live API keys; the session cookie names the account
  and the key, and every request re-reads that key: once it is revoked (from any process)
  the next page sends the browser back to the login page.
- Every POST checks the CSRF token bound to the session (or, on the login form, to the
  pre-login nonce cookie) and answers with a 303 redirect, except key creation, whose
  answer is the only page that ever shows the new secret (never cached, never re-shown).
- A key id in a URL that does not belong to the logged-in account is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass

import falcon

from runtime.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Console,
    PageError,
    Redirect,
    clear_cookie,
    login_binding,
    read_form,
    require_csrf,
    set_cookie,
)
from runtime.store import Account, KeyRecord
from runtime.store.store import MAX_NAME_LENGTH
from runtime.store.usage_queries import UsageFilter

DASHBOARD_ROWS = 20

LOGIN_NOTICES = {
    "ended": "Your session has ended. Log in again.",
    "out": "You are logged out.",
    "revoked": "The key you logged in with is revoked, so you are logged out.",
}
KEY_NOTICES = {
    "renamed": "Key renamed.",
    "limits": "Limits saved. They apply from the key's next request.",
    "revoked": "Key revoked. Requests made with it are refused from now on.",
}
LOGIN_FAILED = "That key was not accepted. Check it and try again."
NOT_A_MANAGEMENT_KEY = ("That is an inference key: it can call the API but not open the "
                        "console. Log in with a management key of this account (ask your "
                        "operator for one if you have none).")
ACCOUNT_DISABLED = "This account is disabled. Contact the gateway's operator."


def login_refusal(key: KeyRecord | None) -> str:
    """Why this key may not open the console ("" when it may): only live management keys
    of enabled accounts do."""
    if key is None:
        return LOGIN_FAILED
    if key.account_disabled:
        return ACCOUNT_DISABLED
    return "" if key.manage else NOT_A_MANAGEMENT_KEY


@dataclass(frozen=True, slots=True)
class Viewer:
    """The logged-in account, the key it logged in with and its CSRF token."""

    account: Account
    key: KeyRecord
    binding: str
    csrf: str


def current_viewer(console: Console, req: falcon.Request) -> Viewer:
    """The session's account, or a redirect to the login page (clearing a dead cookie)."""
    value = req.cookies.get(SESSION_COOKIE)
    if not value:
        raise Redirect("/console/login")
    session = console.signer.read_account(value)
    key = console.store.get_key(session.key_id) if session else None
    if (session is None or key is None or key.revoked_at is not None
            or key.account_id != session.account_id or login_refusal(key)):
        raise Redirect("/console/login?m=ended", clear=[SESSION_COOKIE])
    account = console.store.get_account_by_id(session.account_id)
    if account is None:
        raise Redirect("/console/login?m=ended", clear=[SESSION_COOKIE])
    return Viewer(account, key, session.mac, console.signer.csrf_token(session.mac))


def clean_name(value: str | None, what: str) -> str:
    """A trimmed, non-empty name that the store accepts, or a ValueError for the form."""
    name = (value or "").strip()
    if not name:
        raise ValueError(f"Enter a {what}.")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"A {what} has at most {MAX_NAME_LENGTH} characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValueError(f"A {what} cannot contain control characters.")
    return name


def account_page(viewer: Viewer, active: str) -> dict[str, object]:
    """The context every account page shares (navigation, CSRF token, who is logged in)."""
    return {"nav": "account", "active": active, "csrf": viewer.csrf,
            "viewer": viewer.account.name}


class Login:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.cookies.get(SESSION_COOKIE):
            try:
                current_viewer(self.console, req)
            except Redirect:
                clear_cookie(resp, SESSION_COOKIE)
            else:
                raise Redirect("/console")
        binding = login_binding(req, resp)
        self.console.render(resp, "login.html", csrf=self.console.signer.csrf_token(binding),
                            notice=LOGIN_NOTICES.get(req.get_param("m") or "", ""))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = read_form(req)
        binding = login_binding(req)
        require_csrf(self.console, binding, form)
        secret = form.get("key", "").strip()
        key = self.console.store.authenticate(secret) if secret else None
        error = login_refusal(key)
        if error:
            self.console.render(resp, "login.html", status=400 if key is None else 403,
                                error=error, csrf=self.console.signer.csrf_token(binding))
            return
        set_cookie(req, resp, SESSION_COOKIE,
                   self.console.signer.account_cookie(key.account_id, key.id))
        clear_cookie(resp, LOGIN_COOKIE)
        raise Redirect("/console")


class Logout:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        require_csrf(self.console, viewer.binding, read_form(req))
        raise Redirect("/console/login?m=out", clear=[SESSION_COOKIE])


class Dashboard:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        store = self.console.store
        keys = store.list_keys(viewer.account.name)
        self.console.render(
            resp, "dashboard.html", **account_page(viewer, "dashboard"),
            account=viewer.account,
            active_keys=sum(1 for key in keys if key.revoked_at is None),
            total_keys=len(keys),
            rows=store.usage_page(UsageFilter(account_id=viewer.account.id),
                                         DASHBOARD_ROWS)[0],
            key_names={key.id: key.name for key in keys},
        )


class Keys:
    def __init__(self, console: Console) -> None:
        self.console = console

    def _list(self, resp: falcon.Response, viewer: Viewer, status: int = 200,
              error: str = "", name: str = "", notice: str = "") -> None:
        keys = self.console.store.list_keys(viewer.account.name)
        self.console.render(resp, "keys.html", status=status, **account_page(viewer, "keys"),
                            keys=keys,
                            spend=self.console.store.spend_by_key([k.id for k in keys]),
                            current_key=viewer.key.id, error=error, name=name, notice=notice)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        self._list(resp, viewer, notice=KEY_NOTICES.get(req.get_param("done") or "", ""))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        form = read_form(req)
        require_csrf(self.console, viewer.binding, form)
        try:
            name = clean_name(form.get("name"), "key name")
        except ValueError as exc:
            self._list(resp, viewer, status=400, error=str(exc), name=form.get("name", ""))
            return
        record, secret = self.console.store.create_key(viewer.account.name, name)
        self.console.render(resp, "key_created.html", **account_page(viewer, "keys"),
                            key=record, secret=secret, back="/console/keys",
                            owner=viewer.account.name)


class KeyActions:
    """/console/keys/{key_id}/rename and /revoke: a form page (GET) and its action (POST)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _own_key(self, viewer: Viewer, key_id: str) -> KeyRecord:
        key = self.console.store.get_key(key_id) if len(key_id) <= 64 else None
        if key is None or key.account_id != viewer.account.id:
            raise PageError(404, "There is no such key in this account.")
        return key

    def _renameaccount_page(self, resp: falcon.Response, viewer: Viewer, key: KeyRecord,
                     status: int = 200, error: str = "", name: str | None = None) -> None:
        self.console.render(resp, "key_rename.html", status=status, **account_page(viewer, "keys"),
                            key=key, error=error, name=key.name if name is None else name)

    def on_get_rename(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        self._renameaccount_page(resp, viewer, self._own_key(viewer, key_id))

    def on_post_rename(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        form = read_form(req)
        require_csrf(self.console, viewer.binding, form)
        key = self._own_key(viewer, key_id)
        try:
            name = clean_name(form.get("name"), "key name")
        except ValueError as exc:
            self._renameaccount_page(resp, viewer, key, 400, str(exc), form.get("name", ""))
            return
        self.console.store.rename_key(key.id, name)
        raise Redirect("/console/keys?done=renamed")

    def on_get_revoke(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        key = self._own_key(viewer, key_id)
        self.console.render(resp, "key_revoke.html", **account_page(viewer, "keys"), key=key,
                            is_current=key.id == viewer.key.id)

    def on_post_revoke(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        form = read_form(req)
        require_csrf(self.console, viewer.binding, form)
        key = self._own_key(viewer, key_id)
        self.console.store.revoke_key(key.id)
        if key.id == viewer.key.id:
            raise Redirect("/console/login?m=revoked", clear=[SESSION_COOKIE])
        raise Redirect("/console/keys?done=revoked")


class Stylesheet:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/css; charset=utf-8"
        resp.data = self.console.stylesheet
        resp.set_header("Cache-Control", "public, max-age=3600")
        resp.set_header("X-Content-Type-Options", "nosniff")


def add_account_routes(app: falcon.App, console: Console) -> None:
    app.add_route("/console", Dashboard(console))
    app.add_route("/console/login", Login(console))
    app.add_route("/console/logout", Logout(console))
    app.add_route("/console/keys", Keys(console))
    actions = KeyActions(console)
    app.add_route("/console/keys/{key_id}/rename", actions, suffix="rename")
    app.add_route("/console/keys/{key_id}/revoke", actions, suffix="revoke")
    app.add_route("/console/static/console.css", Stylesheet(console))
