"""The operator's HTTP API under /admin/v1 (specs/admin.openapi.yaml).

Contract:
- Off unless `TOKMODEL_ADMIN_TOKEN` is set: then every /admin/v1 path is a 404 saying so.
- Every request needs `Authorization: Bearer <TOKMODEL_ADMIN_TOKEN>`, compared in constant
  time (runtime.console.admin.token_matches): missing or wrong is a 401; an API key of an
  account is a 403 (keys never reach the operator's API, whatever their kind).
- Bodies are validated against the spec (runtime.admin.body); amounts are exact JSON numbers
  of credits both ways; errors are the gateway's JSON envelope naming the field.
- Accounts: create, list, show, disable, enable; top-ups: add, history (ledger entries, in
  keyset pages: `limit`, `cursor`, `next_cursor`, like usage);
  keys: create (the secret once, as `key`), list per account, show, PATCH name/manage,
  DELETE revokes; usage: pages, CSV, totals, daily series (runtime.admin.usage).
"""

from __future__ import annotations

from typing import Any

import falcon

from runtime.admin import usage
from runtime.admin.body import read_body, spec_json, to_nano
from runtime.admin.jsonout import Credits
from runtime.console.admin import token_matches
from runtime.errors import BadRequest, GatewayError, NotFound
from runtime.store import Account, AccountExists, AccountNotFound, KeyRecord, Store
from runtime.store.keys import looks_like_secret

PREFIX = "/admin/v1"
OFF = ("The admin API is off: set TOKMODEL_ADMIN_TOKEN on the gateway to turn it on.")


def account_json(account: Account) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "balance": Credits(account.balance_nano),
            "debt": Credits(account.debt_nano), "disabled": account.disabled_at is not None,
            "disabled_at": account.disabled_at, "created_at": account.created_at}


def key_json(key: KeyRecord) -> dict[str, Any]:
    return {"id": key.id, "account": key.account_name, "name": key.name,
            "prefix": key.display_prefix, "manage": key.manage,
            "revoked": key.revoked_at is not None, "created_at": key.created_at,
            "revoked_at": key.revoked_at}


class _Guard:
    """Falcon middleware-free check run first by every resource below."""

    def __init__(self, store: Store, token: str | None) -> None:
        self.store = store
        self.token = token

    def check(self, req: falcon.Request) -> None:
        if not self.token:
            raise NotFound(OFF)
        header = req.get_header("Authorization") or ""
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise GatewayError("Missing admin token: send Authorization: Bearer "
                               "<TOKMODEL_ADMIN_TOKEN>.", status=401,
                               type="authentication_error",
                               headers={"WWW-Authenticate": "Bearer"})
        if token_matches(given, self.token):
            return
        if looks_like_secret(given):
            raise GatewayError("API keys cannot use the admin API; it takes the operator's "
                               "admin token.", status=403, type="authorization_error")
        raise GatewayError("Invalid admin token.", status=401, type="authentication_error",
                           headers={"WWW-Authenticate": "Bearer"})

    def account(self, name: str) -> Account:
        account = self.store.get_account(name)
        if account is None:
            raise NotFound(f"No account named {name!r}.", param="name")
        return account

    def key(self, key_id: str) -> KeyRecord:
        key = self.store.get_key(key_id) if len(key_id) <= 64 else None
        if key is None:
            raise NotFound(f"No key {key_id!r}.", param="id")
        return key


class OpenAPI(_Guard):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.check(req)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = spec_json()


class Accounts(_Guard):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.check(req)
        usage.send(resp, {"data": [account_json(a) for a in self.store.list_accounts()]})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.check(req)
        body = read_body(req, "AccountCreate")
        credits = to_nano(body.get("credits", 0), "credits")
        try:
            account = self.store.create_account(body["name"].strip(), credits)
        except AccountExists:
            raise GatewayError(f"An account named {body['name']!r} already exists.",
                               status=409, type="invalid_request_error", param="name") from None
        usage.send(resp, account_json(account), 201)


