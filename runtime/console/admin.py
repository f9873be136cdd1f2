"""Operator pages at /console/admin: accounts, balances, top-ups and keys for an account.

Contract:
- Enabled only when `TOKMODEL_ADMIN_TOKEN` is set; otherwise every /console/admin path is
  the gateway's ordinary 404, indistinguishable from an unknown path.
- The operator logs in with that token (constant-time comparison of SHA-256 digests),
  throttled per client address and audited like account logins; the server-side session
  (runtime.console.sessions) is bound to a digest of the token, so changing it logs out
  every operator. Logout ends the session at once.
- Every operator action (account creation, top-up, key creation) is written to the audit
  log with the client address. A key is created as an inference key unless the form's
  "Management key" box is ticked.
- Amounts are typed in credits and converted exactly with `parse_credits` (plain decimals
  only: no sign, no exponent, at most 9 decimals); a bad amount re-renders the form with an
  error and changes nothing. Successful POSTs redirect (303); a new key's secret is shown
  once on /console/admin/keys/created (runtime.console.pages.show_secret_once).
"""

from __future__ import annotations

import hashlib
import hmac
import re

import falcon

from runtime.billing.credits import parse_credits
from runtime.console.pages import (
    check_throttle,
    clean_name,
    key_kind,
    remember_secret,
    show_secret_once,
    wants_management_key,
)
from runtime.console.sessions import OPERATOR, Session
from runtime.console.usage import HISTORY_KINDS, history_page
from runtime.console.web import (
    ADMIN_COOKIE,
    LOGIN_COOKIE,
    Console,
    PageError,
    Redirect,
    clear_cookie,
    login_binding,
    require_csrf,
    set_cookie,
)
from runtime.store import Account, AccountExists, AccountNotFound
from runtime.store.ledger import MAX_NANO
from runtime.store.usage_queries import UsageFilter

ACCOUNT_USAGE_ROWS = 20
ACCOUNT_HISTORY_ROWS = 50
_MAX_ID = 2**63 - 1  # ids are signed 64-bit integers in the database
LOGIN_FAILED = "That token was not accepted."
ADMIN_NOTICES = {
    "created": "Account created.",
    "topup": "Credits added.",
    "revoked": "Key revoked. Requests made with it are refused from now on.",
    "disabled": "Account disabled: every request with its keys is refused (403) from now on.",
    "enabled": "Account enabled: its keys work again.",
    "out": "You are logged out.",
    "ended": "Your operator session has ended. Log in again.",
}
AMOUNT_PATTERN = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_AMOUNT_HINT = "Enter an amount of credits greater than 0, such as 12.5."


def parse_amount(text: str | None) -> int:
    """Credits typed by the operator -> nano-credits, or ValueError with a form message."""
    text = (text or "").strip()
    if not text or len(text) > 40 or not AMOUNT_PATTERN.fullmatch(text):
        raise ValueError(_AMOUNT_HINT)
    try:
        nano = parse_credits(text)
    except ValueError:
        raise ValueError("Amounts are exact to 0.000000001 credit: use at most 9 decimals."
                         ) from None
    if nano <= 0:
        raise ValueError(_AMOUNT_HINT)
    if nano > MAX_NANO:
        raise ValueError("That amount is too large.")
    return nano


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison that also hides the token's length."""
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).digest(),
                               hashlib.sha256(expected.encode("utf-8")).digest())


