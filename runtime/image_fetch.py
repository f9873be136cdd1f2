"""Fetching http(s) images for providers that only take inline bytes (Gemini).

`fetch_image(url, param)` returns (MIME type, bytes) or raises `BadRequest` naming `param`:
the URL must answer 200 with an `image/*` body of at most TOKMODEL_IMAGE_FETCH_MAX_BYTES
within a connect/read timeout.

A gateway must not be a way into its own network. The host name is resolved once; every
address it resolves to is checked, and the connection goes to a checked address (the request
carries the original name in its Host header, and HTTPS uses it for SNI and the certificate
check), so a name that answers differently the second time (DNS rebinding) gains nothing.
Refused: loopback, private, link-local, CGNAT, multicast, reserved and unspecified
addresses, and IPv6 forms that embed an IPv4 address -- IPv4-mapped, IPv4-compatible, NAT64
(64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo -- get the rules of the address
they embed. TOKMODEL_IMAGE_FETCH_ALLOW_PRIVATE=1 (tests, single-host deployments) lifts the
address rules, not the single resolution. Redirects are followed by hand, at most 3, each
target resolved and checked the same way.

Settings are read on first use, so requests without URL images never touch this module.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError

from runtime.errors import BadRequest
from runtime.settings import Settings

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
MAX_REDIRECTS = 3
READ_SIZE = 65536

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")

_lock = threading.Lock()
_state: dict[str, object] = {}


def _limits() -> tuple[int, bool]:
    with _lock:
        if not _state:
            settings = Settings.from_env()
            _state["max_bytes"] = settings.image_fetch_max_bytes
            _state["allow_private"] = settings.image_fetch_allow_private
    return _state["max_bytes"], _state["allow_private"]  # type: ignore[return-value]


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (empty for a plain address)."""
    if address.version == 4:
        return []
    n = int(address)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    elif n >> 32 == 0 and n > 1:                        # IPv4-compatible ::a.b.c.d
        found.append(ipaddress.IPv4Address(n & 0xFFFFFFFF))
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(n & 0xFFFFFFFF))
    elif address in _NAT64_LOCAL:
        # RFC 6052: within a /48 prefix the address sits in bits 48-63 and 72-87; many
        # set-ups put it in the last 32 bits instead. Both must pass.
        found.append(ipaddress.IPv4Address(n & 0xFFFFFFFF))
        found.append(ipaddress.IPv4Address(((n >> 64) & 0xFFFF) << 16 | (n >> 40) & 0xFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)                   # (server, client), client unmasked
    return found


def _plain_internal(address: IPAddress) -> bool:
    return (not address.is_global or address.is_multicast or address.is_reserved
            or address.is_unspecified or address.is_loopback or address.is_link_local)


def is_internal(address: IPAddress) -> bool:
    """True for an address an image fetch must not reach (see the module docstring)."""
    embedded = embedded_ipv4(address)
    if embedded:
        return any(_plain_internal(v4) for v4 in embedded)
    return _plain_internal(address)


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _checked_addresses(host: str, port: int, param: str, allow_private: bool) -> list[str]:
    try:
        addresses = _resolve(host, port)
    except (OSError, UnicodeError):
        addresses = []
    if not addresses:
        raise BadRequest(f"'{param}': the image host '{host}' cannot be resolved.",
                         param=param)
    if not allow_private:
        for text in addresses:
            if is_internal(ipaddress.ip_address(text.split("%", 1)[0])):
                raise BadRequest(f"'{param}': images on internal addresses cannot be "
                                 "fetched.", param=param)
    return addresses


def _pool(scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
    """A connection pool to the checked `address`; HTTPS checks the certificate of `host`."""
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address, port, timeout=timeout, retries=False, maxsize=1,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
            server_hostname=host, assert_hostname=host)
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False,
                                      maxsize=1)


def _open(url: str, param: str, allow_private: bool
          ) -> tuple[urllib3.BaseHTTPResponse, urllib3.HTTPConnectionPool]:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest(f"'{param}' must be an http(s) URL.", param=param)
    try:   # an international name travels as its ASCII (punycode) form
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadRequest(f"'{param}': the image host name is not valid.", param=param) from None
    netloc = f"[{host}]" if ":" in host else host   # credentials never go into Host
    if port:
        netloc += f":{port}"
    port = port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    failure: Exception | None = None
    for address in _checked_addresses(host, port, param, allow_private):
        pool = _pool(parts.scheme, address, port, host)
        try:
            resp = pool.urlopen("GET", target, headers={"Host": netloc, "Accept": "image/*"},
                                preload_content=False, redirect=False, retries=False,
                                decode_content=True, assert_same_host=False)
            return resp, pool
        except (HTTPError, OSError) as exc:
            pool.close()
            failure = exc
    raise BadRequest(f"'{param}': the image could not be downloaded.",
                     param=param) from failure


def fetch_image(url: str, param: str) -> tuple[str, bytes]:
    max_bytes, allow_private = _limits()
    for _ in range(MAX_REDIRECTS + 1):
        resp, pool = _open(url, param, allow_private)
        try:
            location = resp.headers.get("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            return _image(resp, param, max_bytes)
        finally:
            resp.release_conn()
            pool.close()
    raise BadRequest(f"'{param}': too many redirects.", param=param)


def _image(resp: urllib3.BaseHTTPResponse, param: str, max_bytes: int) -> tuple[str, bytes]:
    if resp.status != 200:
        raise BadRequest(f"'{param}': downloading the image failed with HTTP "
                         f"{resp.status}.", param=param)
    mime = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not mime.startswith("image/"):
        raise BadRequest(f"'{param}': the URL did not return an image "
                         f"(Content-Type '{mime or 'none'}').", param=param)
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(param, max_bytes)
    data = bytearray()
    try:
        for piece in resp.stream(READ_SIZE):
            data += piece
            if len(data) > max_bytes:
                raise _too_large(param, max_bytes)
    except (HTTPError, OSError):
        raise BadRequest(f"'{param}': the image download broke off or timed out.",
                         param=param) from None
    return mime, bytes(data)


def _too_large(param: str, max_bytes: int) -> BadRequest:
    return BadRequest(f"'{param}': the image is larger than {max_bytes} bytes.", param=param)
