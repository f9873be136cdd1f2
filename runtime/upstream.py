"""HTTP calls to providers: one keep-alive connection pool per origin and worker, timeouts,
and the mapping of transport failures to gateway errors (502 unreachable or broken off, 504
timed out).

`Upstream.send` returns as soon as the answer's status and headers are read; its body is
read by the caller, whole (`read_body`, `read_json`) or as it arrives (`next_piece`,
`iter_content`), so SSE and audio are forwarded chunk by chunk. A whole answer is read up
to `max_answer_bytes` (TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES, 64 MiB: far above any JSON answer
of the APIs served, base64 images included, and small enough that a few at once fit a
worker): past it reading stops with `AnswerTooLarge` (502), which tells how much was
received (the cap plus one) so the request can be charged for it; the worker holds at most
the cap of one answer plus one read. gzip and deflate bodies are decoded (a compressed body
is capped on its decoded size). Streams are capped per event where they are parsed
(runtime/sse.py).

Timeouts (`Timeout`, per call or the pool's default): `connect` bounds the TCP connection
and the TLS handshake, `read` each wait for bytes from the first one of the answer on; a
non-streamed answer's body and a stream after its first chunk are read under the idle
timeout set with `UpstreamResponse.set_read_timeout`. Either running out is a 504
`upstream_timeout`; a refused or unreachable upstream, a TLS failure, or an answer that is
not HTTP is a 502. Environment proxies are never consulted.

Connections are reused (keep-alive) once an answer was read to its end and the server did
not ask to close; an idle connection the server closed meanwhile is noticed before reuse,
and a request that fails on a reused connection before any byte of the answer came back is
sent once more on a new connection (the server did not process it; a one-shot iterator body
excepted). Nothing is retried once answer bytes arrived.

The HTTP/1.1 client is this project's own (runtime/upstream_http/, on httptools' llhttp C
parser) rather than urllib3 + http.client, for CPU: a gateway calls a few known origins
and needs none of urllib3's generality, which it paid for on every call (urlopen parsing
the URL and copying Timeout objects, a gevent poll to check a reused connection,
http.client writing and validating header by header, its buffered reader, an
email.message parsing each answer's headers). Measured on the bench's fake upstream
(tests/bench/upstream.py), one small chat completion per call: the client alone went from
345-480 us of CPU per call to 105-165 us (plain threads, and gevent with 16 calls at
once); in `python -m tests.bench.profile` (interleaved runs) the "upstream I/O" line went
from 388-501 to 145-146 us per gateway request, the whole request from 1029-1316 to
757-775 us. What is left is mostly the send syscall (loopback TCP work done in the sender)
and the recv. The requests layer had gone earlier for the same reason (0.4 ms a call).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

from runtime import fastjson
from runtime.errors import UpstreamError
from runtime.upstream_http.connection import READ_SIZE, Answer, Stale
from runtime.upstream_http.decode import decoder_for
from runtime.upstream_http.pool import Pool, body_length, default_tls_context

MAX_ANSWER_BYTES = 64 * 1024 * 1024
# a compressed stream is decoded into pieces of at most this many bytes
DECODED_PIECE = 1024 * 1024


class Timeout(NamedTuple):
    connect: float | None    # TCP connect and TLS handshake
    read: float | None       # each wait for answer bytes, the first one included


class AnswerTooLarge(UpstreamError):
    """The upstream's whole answer is larger than the cap; `received` bytes of it were read
    (the cap plus one)."""

    def __init__(self, cap: int, received: int) -> None:
        super().__init__(f"The upstream provider's answer is larger than this gateway's limit "
                         f"of {cap} bytes (TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES).")
        self.received = received


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    __slots__ = ("status_code", "headers", "max_bytes", "_answer", "_decoder", "_read")

    def __init__(self, answer: Answer, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._answer = answer
        self.status_code = answer.status
        self.headers = answer.headers  # case-insensitive
        self.max_bytes = max_bytes
        self._decoder = decoder_for(answer.headers.get("content-encoding"))
        self._read: bytes | AnswerTooLarge | None = None

    def buffer(self) -> None:
        """Read the whole body now, while the request may still be retried (a non-streamed
        answer, before the gateway commits to it): a break or a timeout raises here (OSError,
        as `content`); afterwards `content` and `next_piece` serve what was read. An answer
        past the cap is not an error of the attempt: its AnswerTooLarge is kept for
        `content` to raise."""
        if self._read is None:
            try:
                self._read = self.content
            except AnswerTooLarge as exc:
                self._read = exc

    def set_read_timeout(self, seconds: float) -> None:
        """From now on, wait at most `seconds` between two reads of this answer (the idle
        timeout of a stream, after its first byte came under the first-byte timeout)."""
        self._answer.set_timeout(seconds)

    def next_piece(self, limit: int = DECODED_PIECE) -> bytes:
        """The body bytes that arrived since the last call (decoded, at most `limit` bytes
        at once when compressed), waiting for some when there are none yet; b"" at the
        end. Not a generator: a stream reads through it from its own generator, one
        level of suspended frames less per open stream (see runtime/pipeline/run.py)."""
        if self._read is not None:
            read, self._read = self.content, b""
            return read
        decoder = self._decoder
        if decoder is None:
            return self._answer.read_some()
        piece = decoder.decode(b"", limit)   # output left from the last input
        while not piece:
            data = self._answer.read_some()
            if not data:
                return b""
            piece = decoder.decode(data, limit)
        return piece

    def iter_content(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body in pieces as they arrive (never waiting to fill a buffer); at most
        `chunk_size` bytes each when given."""
        next_piece, limit = self.next_piece, chunk_size or DECODED_PIECE
        while data := next_piece(limit):
            if chunk_size and len(data) > chunk_size:
                for start in range(0, len(data), chunk_size):
                    yield data[start:start + chunk_size]
            else:
                yield data

    @property
    def content(self) -> bytes:
        """The whole body; AnswerTooLarge past `max_bytes` (decoded size)."""
        if self._read is not None:
            if isinstance(self._read, AnswerTooLarge):
                raise self._read
            return self._read
        cap = self.max_bytes
        read = self._answer.read_some
        decoder = self._decoder
        parts: list[bytes] = []
        size = 0
        while True:
            data = read()
            if not data:
                break
            if decoder is not None:
                data = decoder.decode(data, cap + 1 - size)
            parts.append(data)
            size += len(data)
            if size > cap:
                raise AnswerTooLarge(cap, cap + 1)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Done with the answer: a connection whose answer was not read to its end is
        closed (one read whole is already back in its pool)."""
        self._answer.drop()


class Upstream:
    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 600.0,
                 pool_size: int = 256, max_answer_bytes: int = MAX_ANSWER_BYTES,
                 tls: ssl.SSLContext | None = None) -> None:
        self.timeout = Timeout(connect=connect_timeout, read=read_timeout)
        self.max_answer_bytes = max_answer_bytes
        self._pool_size = pool_size
        self._tls = tls
        # one pool per origin, found without parsing the URL
        self._pools: dict[str, Pool] = {}

    def send(self, method: str, url: str, *, headers: Mapping[str, str],
             body: bytes | Iterable[bytes] | None = None,
             params: Mapping[str, str] | None = None,
             timeout: Timeout | None = None) -> UpstreamResponse:
        """Open a response (headers read, body not yet); raises UpstreamError. `body` is
        bytes or an iterable of byte chunks (sent as it is produced; with Content-Length
        when it has a len(), else chunked); `timeout` overrides the pool's."""
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        origin, path = _split(url)
        timeout = timeout or self.timeout
        try:
            pool = self._pools.get(origin) or self._pool(origin)
            length = body_length(body)
            head, chunked = pool.request_head(method, path, headers, length, body is not None)
            head_only = method == "HEAD"
            conn = pool.take()
            if conn is not None:
                try:
                    return UpstreamResponse(
                        conn.exchange(head, body, chunked, timeout.read, head_only, pool),
                        self.max_answer_bytes)
                except Stale:
                    if isinstance(body, Iterator):
                        raise   # partly consumed: cannot be sent again
                    # the server had closed the idle connection: once more on a new one
            conn = pool.connect(timeout.connect)
            return UpstreamResponse(
                conn.exchange(head, body, chunked, timeout.read, head_only, pool),
                self.max_answer_bytes)
        except TimeoutError as exc:
            raise UpstreamError("The upstream provider did not answer in time.", status=504,
                                type="upstream_timeout") from exc
        except OSError as exc:   # refused, unreachable, TLS, not HTTP, closed
            raise UpstreamError("The upstream provider could not be reached.") from exc

    def _pool(self, origin: str) -> Pool:
        tls = None
        if origin[:6].lower() == "https:":
            tls = self._tls = self._tls or default_tls_context()
        try:
            pool = Pool(origin, self._pool_size, tls)
        except ValueError as exc:
            raise UpstreamError("The upstream provider could not be reached.") from exc
        return self._pools.setdefault(origin, pool)

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


