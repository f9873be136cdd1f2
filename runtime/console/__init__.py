"""The web console at /console: server-rendered pages (jinja2) for accounts and operators.

`add_console_routes(app, store, settings)` adds every console route to a Falcon app:
- /console/login ... /console/usage: an account logs in with one of its API keys and sees
  its balance, keys (create, rename, revoke) and usage (runtime.console.pages);
- /console/admin/...: operator pages, only when `TOKMODEL_ADMIN_TOKEN` is set
  (runtime.console.admin);
- /console/static/console.css: the one stylesheet.
Sessions live in the database (runtime.console.sessions); form tokens are signed with
`TOKMODEL_CONSOLE_SECRET`, or with a secret generated once into `console-secret` next to the
SQLite database (`var/console-secret` by default), mode 0600 (runtime.console.session).
Environment is read once, here:
| TOKMODEL_PUBLIC_URL | unset: origin taken from the request's Host | Origin checks, base URL |
| TOKMODEL_TRUSTED_PROXIES | unset: the socket peer is the client | addresses/CIDRs |
| TOKMODEL_CONSOLE_SESSION_SECONDS | 43200 (12 h) | a session's life from login |
| TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES | 10 | failed logins before a 429 ... |
| TOKMODEL_CONSOLE_LOGIN_WINDOW_SECONDS | 300 | ... within this window |
| TOKMODEL_REDIS_URL | unset: failed logins counted in the database | set: in this Redis |
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace

import falcon

from runtime.console.admin import add_admin_routes
from runtime.console.clientaddr import TrustedProxies
from runtime.console.key_limits import add_key_limits_routes
from runtime.console.origin import public_origin
from runtime.console.pages import add_account_routes
from runtime.console.session import SESSION_SECONDS, Signer, load_secret
from runtime.console.usage import add_usage_routes
from runtime.console.web import Console, ConsoleConfig, add_handlers
from runtime.settings import Settings
from runtime.store import Store

ADMIN_TOKEN_ENV = "TOKMODEL_ADMIN_TOKEN"
_SHORT_ADMIN_TOKEN = 16

log = logging.getLogger("tokmodel.console")

__all__ = ["ADMIN_TOKEN_ENV", "add_console_routes", "console_config"]


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name) or ""
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive whole number, not {text!r}")
    return int(text)


def console_config(env: Mapping[str, str]) -> ConsoleConfig:
    """The console's settings from the environment (ValueError naming a bad variable)."""
    public = env.get("TOKMODEL_PUBLIC_URL") or ""
    return ConsoleConfig(
        public_origin=public_origin(public) if public else None,
        proxies=TrustedProxies.parse(env.get("TOKMODEL_TRUSTED_PROXIES")),
        session_seconds=_positive(env, "TOKMODEL_CONSOLE_SESSION_SECONDS", SESSION_SECONDS),
        login_max_failures=_positive(env, "TOKMODEL_CONSOLE_LOGIN_MAX_FAILURES", 10),
        login_window_seconds=_positive(env, "TOKMODEL_CONSOLE_LOGIN_WINDOW_SECONDS", 300),
    )


def add_console_routes(app: falcon.App, store: Store, settings: Settings,
                       env: Mapping[str, str] | None = None) -> Console:
    """Add the console's routes and error handlers to `app`; return the shared state."""
    env = os.environ if env is None else env
    admin_token = env.get(ADMIN_TOKEN_ENV) or None
    if admin_token and len(admin_token) < _SHORT_ADMIN_TOKEN:
        log.warning("%s is shorter than %d characters; use a long random value",
                    ADMIN_TOKEN_ENV, _SHORT_ADMIN_TOKEN)
    signer = Signer(load_secret(settings.database_url, env))
    config = replace(console_config(env), redis_url=settings.redis_url)
    console = Console(store, signer, admin_token, config)
    add_handlers(app, console)
    add_account_routes(app, console)
    add_usage_routes(app, console)
    add_key_limits_routes(app, console)
    add_admin_routes(app, console)
    return console
