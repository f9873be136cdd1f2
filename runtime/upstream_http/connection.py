"""One keep-alive connection to an upstream origin: a request written, its answer read.

`Connection.exchange` writes the request (head and bytes body in one `sendall`; an
iterable body after the head, chunk by chunk, chunked-framed when it has no length) and
reads until the answer's status and headers are in, returning an `Answer` whose body is read
with `read_some`. The answer is parsed by httptools (llhttp, C): status, headers (into a
case-insensitive `Headers`), and a body framed by Content-Length, chunked, or ended by the
server closing the connection; 1xx answers before the real one are skipped.

The connection goes back to its pool (`release`) only once the answer was read to its end
and the server did not ask to close (`Connection: close`, HTTP/1.0 without keep-alive, a
body ended by close, bytes after the answer); otherwise, and after any error, the socket is
closed. The socket's timeout is the read timeout: each wait for bytes (the first byte of the
answer included) is bounded by it, and `Answer.set_timeout` changes it for the rest.

Errors are raised as they come from the socket (TimeoutError, other OSErrors) or as
`BrokenAnswer` (an OSError: not valid HTTP, closed mid-answer). `Stale` (a BrokenAnswer) is
a failure before any byte of the answer arrived, sending included, not a timeout: on a
reused connection it means the server had closed it, and the request may be sent again on
a new one since the server did not process it. A request the server stopped reading (a
broken pipe or reset while sending) still has its answer read when one came (a 413 to an
upload, say), as urllib3 did; the connection is not reused after it.
"""

from __future__ import annotations

import _socket
import socket
from collections.abc import Iterable
from typing import Any, Protocol

from httptools import HttpParserError, HttpResponseParser

from runtime.socket_send import send_all

READ_SIZE = 65536
# A bytes body up to this size is sent in the head's `sendall`; a larger one after it (a
# copy costs more than a second send).
JOIN_BODY_UP_TO = 256 * 1024
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_raw_recv = _socket.socket.recv   # never gevent's: it would wait for readiness


class BrokenAnswer(ConnectionError):
    """The answer is not valid HTTP or ended before it was complete."""


class Stale(BrokenAnswer):
    """The connection failed before any byte of the answer arrived (not a timeout)."""


class Releaser(Protocol):
    def release(self, conn: Connection) -> None: ...


class Headers(dict[str, str]):
    """An answer's headers: names lower-cased; lookups take any case. Repeated fields are
    joined with ', ' (as urllib3's HTTPHeaderDict did)."""

    __slots__ = ()

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


class Connection:
    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def dropped(self) -> bool:
        """Whether an idle connection can no longer be used: the server closed it (EOF),
        reset it, or sent bytes nobody asked for. One non-blocking MSG_PEEK recv on the
        native socket (gevent's wraps it as `_sock`; a plain one is idle with timeout 0)."""
        try:
            _raw_recv(getattr(self.sock, "_sock", self.sock), 1, _PEEK)
        except BlockingIOError:
            return False   # nothing to read: still open
        except OSError:
            return True
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def exchange(self, head: bytes, body: bytes | Iterable[bytes] | None, chunked: bool,
                 read_timeout: float | None, head_only: bool, pool: Releaser) -> Answer:
        """Send one request and read its answer's head; raises Stale, BrokenAnswer, or the
        socket's error (the connection is then closed)."""
        sock = self.sock
        answer = Answer(self, pool, head_only)
        try:
            sock.settimeout(read_timeout)
            try:
                if body is None:
                    send_all(sock, head)
                elif isinstance(body, bytes):
                    if len(body) <= JOIN_BODY_UP_TO:
                        send_all(sock, head + body)
                    else:
                        sock.sendall(head)
                        sock.sendall(body)
                else:
                    sock.sendall(head)
                    if isinstance(body, bytearray | memoryview):
                        sock.sendall(body)
                    else:
                        _send_iterable(sock, body, chunked)
            except TimeoutError:
                raise
            except (BrokenPipeError, ConnectionResetError):
                # the server stopped reading: it may have answered already (a 413 to a large
                # upload), which is read as urllib3 read it; without an answer this is Stale
                answer.cut_request()
            except OSError as exc:
                raise Stale(f"The connection failed while sending the request: {exc}") from exc
            answer.read_head()
        except BaseException:
            answer.drop()
            raise
        return answer


def _send_iterable(sock: socket.socket, body: Iterable[bytes], chunked: bool) -> None:
    sendall = sock.sendall
    if chunked:
        for chunk in body:
            if chunk:
                sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        sendall(b"0\r\n\r\n")
        return
    for chunk in body:
        if chunk:
            sendall(chunk)