class _Admin:
    def __init__(self, console: Console) -> None:
        self.console = console

    def enabled(self) -> None:
        if not self.console.admin_token:
            raise falcon.HTTPNotFound()

    def session(self, req: falcon.Request) -> Session:
        """The operator session, or a redirect to the operator login."""
        self.enabled()
        value = req.cookies.get(ADMIN_COOKIE)
        if not value:
            raise Redirect("/console/admin/login")
        session = self.console.sessions.read(OPERATOR, value)
        if session is None:
            raise Redirect("/console/admin/login?m=ended", clear=[ADMIN_COOKIE])
        return session

    def page(self, session: Session) -> dict[str, object]:
        return {"nav": "admin", "csrf": self.console.signer.csrf_token(session.binding),
                "viewer": "operator"}

    def record(self, req: falcon.Request, action: str, **fields: object) -> None:
        self.console.audit.record(action, "operator", self.console.client(req), **fields)

    def account(self, account_id: int) -> Account:
        account = self.console.store.get_account_by_id(account_id)
        if account is None:
            raise PageError(404, "There is no such account.")
        return account

    def account_page(self, req: falcon.Request, resp: falcon.Response, session: Session,
                     account: Account, status: int = 200, **context: object) -> None:
        store = self.console.store
        keys = store.list_keys(account.name)
        context.setdefault("amount", "")
        context.setdefault("key_name", "")
        context.setdefault("topup_error", "")
        context.setdefault("key_error", "")
        context.setdefault("key_manage", False)
        self.console.render(resp, "admin_account.html", status=status, **self.page(session),
                            active="accounts", account=account, keys=keys,
                            rows=store.usage_page(UsageFilter(account_id=account.id),
                                                         ACCOUNT_USAGE_ROWS)[0],
                            history=history_page(store, account.id, req,
                                                 ACCOUNT_HISTORY_ROWS),
                            kinds=HISTORY_KINDS,
                            key_names={key.id: key.name for key in keys}, **context)

    def accounts_page(self, resp: falcon.Response, session: Session, status: int = 200,
                      error: str = "", name: str = "", notice: str = "") -> None:
        self.console.render(resp, "admin_accounts.html", status=status, **self.page(session),
                            active="accounts", accounts=self.console.store.list_accounts(),
                            error=error, name=name, notice=notice)