def _split(url: str) -> tuple[str, str]:
    """'https://host:port/a/b?q' -> ('https://host:port', '/a/b?q')."""
    start = url.find("://") + 3
    slash = url.find("/", start)
    query = url.find("?", start)
    if slash < 0 or 0 <= query < slash:
        if query < 0:
            return url, "/"
        return url[:query], "/" + url[query:]
    return url[:slash], url[slash:]


def broken_off(exc: Exception) -> UpstreamError:
    """The error for a failure while reading an answer's body."""
    if isinstance(exc, TimeoutError) or "timed out" in str(exc).lower():
        return UpstreamError("The upstream provider did not finish its answer in time.",
                             status=504, type="upstream_timeout")
    return UpstreamError("The upstream provider broke off its answer.")


def read_body(resp: UpstreamResponse) -> bytes:
    """The whole answer (AnswerTooLarge past the cap); the connection is released."""
    try:
        return resp.content
    except OSError as exc:
        raise broken_off(exc) from exc
    finally:
        resp.close()


def read_json(resp: UpstreamResponse) -> Any:
    raw = read_body(resp)
    try:
        return fastjson.loads(raw)
    except ValueError as exc:
        raise UpstreamError("The upstream provider answered with invalid JSON.") from exc


__all__ = ["READ_SIZE", "AnswerTooLarge", "Timeout", "Upstream", "UpstreamResponse",
           "broken_off", "read_body", "read_json"]
