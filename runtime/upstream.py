"""HTTP calls to providers: one pooled `requests.Session` per worker, timeouts, and the
mapping of transport failures to gateway errors (502 unreachable, 504 timed out).

Responses are always requested with `stream=True` so a caller can forward an SSE or audio
body chunk by chunk; `read_json` reads a whole (non-streaming) answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from runtime.errors import UpstreamError


class Upstream:
    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 600.0,
                 pool_size: int = 256) -> None:
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.trust_env = False  # never route provider traffic through ambient proxies
        adapter = HTTPAdapter(pool_connections=32, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, method: str, url: str, *, headers: Mapping[str, str],
             body: bytes | Iterable[bytes] | None = None,
             params: Mapping[str, str] | None = None) -> requests.Response:
        """Open a response (headers read, body not yet); raises UpstreamError. `body` is
        bytes or an iterable of byte chunks (sent as it is produced)."""
        try:
            return self.session.request(method, url, headers=dict(headers), params=params,
                                        data=body,
                                        stream=True, timeout=self.timeout,
                                        allow_redirects=False)
        except requests.Timeout as exc:
            raise UpstreamError("The upstream provider did not answer in time.", status=504,
                                type="upstream_timeout") from exc
        except requests.RequestException as exc:
            raise UpstreamError("The upstream provider could not be reached.") from exc

    def close(self) -> None:
        self.session.close()


def read_body(resp: requests.Response) -> bytes:
    try:
        return resp.content
    except requests.RequestException as exc:
        raise broken_off(exc) from exc
    finally:
        resp.close()


def broken_off(exc: Exception) -> UpstreamError:
    """The error for a failure while reading an answer's body (requests wraps read
    timeouts of a streamed body in ConnectionError)."""
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return UpstreamError("The upstream provider did not finish its answer in time.",
                             status=504, type="upstream_timeout")
    return UpstreamError("The upstream provider broke off its answer.")


def read_json(resp: requests.Response) -> Any:
    raw = read_body(resp)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UpstreamError("The upstream provider answered with invalid JSON.") from exc
