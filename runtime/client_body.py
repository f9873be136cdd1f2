"""The client's request body at the WSGI boundary: an idle timeout on every read, and what
happens to a body the application answered without reading.

`BodyGuard(app, idle_timeout, drain_bytes)` wraps the WSGI application gunicorn serves:

- While the application runs, the client socket (gunicorn's `gunicorn.socket`, a gevent
  socket) waits at most `idle_timeout` seconds for each read. A body that sends nothing for
  that long, chunked or with a Content-Length, on any route, fails the read with
  `BodyTimeout`, a 408 in the client's format; gunicorn then closes the connection, as it
  does after any failed body read. The socket's own timeout is used because it costs nothing
  per read (gevent checks it only when a read has to wait); it is restored before the
  response is written, so a slow reader of a long stream is not cut by it.
- A response given without reading the body (401, 403 insufficient credits, 413) goes out
  first; only then is the rest of the body read and thrown away, for at most DRAIN_SECONDS
  and `drain_bytes` bytes. A body that ends within that keeps its connection for the next
  request; otherwise the connection is closed. Closing at once would make the kernel answer
  the unread bytes with a reset, which can destroy the response before the client reads it
  (most clients read the answer only after sending the whole body).

Without `gunicorn.socket` (in-process tests), and on HTTP/2, where one socket carries many
requests, the application is called unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from runtime.after_answer import RunAfter
from runtime.errors import GatewayError

DRAIN_SECONDS = 2.0
DRAIN_READ = 64 * 1024


class BodyTimeout(GatewayError):
    status = 408
    type = "request_timeout"


class _Input:
    """gunicorn's `wsgi.input`, counting what was read and turning a read that waited too
    long into a 408."""

    __slots__ = ("_inner", "_idle", "consumed", "ended", "timed_out")

    def __init__(self, inner: Any, idle: float) -> None:
        self._inner = inner
        self._idle = idle
        self.consumed = 0
        self.ended = False
        self.timed_out = False

    def _timeout(self) -> BodyTimeout:
        self.timed_out = True
        return BodyTimeout(f"The request body sent nothing for {self._idle:g} seconds "
                           "(TOKMODEL_BODY_IDLE_TIMEOUT); the request was cut off.")

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except TimeoutError:
            raise self._timeout() from None
        if not data and size != 0:
            self.ended = True
        self.consumed += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        try:
            data = self._inner.readline(size)
        except TimeoutError:
            raise self._timeout() from None
        if not data:
            self.ended = True
        self.consumed += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def unread(self, length: int | None) -> bool:
        """True when the body was not read to its end."""
        if self.ended:
            return False
        return self.consumed < length if length is not None else True


class BodyGuard:
    def __init__(self, app: Callable[..., Any], idle_timeout: float, drain_bytes: int) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.drain_bytes = drain_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        sock = environ.get("gunicorn.socket")
        length_header = environ.get("CONTENT_LENGTH")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if sock is None or (not length_header and not chunked) or (
                environ.get("HTTP_VERSION") == "2"):   # one socket shared by many streams
            return self.app(environ, start_response)
        try:
            length = int(length_header) if length_header else None
        except ValueError:
            length = None
        body = environ["wsgi.input"]
        guarded = environ["wsgi.input"] = _Input(body, self.idle_timeout)
        prior = sock.gettimeout()
        sock.settimeout(self.idle_timeout)
        try:
            result = self.app(environ, start_response)
        finally:
            sock.settimeout(prior)
        if guarded.timed_out or not guarded.unread(length if not chunked else None):
            return result
        return RunAfter(result, [lambda: self._drain(body, sock, prior, start_response)])

    def _drain(self, body: Any, sock: Any, prior: float | None,
               start_response: Callable[..., Any]) -> None:
        """Read and discard the rest of the body within the bounds; when it did not end in
        them, have gunicorn close the connection instead of reading the next request."""
        deadline = time.monotonic() + DRAIN_SECONDS
        drained = 0
        try:
            while drained <= self.drain_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                data = body.read(DRAIN_READ)
                if not data:
                    return
                drained += len(data)
        except Exception:  # noqa: BLE001 - a failed read: gunicorn will not reuse it
            pass
        finally:
            try:
                sock.settimeout(prior)
            except OSError:
                pass
        response = getattr(start_response, "__self__", None)   # gunicorn's Response
        force_close = getattr(response, "force_close", None)
        if force_close is not None:
            force_close()
