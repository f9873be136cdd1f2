"""The account's console pages: login with an API key, dashboard, API keys, usage.

Contract:
- Logging in takes one of the account's live API keys and opens a server-side session
  (runtime.console.sessions) tied to that key; every page re-reads the session and the key:
  logging out, revoking the key or the session's expiry ends it at once, on every worker.
- Logins are throttled per client address and key prefix (`check_throttle`,
  runtime.console.throttle: in Redis when TOKMODEL_REDIS_URL is set, else in the database)
  and every attempt is audited (runtime.console.audit); the secret itself is never logged.
- Every POST is refused from another origin, checks the CSRF token bound to the session (or,
  on the login form, to the pre-login nonce cookie) and answers with a 303 redirect. A new
  key's secret is kept in the session for one display: POST /console/keys redirects to
  /console/keys/created, which shows it once; a reload shows it no more and creates nothing.
- A key id in a URL that does not belong to the logged-in account is a 404.
- Only management keys log in. A management key creates inference keys, or management keys
  when the form's "Management key" box is ticked (`manage=1`; off by default); the audit log
  says which kind was made. The keys page tags the management keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import falcon

from runtime.console.audit import log as audit_log
from runtime.console.sessions import ACCOUNT, Session
from runtime.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Console,
    PageError,
    Redirect,
    clear_cookie,
    login_binding,
    require_csrf,
    set_cookie,
)
from runtime.store import Account, KeyRecord
from runtime.store import keys as keylib
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
    "shown": ("That key's secret was shown once and is not shown again. If you did not copy "
              "it, revoke the key and create a new one."),
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
    session: Session
    csrf: str

    @property
    def binding(self) -> str:
        return self.session.binding

    @property
    def actor(self) -> str:
        return f"key:{self.key.id}"


def current_viewer(console: Console, req: falcon.Request) -> Viewer:
    """The session's account, or a redirect to the login page (clearing a dead cookie)."""
    value = req.cookies.get(SESSION_COOKIE)
    if not value:
        raise Redirect("/console/login")
    session = console.sessions.read(ACCOUNT, value)
    key = console.store.get_key(session.key_id) if session and session.key_id else None
    account = console.store.get_account_by_id(session.account_id) if key else None
    if (session is None or key is None or key.revoked_at is not None
            or key.account_id != session.account_id or account is None
            or login_refusal(key)):
        if session is not None:
            console.sessions.end(session)
        raise Redirect("/console/login?m=ended", clear=[SESSION_COOKIE])
    return Viewer(account, key, session, console.signer.csrf_token(session.binding))


def key_prefix(secret: str) -> str | None:
    """What a login attempt may log of the key typed: its display prefix, when it has a key's
    shape (anything else, such as a pasted password, leaves no trace)."""
    return keylib.display_prefix(secret) if keylib.looks_like_secret(secret) else None


def check_throttle(console: Console, client: str, prefix: str | None) -> None:
    """A 429 page saying when to retry, once too many logins failed from `client` or for
    `prefix` (runtime.console.throttle)."""
    until = console.throttle.retry_at(client, prefix)
    if until is None:
        return
    # a line, not a row: refused attempts must not grow the table at the attacker's pace
    audit_log.warning("console login refused, too many failures client=%s key_prefix=%s",
                      client, prefix or "-")
    wait = max(1, int((until - datetime.now(UTC)).total_seconds()) + 1)
    raise PageError(429, "Too many failed logins. Try again after "
                         f"{until.strftime('%H:%M:%S')} UTC (in {(wait + 59) // 60} min).",
                    headers={"Retry-After": str(wait)})


def wants_management_key(form: dict[str, str]) -> bool:
    """The create-key form's "Management key" checkbox (unticked, or absent: an inference
    key)."""
    return form.get("manage") == "1"


def key_kind(key: KeyRecord) -> str:
    """How the audit log names a new key's kind."""
    return "management key" if key.manage else "inference key"


def remember_secret(console: Console, session: Session, record: KeyRecord, secret: str,
                    back: str) -> None:
    """Keep a new key's secret in the session for the one page that shows it."""
    console.sessions.put_flash(session, json.dumps(
        {"key": record.id, "secret": secret, "back": back}))


def show_secret_once(console: Console, req: falcon.Request, resp: falcon.Response,
                     session: Session, page: dict[str, object], otherwise: str) -> None:
    """The new-key page, or, once it has been shown, a redirect to `otherwise`."""
    raw = console.sessions.take_flash(session)
    shown = json.loads(raw) if raw else None
    key = console.store.get_key(shown["key"]) if shown else None
    if shown is None or key is None:
        raise Redirect(otherwise)
    console.render(resp, "key_created.html", **page, key=key, secret=shown["secret"],
                   back=shown["back"], owner=key.account_name,
                   base_url=console.base_url(req))


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
        binding = login_binding(req, resp, self.console)
        self.console.render(resp, "login.html", csrf=self.console.signer.csrf_token(binding),
                            notice=LOGIN_NOTICES.get(req.get_param("m") or "", ""))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        console = self.console
        form = console.form(req)
        binding = login_binding(req)
        require_csrf(console, binding, form)
        secret = form.get("key", "").strip()
        prefix = key_prefix(secret)
        client = console.client(req)
        check_throttle(console, client, prefix)
        key = console.store.authenticate(secret) if secret else None
        error = login_refusal(key)
        if error:
            # a wrong key is a failure that counts; a right key of the wrong kind is not
            console.audit.record("login_failed" if key is None else "login_refused",
                                 f"key:{key.id}" if key else "key:?", client,
                                 key_prefix=prefix, account_id=key and key.account_id,
                                 key_id=key and key.id)
            if key is None:
                console.throttle.failed(client, prefix)
            console.render(resp, "login.html", status=400 if key is None else 403,
                           error=error, csrf=console.signer.csrf_token(binding))
            return
        console.audit.record("login", f"key:{key.id}", client, key_prefix=prefix,
                             account_id=key.account_id, key_id=key.id)
        session_id = console.sessions.open(ACCOUNT, key.account_id, key.id)
        set_cookie(console, req, resp, SESSION_COOKIE, session_id)
        clear_cookie(resp, LOGIN_COOKIE)
        raise Redirect("/console")


