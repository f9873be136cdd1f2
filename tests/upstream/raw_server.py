"""A scripted HTTP server on 127.0.0.1 for the upstream client's tests: every accepted
connection is served by `handler(peer)` in a thread, where `peer` reads requests and writes
raw bytes, so a test says exactly what goes on the wire (keep-alive or not, framing, a
stall, a cut). `connections` counts the connections accepted. An `ssl.SSLContext` makes it
an HTTPS server (the handshake runs in the connection's thread). `requests` lists every
request read, in order."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Request:
    head: bytes      # request line and headers, without the blank line
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class Peer:
    """One accepted connection, seen from the server."""

    def __init__(self, sock: socket.socket, requests: list[Request]) -> None:
        self.sock = sock
        self._requests = requests
        self._buffer = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self._buffer += data
        return bool(data)

    def read_request(self) -> Request | None:
        """The next request, None when the client closed the connection first."""
        try:
            while b"\r\n\r\n" not in self._buffer:
                if not self._more():
                    return None
        except OSError:
            return None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        request = Request(head, b"")
        if (request.header("Transfer-Encoding") or "").lower() == "chunked":
            request.body = self._chunked()
        else:
            length = int(request.header("Content-Length") or 0)
            while len(self._buffer) < length:
                if not self._more():
                    return None
            request.body, self._buffer = self._buffer[:length], self._buffer[length:]
        self._requests.append(request)
        return request

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._more()
            size_line, _, self._buffer = self._buffer.partition(b"\r\n")
            size = int(size_line, 16)
            while len(self._buffer) < size + 2:
                self._more()
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2:]
            if size == 0:
                return body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self, body: bytes = b"ok", status: str = "200 OK",
               headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RawServer:
    def __init__(self, handler: Callable[[Peer], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[Request] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        scheme = "https" if tls else "http"
        self.origin = f"{scheme}://127.0.0.1:{self.port}"
        self._peers: list[Peer] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            peer = Peer(sock, self.requests)
            self._peers.append(peer)
            self.handler(peer)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self._listener.close()
        for peer in self._peers:
            peer.close()


def keep_alive(answer: Callable[[Peer, Request], None] | None = None
               ) -> Callable[[Peer], None]:
    """A handler answering every request of a connection (by default 200 'ok')."""

    def handler(peer: Peer) -> None:
        while (request := peer.read_request()) is not None:
            if answer is None:
                peer.answer()
            else:
                answer(peer, request)

    return handler
