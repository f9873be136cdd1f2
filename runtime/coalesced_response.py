"""gunicorn's Response, with the status line and headers sent together with the first bytes
of the body.

gunicorn writes the head of every answer in one send() and each piece of the body in another.
On the gateway's small JSON answers (and a stream's first chunk) that is two syscalls (and
two TCP segments) where one does: a send on loopback costs about as much CPU as the whole
JSON encoding of the answer (measured in `make bench`). `install()` makes gunicorn build
this class instead of its own in the worker process that calls it; everything else
(sendfile, answers without a body, response_length) takes gunicorn's own path unchanged.
Every piece of a body, a stream's chunks included, goes out with runtime/socket_send.py's
`send_all`.
"""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

from runtime.socket_send import send_all


class _Collect:
    """Stands in for the socket while gunicorn writes the head: keeps the bytes."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class CoalescedResponse(wsgi.Response):
    _head = b""
    _coalesce = False

    def write(self, arg: Any) -> None:
        if self.headers_sent or not arg:
            return super().write(arg)
        self._coalesce = True
        try:
            super().write(arg)
        finally:
            self._coalesce = False
            if self._head:  # the body was dropped (no-body answer, length reached)
                head, self._head = self._head, b""
                util.write(self.sock, head)

    def send_headers(self) -> None:
        if self.headers_sent or not self._coalesce:
            return super().send_headers()
        sock, collect = self.sock, _Collect()
        self.sock = collect
        try:
            super().send_headers()
        finally:
            self.sock = sock
        self._head = collect.data

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:   # gunicorn's framing of a chunk
            data = b"%X\r\n%b\r\n" % (len(data), data)
        if self._head:
            data, self._head = self._head + data, b""
        send_all(self.sock, data)


def install() -> None:
    """Make gunicorn's wsgi.create build CoalescedResponse in this process."""
    wsgi.Response = CoalescedResponse