class AdminLogin(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.enabled()
        if self.console.sessions.read(OPERATOR, req.cookies.get(ADMIN_COOKIE)):
            raise Redirect("/console/admin")
        binding = login_binding(req, resp, self.console)
        self.console.render(resp, "admin_login.html", nav="admin-out",
                            csrf=self.console.signer.csrf_token(binding),
                            notice=ADMIN_NOTICES.get(req.get_param("m") or "", ""))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.enabled()
        form = self.console.form(req)
        binding = login_binding(req)
        require_csrf(self.console, binding, form)
        client = self.console.client(req)
        check_throttle(self.console, client, None)
        if not token_matches(form.get("token", ""), self.console.admin_token or ""):
            self.record(req, "operator_login_failed")
            self.console.throttle.failed(client, None)
            self.console.render(resp, "admin_login.html", status=400, nav="admin-out",
                                error=LOGIN_FAILED,
                                csrf=self.console.signer.csrf_token(binding))
            return
        self.record(req, "operator_login")
        set_cookie(self.console, req, resp, ADMIN_COOKIE,
                   self.console.sessions.open(OPERATOR))
        clear_cookie(resp, LOGIN_COOKIE)
        raise Redirect("/console/admin")


class AdminLogout(_Admin):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.session(req)
        require_csrf(self.console, session.binding, self.console.form(req))
        self.console.sessions.end(session)
        self.record(req, "operator_logout")
        raise Redirect("/console/admin/login?m=out", clear=[ADMIN_COOKIE])


class AdminAccounts(_Admin):
    """GET: every account with its balance; POST: create an account."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.session(req)
        self.accounts_page(resp, session,
                           notice=ADMIN_NOTICES.get(req.get_param("done") or "", ""))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.session(req)
        form = self.console.form(req)
        require_csrf(self.console, session.binding, form)
        try:
            name = clean_name(form.get("name"), "account name")
            account = self.console.store.create_account(name)
        except AccountExists:
            self.accounts_page(resp, session, 400, "An account with that name already exists.",
                               form.get("name", ""))
            return
        except ValueError as exc:
            self.accounts_page(resp, session, 400, str(exc), form.get("name", ""))
            return
        self.record(req, "account_create", account_id=account.id)
        raise Redirect(f"/console/admin/accounts/{account.id}?done=created")


class AdminAccount(_Admin):
    """One account: balance, keys, recent usage and money history; POST /topup, /keys,
    /keys/{key_id}/revoke and /disable."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, account_id: int) -> None:
        session = self.session(req)
        self.account_page(req, resp, session, self.account(account_id),
                          notice=ADMIN_NOTICES.get(req.get_param("done") or "", ""))

    def on_post_topup(self, req: falcon.Request, resp: falcon.Response,
                      account_id: int) -> None:
        session = self.session(req)
        form = self.console.form(req)
        require_csrf(self.console, session.binding, form)
        account = self.account(account_id)
        try:
            amount = parse_amount(form.get("amount"))
            self.console.store.topup(account.name, amount)
        except AccountNotFound:
            raise PageError(404, "There is no such account.") from None
        except ValueError as exc:
            message = str(exc)
            if "overflow" in message:
                message = "That top-up would exceed the largest balance an account can hold."
            self.account_page(req, resp, session, account, 400, topup_error=message,
                              amount=form.get("amount", ""))
            return
        self.record(req, "topup", account_id=account.id, detail=f"amount_nano={amount}")
        raise Redirect(f"/console/admin/accounts/{account.id}?done=topup")

    def on_post_disable(self, req: falcon.Request, resp: falcon.Response,
                        account_id: int) -> None:
        """Disable (form field `disabled` = "1") or enable the account."""
        session = self.session(req)
        form = self.console.form(req)
        require_csrf(self.console, session.binding, form)
        account = self.account(account_id)
        disabled = form.get("disabled") == "1"
        try:
            self.console.store.set_account_disabled(account.name, disabled)
        except AccountNotFound:
            raise PageError(404, "There is no such account.") from None
        done = "disabled" if disabled else "enabled"
        self.record(req, f"account_{done}", account_id=account.id)
        raise Redirect(f"/console/admin/accounts/{account.id}?done={done}")

    def on_post_revoke(self, req: falcon.Request, resp: falcon.Response, account_id: int,
                       key_id: str) -> None:
        """Revoke one key of the account (the key id must belong to it: else a 404)."""
        session = self.session(req)
        require_csrf(self.console, session.binding, self.console.form(req))
        account = self.account(account_id)
        key = self.console.store.get_key(key_id) if len(key_id) <= 64 else None
        if key is None or key.account_id != account.id:
            raise PageError(404, "There is no such key in this account.")
        self.console.store.revoke_key(key.id)
        self.record(req, "key_revoke", account_id=account.id, key_id=key.id)
        raise Redirect(f"/console/admin/accounts/{account.id}?done=revoked")

    def on_post_keys(self, req: falcon.Request, resp: falcon.Response,
                     account_id: int) -> None:
        session = self.session(req)
        form = self.console.form(req)
        require_csrf(self.console, session.binding, form)
        account = self.account(account_id)
        manage = wants_management_key(form)
        try:
            name = clean_name(form.get("name"), "key name")
        except ValueError as exc:
            self.account_page(req, resp, session, account, 400, key_error=str(exc),
                              key_name=form.get("name", ""), key_manage=manage)
            return
        record, secret = self.console.store.create_key(account.name, name, manage=manage)
        self.record(req, "key_create", account_id=account.id, key_id=record.id,
                    detail=key_kind(record))
        remember_secret(self.console, session, record, secret,
                        f"/console/admin/accounts/{account.id}")
        raise Redirect("/console/admin/keys/created")


class AdminKeyCreated(_Admin):
    """GET /console/admin/keys/created: the new key's secret, once."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = self.session(req)
        show_secret_once(self.console, req, resp, session,
                         dict(self.page(session), active="accounts"), "/console/admin")


def add_admin_routes(app: falcon.App, console: Console) -> None:
    accounts = AdminAccounts(console)
    app.add_route("/console/admin", accounts)
    app.add_route("/console/admin/accounts", accounts)
    app.add_route("/console/admin/login", AdminLogin(console))
    app.add_route("/console/admin/logout", AdminLogout(console))
    app.add_route("/console/admin/keys/created", AdminKeyCreated(console))
    account = AdminAccount(console)
    base = f"/console/admin/accounts/{{account_id:int(min=1, max={_MAX_ID})}}"
    app.add_route(base, account)
    app.add_route(f"{base}/topup", account, suffix="topup")
    app.add_route(f"{base}/keys", account, suffix="keys")
    app.add_route(f"{base}/keys/{{key_id}}/revoke", account, suffix="revoke")
    app.add_route(f"{base}/disable", account, suffix="disable")