class OneAccount(_Guard):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.check(req)
        usage.send(resp, account_json(self.account(name)))

    def _toggle(self, req: falcon.Request, resp: falcon.Response, name: str,
                disabled: bool) -> None:
        self.check(req)
        try:
            account = self.store.set_account_disabled(name, disabled)
        except AccountNotFound:
            raise NotFound(f"No account named {name!r}.", param="name") from None
        usage.send(resp, account_json(account))

    def on_post_disable(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._toggle(req, resp, name, True)

    def on_post_enable(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._toggle(req, resp, name, False)

    def on_get_topups(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """One keyset page of the account's top-ups, newest first (`limit`, `cursor`)."""
        self.check(req)
        limit = usage.page_limit(req)
        try:
            entries, cursor = self.store.topups(name, limit, req.get_param("cursor"))
        except AccountNotFound:
            raise NotFound(f"No account named {name!r}.", param="name") from None
        except ValueError:
            raise BadRequest("Invalid query: cursor is not a next_cursor of this API.",
                             param="cursor") from None
        usage.send(resp, {"data": [{"id": e["reference"], "amount": Credits(e["amount_nano"]),
                                    "note": e["note"], "created_at": e["created_at"]}
                                   for e in entries], "next_cursor": cursor})

    def on_post_topups(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.check(req)
        body = read_body(req, "TopupCreate")
        amount = to_nano(body["amount"], "amount")
        try:
            account = self.store.topup(name, amount, body.get("note"))
        except AccountNotFound:
            raise NotFound(f"No account named {name!r}.", param="name") from None
        except ValueError:
            raise GatewayError("Invalid request: amount: that top-up would exceed the largest "
                               "balance an account can hold.", status=400,
                               type="invalid_request_error", param="amount") from None
        usage.send(resp, account_json(account), 201)


class Keys(_Guard):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.check(req)
        name = req.get_param("account")
        if not name:
            raise GatewayError("Invalid query: account is required.", status=400,
                               type="invalid_request_error", param="account")
        self.account(name)
        usage.send(resp, {"data": [key_json(k) for k in self.store.list_keys(name)]})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.check(req)
        body = read_body(req, "KeyCreate")
        try:
            record, secret = self.store.create_key(body["account"],
                                                   body.get("name", "default").strip(),
                                                   manage=body.get("manage", False))
        except AccountNotFound:
            raise NotFound(f"No account named {body['account']!r}.", param="account") from None
        usage.send(resp, {**key_json(record), "key": secret}, 201)


class OneKey(_Guard):
    def on_get(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        self.check(req)
        usage.send(resp, key_json(self.key(key_id)))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        self.check(req)
        body = read_body(req, "KeyUpdate")
        key = self.key(key_id)
        if "name" in body:
            self.store.rename_key(key.id, body["name"].strip())
        if "manage" in body:
            self.store.set_key_manage(key.id, body["manage"])
        usage.send(resp, key_json(self.key(key_id)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        self.check(req)
        key = self.key(key_id)
        self.store.revoke_key(key.id)
        usage.send(resp, key_json(self.key(key_id)))


class Usage(_Guard):
    def _filter(self, req: falcon.Request) -> usage.UsageFilter:
        self.check(req)
        name = req.get_param("account")
        return usage.usage_filter(req, None if name is None else self.account(name).id)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage.answer_page(req, resp, self.store, self._filter(req))

    def on_get_totals(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage.answer_totals(resp, self.store, self._filter(req))

    def on_get_daily(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage.answer_daily(resp, self.store, self._filter(req))


class Unknown(_Guard):
    """Any other /admin/v1 path: off, unauthorized, or a 404 naming the spec."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, rest: str) -> None:
        self.check(req)
        raise NotFound(f"Unknown admin API path {req.path}; see {PREFIX}/openapi.json.")

    on_post = on_patch = on_delete = on_put = on_get


def add_admin_api(app: falcon.App, store: Store, token: str | None) -> None:
    app.add_route(f"{PREFIX}/openapi.json", OpenAPI(store, token))
    app.add_route(f"{PREFIX}/accounts", Accounts(store, token))
    account = OneAccount(store, token)
    app.add_route(f"{PREFIX}/accounts/{{name}}", account)
    for action in ("disable", "enable", "topups"):
        app.add_route(f"{PREFIX}/accounts/{{name}}/{action}", account, suffix=action)
    app.add_route(f"{PREFIX}/keys", Keys(store, token))
    app.add_route(f"{PREFIX}/keys/{{key_id}}", OneKey(store, token))
    use = Usage(store, token)
    app.add_route(f"{PREFIX}/usage", use)
    app.add_route(f"{PREFIX}/usage/totals", use, suffix="totals")
    app.add_route(f"{PREFIX}/usage/daily", use, suffix="daily")
    app.add_route(f"{PREFIX}/{{rest:path}}", Unknown(store, token))
