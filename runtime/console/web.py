"""Plumbing shared by the console's pages: templates, forms, cookies, headers, errors.

Contract:
- `Console` holds the store, the `Signer`, the server-side `Sessions`, the `AuditLog`, the
  login throttle (runtime.console.throttle: Redis when TOKMODEL_REDIS_URL is set, else the
  audit log's rows), the jinja2 environment (autoescape on for every template,
  StrictUndefined), the optional admin token and the `ConsoleConfig`; `Console.render`
  answers a page with security headers and `Cache-Control: no-store` (console pages show
  balances, usage and sometimes a key secret, so none of them may be cached).
- `Console.form(req)` is how every POST starts: a request from another origin is a 403
  (runtime.console.origin), then one urlencoded form body of at most `MAX_FORM_BYTES` is
  parsed (`read_form`).
- `Console.client(req)` is the client address (runtime.console.clientaddr);
  `Console.base_url(req)` the API base URL to show users.
- Raise `Redirect` for a 303 (optionally clearing cookies) and `PageError` for an HTML
  error page; `add_handlers(app, console)` installs the handlers that answer them.
- `login_binding(req, resp)` gives the pre-login CSRF binding (a random nonce cookie).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import falcon
import jinja2
from falcon.uri import parse_query_string

from runtime.billing.credits import format_credits
from runtime.console.audit import AuditLog
from runtime.console.clientaddr import TrustedProxies
from runtime.console.origin import request_origin, same_origin
from runtime.console.session import SESSION_SECONDS, Signer
from runtime.console.sessions import Sessions
from runtime.console.throttle import login_throttle
from runtime.store import Store

SESSION_COOKIE = "tokmodel_console"
ADMIN_COOKIE = "tokmodel_admin"
LOGIN_COOKIE = "tokmodel_login"
CONSOLE_PATH = "/console"
ADMIN_PATH = "/console/admin"
COOKIE_PATHS = {SESSION_COOKIE: CONSOLE_PATH, LOGIN_COOKIE: CONSOLE_PATH,
                ADMIN_COOKIE: ADMIN_PATH}
MAX_FORM_BYTES = 16 * 1024

_HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "script-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Redirect(Exception):
    """Answer 303 See Other to `location` (always a path of ours), clearing `clear` cookies."""

    def __init__(self, location: str, clear: Iterable[str] = ()) -> None:
        super().__init__(location)
        self.location = location
        self.clear = tuple(clear)


class PageError(Exception):
    """Answer an HTML error page."""

    def __init__(self, status: int, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _credits(nano: int) -> str:
    return format_credits(nano)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The console's settings (read from the environment by `add_console_routes`)."""

    public_origin: str | None = None  # TOKMODEL_PUBLIC_URL as an origin
    proxies: TrustedProxies = TrustedProxies()
    session_seconds: int = SESSION_SECONDS
    login_max_failures: int = 10
    login_window_seconds: int = 300
    redis_url: str | None = field(default=None, repr=False)  # TOKMODEL_REDIS_URL