class Logout:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        require_csrf(self.console, viewer.binding, self.console.form(req))
        self.console.sessions.end(viewer.session)
        self.console.audit.record("logout", viewer.actor, self.console.client(req),
                                  account_id=viewer.account.id, key_id=viewer.key.id)
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
              error: str = "", name: str = "", notice: str = "", manage: bool = False) -> None:
        keys = self.console.store.list_keys(viewer.account.name)
        self.console.render(resp, "keys.html", status=status, **account_page(viewer, "keys"),
                            keys=keys,
                            spend=self.console.store.spend_by_key([k.id for k in keys]),
                            current_key=viewer.key.id, error=error, name=name, notice=notice,
                            manage=manage)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        self._list(resp, viewer, notice=KEY_NOTICES.get(req.get_param("done") or "", ""))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        form = self.console.form(req)
        require_csrf(self.console, viewer.binding, form)
        manage = wants_management_key(form)
        try:
            name = clean_name(form.get("name"), "key name")
        except ValueError as exc:
            self._list(resp, viewer, status=400, error=str(exc), name=form.get("name", ""),
                       manage=manage)
            return
        record, secret = self.console.store.create_key(viewer.account.name, name,
                                                       manage=manage)
        self.console.audit.record("key_create", viewer.actor, self.console.client(req),
                                  account_id=viewer.account.id, key_id=record.id,
                                  detail=key_kind(record))
        remember_secret(self.console, viewer.session, record, secret, "/console/keys")
        raise Redirect("/console/keys/created")


class KeyCreated:
    """GET /console/keys/created: the new key's secret, once."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        show_secret_once(self.console, req, resp, viewer.session, account_page(viewer, "keys"),
                         "/console/keys?done=shown")


def own_key(console: Console, viewer: Viewer, key_id: str) -> KeyRecord:
    """The viewer's account's key of that id; any other id is a 404."""
    key = console.store.get_key(key_id) if len(key_id) <= 64 else None
    if key is None or key.account_id != viewer.account.id:
        raise PageError(404, "There is no such key in this account.")
    return key


class KeyActions:
    """/console/keys/{key_id}/rename and /revoke: a form page (GET) and its action (POST)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _own_key(self, viewer: Viewer, key_id: str) -> KeyRecord:
        return own_key(self.console, viewer, key_id)

    def _rename_page(self, resp: falcon.Response, viewer: Viewer, key: KeyRecord,
                     status: int = 200, error: str = "", name: str | None = None) -> None:
        self.console.render(resp, "key_rename.html", status=status, **account_page(viewer, "keys"),
                            key=key, error=error, name=key.name if name is None else name)

    def on_get_rename(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        self._rename_page(resp, viewer, self._own_key(viewer, key_id))

    def on_post_rename(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        form = self.console.form(req)
        require_csrf(self.console, viewer.binding, form)
        key = self._own_key(viewer, key_id)
        try:
            name = clean_name(form.get("name"), "key name")
        except ValueError as exc:
            self._rename_page(resp, viewer, key, 400, str(exc), form.get("name", ""))
            return
        self.console.store.rename_key(key.id, name)
        self.console.audit.record("key_rename", viewer.actor, self.console.client(req),
                                  account_id=viewer.account.id, key_id=key.id)
        raise Redirect("/console/keys?done=renamed")

    def on_get_revoke(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        key = self._own_key(viewer, key_id)
        self.console.render(resp, "key_revoke.html", **account_page(viewer, "keys"), key=key,
                            is_current=key.id == viewer.key.id)

    def on_post_revoke(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        form = self.console.form(req)
        require_csrf(self.console, viewer.binding, form)
        key = self._own_key(viewer, key_id)
        self.console.store.revoke_key(key.id)  # ends the key's console sessions too
        self.console.audit.record("key_revoke", viewer.actor, self.console.client(req),
                                  account_id=viewer.account.id, key_id=key.id)
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


class Script:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/javascript; charset=utf-8"
        resp.data = self.console.script
        resp.set_header("Cache-Control", "public, max-age=3600")
        resp.set_header("X-Content-Type-Options", "nosniff")


def add_account_routes(app: falcon.App, console: Console) -> None:
    app.add_route("/console", Dashboard(console))
    app.add_route("/console/login", Login(console))
    app.add_route("/console/logout", Logout(console))
    app.add_route("/console/keys", Keys(console))
    app.add_route("/console/keys/created", KeyCreated(console))
    actions = KeyActions(console)
    app.add_route("/console/keys/{key_id}/rename", actions, suffix="rename")
    app.add_route("/console/keys/{key_id}/revoke", actions, suffix="revoke")
    app.add_route("/console/static/console.css", Stylesheet(console))
    app.add_route("/console/static/console.js", Script(console))
