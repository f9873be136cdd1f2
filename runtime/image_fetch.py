"""Fetching http(s) images for providers that only take inline bytes (Gemini).

`fetch_image(url, param)` returns (MIME type, bytes) or raises `BadRequest` naming `param`:
the URL must answer 200 with an `image/*` body of at most TOKMODEL_IMAGE_FETCH_MAX_BYTES
within a connect/read timeout. Addresses on loopback, private, link-local and other internal
networks are refused (a gateway must not be a way into its own network) unless
TOKMODEL_IMAGE_FETCH_ALLOW_PRIVATE=1, which tests and single-host deployments may set.
Redirects are followed by hand, at most 3, each target checked the same way.

The session and limits are created on first use, so requests without URL images never
touch this module.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from runtime.errors import BadRequest
from runtime.settings import Settings

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
MAX_REDIRECTS = 3

_lock = threading.Lock()
_state: dict[str, object] = {}


def _session() -> tuple[requests.Session, int, bool]:
    with _lock:
        if not _state:
            session = requests.Session()
            session.trust_env = False
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _state["session"] = session
            settings = Settings.from_env()
            _state["max_bytes"] = settings.image_fetch_max_bytes
            _state["allow_private"] = settings.image_fetch_allow_private
    return _state["session"], _state["max_bytes"], _state["allow_private"]  # type: ignore[return-value]


def _check_host(url: str, param: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"'{param}' must be an http(s) URL.", param=param)
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError:
        raise BadRequest(f"'{param}': the image host '{parts.hostname}' cannot be resolved.",
                         param=param) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise BadRequest(f"'{param}': images on internal addresses cannot be fetched.",
                             param=param)


def fetch_image(url: str, param: str) -> tuple[str, bytes]:
    session, max_bytes, allow_private = _session()
    for _ in range(MAX_REDIRECTS + 1):
        _check_host(url, param, allow_private)
        try:
            resp = session.get(url, stream=True, allow_redirects=False,
                               timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                               headers={"Accept": "image/*"})
        except requests.RequestException:
            raise BadRequest(f"'{param}': the image could not be downloaded.",
                             param=param) from None
        with resp:
            if resp.is_redirect and resp.headers.get("Location"):
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status_code != 200:
                raise BadRequest(f"'{param}': downloading the image failed with HTTP "
                                 f"{resp.status_code}.", param=param)
            mime = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not mime.startswith("image/"):
                raise BadRequest(f"'{param}': the URL did not return an image "
                                 f"(Content-Type '{mime or 'none'}').", param=param)
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(param, max_bytes)
            data = bytearray()
            try:
                for piece in resp.iter_content(chunk_size=65536):
                    data += piece
                    if len(data) > max_bytes:
                        raise _too_large(param, max_bytes)
            except requests.RequestException:
                raise BadRequest(f"'{param}': the image download broke off or timed out.",
                                 param=param) from None
            return mime, bytes(data)
    raise BadRequest(f"'{param}': too many redirects.", param=param)


def _too_large(param: str, max_bytes: int) -> BadRequest:
    return BadRequest(f"'{param}': the image is larger than {max_bytes} bytes.", param=param)
