"""Governance over HTTP: the operator's admin API (/admin/v1, runtime.admin.api), the
own-account API for API keys (/v1/account, runtime.admin.account), the usage endpoints both
share (runtime.admin.usage), the retention task for usage and audit-log rows
(runtime.admin.retention) and the task that folds usage rows into daily sums
(runtime.admin.rollup).

`add_governance_routes(app, gateway, env)` adds both APIs to the app; the admin token is
read from `TOKMODEL_ADMIN_TOKEN` here, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import falcon

from runtime.admin.account import add_account_api
from runtime.admin.api import add_admin_api
from runtime.gateway import Gateway

ADMIN_TOKEN_ENV = "TOKMODEL_ADMIN_TOKEN"


def add_governance_routes(app: falcon.App, gateway: Gateway,
                          env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    add_admin_api(app, gateway.store, env.get(ADMIN_TOKEN_ENV) or None)
    add_account_api(app, gateway)