class Console:
    """Everything the console's resources share; built once by `add_console_routes`."""

    def __init__(self, store: Store, signer: Signer, admin_token: str | None,
                 config: ConsoleConfig | None = None) -> None:
        self.store = store
        self.signer = signer
        self.admin_token = admin_token
        self.config = config = config or ConsoleConfig()
        self.sessions = Sessions(store.engine, config.session_seconds, admin_token)
        self.audit = AuditLog(store.engine, config.login_max_failures,
                              config.login_window_seconds)
        self.throttle = login_throttle(config.redis_url, self.audit)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["credits"] = _credits
        self.stylesheet = (_HERE / "static" / "console.css").read_bytes()
        self.script = (_HERE / "static" / "console.js").read_bytes()

    def origin(self, req: falcon.Request) -> str:
        return request_origin(req, self.config.public_origin, self.config.proxies)

    def base_url(self, req: falcon.Request) -> str:
        """What clients put as their OpenAI base URL."""
        return f"{self.origin(req)}/v1"

    def client(self, req: falcon.Request) -> str:
        return self.config.proxies.client_address(req)

    def form(self, req: falcon.Request) -> dict[str, str]:
        """The start of every POST: refuse another origin, then read the form."""
        if not same_origin(req, self.origin(req)):
            raise PageError(403, "This form was sent from another site, so it was refused. "
                                 "Open the console directly and try again.")
        return read_form(req)

    def https(self, req: falcon.Request) -> bool:
        origin = self.config.public_origin
        return origin.startswith("https:") if origin else is_https(req)

    def render(self, resp: falcon.Response, template: str, status: int = 200,
               **context: Any) -> None:
        context.setdefault("nav", None)
        context.setdefault("active", "")
        context.setdefault("csrf", "")
        context.setdefault("viewer", "")
        context.setdefault("notice", "")
        context.setdefault("error", "")
        resp.status = status
        resp.content_type = "text/html; charset=utf-8"
        resp.text = self.templates.get_template(template).render(**context)
        secure_headers(resp)


def secure_headers(resp: falcon.Response) -> None:
    for name, value in _SECURITY_HEADERS.items():
        resp.set_header(name, value)


def is_https(req: falcon.Request) -> bool:
    return req.forwarded_scheme == "https"


def set_cookie(console: Console, req: falcon.Request, resp: falcon.Response, name: str,
               value: str) -> None:
    resp.set_cookie(name, value, max_age=console.config.session_seconds,
                    path=COOKIE_PATHS[name], secure=console.https(req), http_only=True,
                    same_site="Lax")


def clear_cookie(resp: falcon.Response, name: str) -> None:
    resp.unset_cookie(name, same_site="Lax", path=COOKIE_PATHS[name])


def login_binding(req: falcon.Request, resp: falcon.Response | None = None,
                  console: Console | None = None) -> str | None:
    """The pre-login CSRF binding; with `resp`, a fresh nonce cookie is set when missing."""
    nonce = req.cookies.get(LOGIN_COOKIE)
    if nonce and 16 <= len(nonce) <= 64 and nonce.isascii():
        return nonce
    if resp is None or console is None:
        return None
    nonce = secrets.token_urlsafe(24)
    set_cookie(console, req, resp, LOGIN_COOKIE, nonce)
    return nonce


def read_form(req: falcon.Request) -> dict[str, str]:
    """The urlencoded form fields (a repeated field keeps its first value)."""
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise PageError(415, "Forms must be sent as application/x-www-form-urlencoded.")
    if req.content_length is not None and req.content_length > MAX_FORM_BYTES:
        raise PageError(413, "The form is too large.")
    raw = req.bounded_stream.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        raise PageError(413, "The form is too large.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PageError(400, "The form is not valid UTF-8.") from None
    fields = parse_query_string(text, keep_blank=True, csv=False)
    return {name: value if isinstance(value, str) else value[0]
            for name, value in fields.items()}


def require_csrf(console: Console, binding: str | None, form: dict[str, str]) -> None:
    if not console.signer.check_csrf(binding, form.get("csrf")):
        raise PageError(403, "This form has expired or did not come from this console. "
                             "Go back, reload the page and try again.")


def add_handlers(app: falcon.App, console: Console) -> None:
    def on_redirect(req: falcon.Request, resp: falcon.Response, ex: Redirect,
                    params: dict[str, Any]) -> None:
        resp.status = falcon.HTTP_303
        resp.location = ex.location
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = ""
        for name in ex.clear:
            clear_cookie(resp, name)
        secure_headers(resp)

    def on_page_error(req: falcon.Request, resp: falcon.Response, ex: PageError,
                      params: dict[str, Any]) -> None:
        console.render(resp, "error.html", status=ex.status, message=ex.message)
        for name, value in ex.headers.items():
            resp.set_header(name, value)

    app.add_error_handler(Redirect, on_redirect)
    app.add_error_handler(PageError, on_page_error)
