"""The own-account API for API keys (any kind): GET /v1/account and /v1/account/usage.

Contract:
- Authenticated like every /v1 endpoint (runtime.gateway.Gateway.authenticate): a missing or
  revoked key is a 401, a disabled account's key a 403 `account_disabled`.
- /v1/account: the account's name, balance and debt, and this key's id, name, kind
  (`manage`), limits (null while keys carry none) and spend (total, today, this month, in
  UTC, over the usage rows kept).
- /v1/account/usage (and /totals, /daily): the admin usage filters and paging
  (runtime.admin.usage) on this account only; a `key` of another account is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime

import falcon

from runtime.admin import usage
from runtime.admin.jsonout import Credits
from runtime.errors import NotFound
from runtime.gateway import Gateway
from runtime.store.usage_queries import UsageFilter


class AccountInfo:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = self.gw.authenticate(req)
        store = self.gw.store
        account = store.get_account_by_id(key.account_id)
        if account is None:  # deleted between the two reads
            raise NotFound("This key's account no longer exists.")
        now = datetime.now(UTC)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)

        def spent(since: datetime | None) -> Credits:
            where = UsageFilter(account_id=key.account_id, key_id=key.id, since=since)
            return Credits(store.usage_totals(where).cost_nano)

        usage.send(resp, {
            "name": account.name, "balance": Credits(account.balance_nano),
            "debt": Credits(account.debt_nano),
            "key": {"id": key.id, "name": key.name, "prefix": key.display_prefix,
                    "manage": key.manage, "created_at": key.created_at,
                    "limits": getattr(key, "limits", None),
                    "spend": {"total": spent(None), "today": spent(day),
                              "month": spent(day.replace(day=1))}}})


class AccountUsage:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def _filter(self, req: falcon.Request) -> UsageFilter:
        key = self.gw.authenticate(req)
        where = usage.usage_filter(req, key.account_id)
        if where.key_id is not None and where.key_id != key.id:
            other = self.gw.store.get_key(where.key_id) if len(where.key_id) <= 64 else None
            if other is None or other.account_id != key.account_id:
                raise NotFound(f"No key {where.key_id!r} in this account.", param="key")
        return where

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage.answer_page(req, resp, self.gw.store, self._filter(req))

    def on_get_totals(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage.answer_totals(resp, self.gw.store, self._filter(req))

    def on_get_daily(self, req: falcon.Request, resp: falcon.Response) -> None:
        usage.answer_daily(resp, self.gw.store, self._filter(req))


def add_account_api(app: falcon.App, gateway: Gateway) -> None:
    app.add_route("/v1/account", AccountInfo(gateway))
    use = AccountUsage(gateway)
    app.add_route("/v1/account/usage", use)
    app.add_route("/v1/account/usage/totals", use, suffix="totals")
    app.add_route("/v1/account/usage/daily", use, suffix="daily")