class Answer:
    """An answer being read: `status` and `headers` once `read_head` returned, the body
    from `read_some`. It is also the parser's protocol (the on_* callbacks)."""

    __slots__ = ("status", "headers", "done", "_conn", "_pool", "_parser", "_fields",
                 "_parts", "_head_only", "_head_done", "_keep", "_until_close", "_reusable")

    def __init__(self, conn: Connection, pool: Releaser, head_only: bool) -> None:
        self.status = 0
        self.headers = Headers()
        self.done = False              # the whole answer was parsed
        self._conn: Connection | None = conn
        self._pool = pool
        self._fields: list[tuple[bytes, bytes]] = []
        self._parts: list[bytes] = []  # body bytes parsed and not yet read
        self._head_only = head_only    # a HEAD request: no body whatever the headers say
        self._head_done = False
        self._keep = False
        self._until_close = False
        self._reusable = True          # False once the answer's framing rules out reuse
        # the parser holds this object's callbacks: a cycle, broken when the answer ends
        parser = self._parser = HttpResponseParser(self)
        # Transfer-Encoding wins over a Content-Length sent along (http.client read such
        # answers too); the connection is not reused after one
        parser.set_dangerous_leniencies(lenient_chunked_length=True)

    # -- the parser's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head_done:            # bytes after the answer: never reuse the connection
            self._keep = self._reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        fields, self._fields = self._fields, []
        if self._head_done:
            return
        status = self._parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:
            return                     # 1xx: the real answer follows
        found: dict[str, str] = {}
        for name, value in fields:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1").strip()
            found[key] = f"{found[key]}, {text}" if key in found else text
        self.headers = Headers(found)
        self.status = status
        self._head_done = True
        if self._head_only:
            self.done = True           # the connection is not reused (see read_head)
            return
        coding = found.get("transfer-encoding")
        if coding is None:
            self._until_close = "content-length" not in found
        else:
            self._until_close = not coding.lower().endswith("chunked")
            self._reusable = "content-length" not in found

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self._parts.append(body)

    def on_message_complete(self) -> None:
        if self._head_done and not self.done:
            self.done = True
            # (queried now: llhttp resets its flags after this callback)
            self._keep = (self._reusable
                          and self._parser.should_keep_alive())  # type: ignore[union-attr]

    # -- reading ---------------------------------------------------------------------------

    def read_head(self) -> None:
        """Read until the status and headers are in (part of the body may come along)."""
        conn = self._conn
        assert conn is not None
        recv = conn.sock.recv
        seen = False
        while not self._head_done:
            try:
                data = recv(READ_SIZE)
            except TimeoutError:
                raise
            except OSError as exc:
                if seen:
                    raise
                raise Stale(f"The connection failed before the answer: {exc}") from exc
            if not data:
                if seen:
                    raise BrokenAnswer("The upstream closed the connection within the "
                                       "answer's headers.")
                raise Stale("The upstream closed the connection without answering.")
            seen = True
            self._feed(data)
        if self.done:
            if self._head_only:
                self._keep = False
            self._finish()

    def read_some(self) -> bytes:
        """The body bytes that arrived since the last call, waiting for some when there
        are none yet; b"" at the end of the body."""
        parts = self._parts
        while not parts:
            if self.done:
                return b""
            self._receive()
        if len(parts) == 1:
            return parts.pop()
        data = b"".join(parts)
        parts.clear()
        return data

    def _receive(self) -> None:
        conn = self._conn
        if conn is None:
            raise BrokenAnswer("The connection was closed before the answer was read.")
        try:
            data = conn.sock.recv(READ_SIZE)
            if data:
                self._feed(data)
            elif self._until_close:
                self.done = True       # the body ends with the connection
                self._keep = False
            else:
                raise BrokenAnswer("The upstream closed the connection before the end of "
                                   "its answer.")
        except BaseException:
            self.drop()
            raise
        if self.done:
            self._finish()

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)  # type: ignore[union-attr]
        except HttpParserError as exc:
            if not self.done:
                raise BrokenAnswer(f"The upstream's answer is not valid HTTP: {exc}") from exc
            self._keep = False         # whatever follows the answer is not ours to read

    def _finish(self) -> None:
        """The answer is complete: the connection goes back to the pool or is closed."""
        conn, self._conn, self._parser = self._conn, None, None
        if conn is None:
            return
        if self._keep:
            self._pool.release(conn)
        else:
            conn.close()

    def cut_request(self) -> None:
        """The request was not sent whole: the connection is not reused after the answer."""
        self._reusable = False

    def set_timeout(self, seconds: float | None) -> None:
        if self._conn is not None:
            self._conn.sock.settimeout(seconds)

    def drop(self) -> None:
        """Close the connection unless the answer was complete (it was released then)."""
        conn, self._conn, self._parser = self._conn, None, None
        if conn is not None:
            conn.close()
