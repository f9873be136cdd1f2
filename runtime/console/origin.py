"""Where console POSTs may come from.

Contract: `public_origin(url)` turns `TOKMODEL_PUBLIC_URL` into an origin
(`scheme://host[:port]`, default port dropped; ValueError when it is not an http(s) URL).
`request_origin(req, public, proxies)` is that origin, or else the request's own: its Host
header with its scheme (the forwarded scheme when the socket peer is a trusted proxy).
`same_origin(req, expected)` is True when the `Origin` header equals the expected origin, or,
without `Origin` (or with `Origin: null`, which a browser sends under some referrer
policies), when `Sec-Fetch-Site` is `same-origin` or `none`. A page on another port of the
same host is another origin (`Sec-Fetch-Site: same-site`). Requests with neither header come
from programs, not browsers, which cannot be made to send them cross-site; `Origin: null`
without `Sec-Fetch-Site` is refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import falcon

from runtime.console.clientaddr import TrustedProxies

_DEFAULT_PORTS = {"http": 80, "https": 443}


def public_origin(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"TOKMODEL_PUBLIC_URL must be an http(s) URL, not {url!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def request_origin(req: falcon.Request, public: str | None,
                   proxies: TrustedProxies) -> str:
    if public:
        return public
    scheme = req.forwarded_scheme if proxies.trusts(req.remote_addr) else req.scheme
    host = (req.get_header("Host") or req.host).strip()
    default = f":{_DEFAULT_PORTS.get(scheme, 0)}"
    if host.endswith(default):
        host = host[:-len(default)]
    return f"{scheme}://{host}".lower()


def same_origin(req: falcon.Request, expected: str) -> bool:
    origin = (req.get_header("Origin") or "").strip().lower()
    if origin and origin != "null":
        return origin == expected.lower()
    site = req.get_header("Sec-Fetch-Site")
    if site is None:
        return not origin
    return site.strip().lower() in ("same-origin", "none")
