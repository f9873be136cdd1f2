"""HTTP calls to providers: one urllib3 connection pool per worker, timeouts, and the mapping
of transport failures to gateway errors (502 unreachable or broken off, 504 timed out).

`Upstream.send` returns as soon as the answer's status and headers are read; its body is
read by the caller, whole (`read_body`, `read_json`) or as it arrives (`iter_content`), so
SSE and audio are forwarded chunk by chunk. A whole answer is read up to `max_answer_bytes`
(TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES, 64 MiB: far above any JSON answer of the APIs served,
base64 images included, and small enough that a few at once fit a worker): one byte more
and reading stops with `AnswerTooLarge` (502), which tells how much was received so the
request can be charged for it; the worker never holds more than the cap of one answer.
Streams are capped per event where they are parsed (runtime/sse.py).

urllib3 is used directly rather than through requests: the requests layer costs about
0.4 ms of CPU per call (measured in `make bench`), a fifth of the gateway's whole budget,
for features a gateway does not use. Environment proxies are never consulted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

from runtime import fastjson
from runtime.errors import UpstreamError

READ_SIZE = 65536


MAX_ANSWER_BYTES = 64 * 1024 * 1024


class AnswerTooLarge(UpstreamError):
    """The upstream's whole answer is larger than the cap; `received` bytes of it were read
    (the cap plus one)."""

    def __init__(self, cap: int, received: int) -> None:
        super().__init__(f"The upstream provider's answer is larger than this gateway's limit "
                         f"of {cap} bytes (TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES).")
        self.received = received


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    def __init__(self, raw: urllib3.BaseHTTPResponse,
                 max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive
        self.max_bytes = max_bytes

    def set_read_timeout(self, seconds: float) -> None:
        """From now on, wait at most `seconds` between two reads of this answer (the idle
        timeout of a stream, after its first byte came under the first-byte timeout)."""
        conn = getattr(self._raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.settimeout(seconds)

    def iter_content(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body in pieces as they arrive (never waiting to fill a buffer)."""
        read1 = self._raw.read1
        while True:
            data = read1(chunk_size or READ_SIZE)
            if not data:
                return
            yield data

    @property
    def content(self) -> bytes:
        """The whole body; AnswerTooLarge past `max_bytes` (never reading more than one byte
        past it)."""
        cap = self.max_bytes
        declared = self.headers.get("Content-Length")
        if (declared is not None and declared.isdigit() and int(declared) <= cap
                and not self.headers.get("Content-Encoding")):
            # http.client reads no more than the declared length (and, not compressed, it
            # is the length decoded)
            return self._raw.read()
        parts: list[bytes] = []
        size = 0
        read = self._raw.read
        while size <= cap:
            data = read(min(READ_SIZE, cap + 1 - size))
            if not data:
                return b"".join(parts)
            parts.append(data)
            size += len(data)
        raise AnswerTooLarge(cap, size)

    def close(self) -> None:
        self._raw.release_conn() if self._raw.isclosed() else self._raw.close()


class Upstream:
    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 600.0,
                 pool_size: int = 256, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.max_answer_bytes = max_answer_bytes
        self._pool_size = pool_size
        # One connection pool per origin, found without parsing the URL: a PoolManager's
        # parsing and key normalising cost ~30 us a call (measured).
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}

    def send(self, method: str, url: str, *, headers: Mapping[str, str],
             body: bytes | Iterable[bytes] | None = None,
             params: Mapping[str, str] | None = None,
             timeout: urllib3.Timeout | None = None) -> UpstreamResponse:
        """Open a response (headers read, body not yet); raises UpstreamError. `body` is
        bytes or an iterable of byte chunks with a len() (sent as it is produced);
        `timeout` (connect, read until the first byte) overrides the pool's."""
        headers = dict(headers)
        if body is not None and not isinstance(body, bytes) and hasattr(body, "__len__"):
            headers["Content-Length"] = str(len(body))  # type: ignore[arg-type]
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        origin, path = _split(url)
        pool = self._pools.get(origin)
        try:
            if pool is None:
                pool = self._pools[origin] = urllib3.connection_from_url(
                    origin, maxsize=self._pool_size, block=False, retries=False,
                    timeout=self.timeout)
            raw = pool.urlopen(method, path, body=body, headers=headers,
                               preload_content=False, redirect=False, retries=False,
                               decode_content=True, timeout=timeout or self.timeout,
                               assert_same_host=False)
        except NewConnectionError as exc:  # a TimeoutError subclass, but a refusal
            raise UpstreamError("The upstream provider could not be reached.") from exc
        except TimeoutError as exc:
            raise UpstreamError("The upstream provider did not answer in time.", status=504,
                                type="upstream_timeout") from exc
        except (HTTPError, OSError) as exc:
            raise UpstreamError("The upstream provider could not be reached.") from exc
        return UpstreamResponse(raw, self.max_answer_bytes)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _split(url: str) -> tuple[str, str]:
    """'https://host:port/a/b?q' -> ('https://host:port', '/a/b?q')."""
    start = url.find("://") + 3
    slash = url.find("/", start)
    if slash < 0:
        return url, "/"
    return url[:slash], url[slash:]


def broken_off(exc: Exception) -> UpstreamError:
    """The error for a failure while reading an answer's body."""
    if (isinstance(exc, TimeoutError) and not isinstance(exc, NewConnectionError)) or (
            "timed out" in str(exc).lower()):
        return UpstreamError("The upstream provider did not finish its answer in time.",
                             status=504, type="upstream_timeout")
    return UpstreamError("The upstream provider broke off its answer.")


def read_body(resp: UpstreamResponse) -> bytes:
    """The whole answer (AnswerTooLarge past the cap); the connection is released."""
    try:
        return resp.content
    except (HTTPError, OSError) as exc:
        raise broken_off(exc) from exc
    finally:
        resp.close()


def read_json(resp: UpstreamResponse) -> Any:
    raw = read_body(resp)
    try:
        return fastjson.loads(raw)
    except ValueError as exc:
        raise UpstreamError("The upstream provider answered with invalid JSON.") from exc
