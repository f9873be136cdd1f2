"""The keep-alive connections of one origin (`http://host:port` or `https://host:port`).

`take` gives the most recently released idle connection that is still open (each checked
with one non-blocking MSG_PEEK recv: one syscall, no poll), or None; `connect` opens a new
one (TCP_NODELAY; for https a TLS handshake with SNI and hostname verification, under the
connect timeout); `release` keeps a connection for the next request while fewer than
`size` are idle, and closes it otherwise: the pool never blocks and never limits how many
connections are in use at once. `request_head` writes a request's head for this origin.

TLS is verified as urllib3 verified it for these calls: the system's default CA store
(honouring SSL_CERT_FILE and SSL_CERT_DIR), TLS 1.2 at least, hostname checked, ALPN
http/1.1; an `ssl.SSLContext` may be given instead. Sockets and ssl are whatever the
`socket` and `ssl` modules are when used, so cooperative under gevent's monkey patching
and blocking under plain threads. Environment proxies are never consulted.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from importlib import metadata

from runtime.upstream_http.connection import Connection

DEFAULT_PORTS = {"http": 80, "https": 443}
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_BAD_PATH = re.compile(r"[\x00-\x20\x7f]")
# urllib3 sent its own User-Agent when the caller had none; so does this client, naming itself
try:
    USER_AGENT = f"User-Agent: tokmodel/{metadata.version('tokmodel')}\r\n"
except metadata.PackageNotFoundError:
    USER_AGENT = "User-Agent: tokmodel\r\n"


def _open(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection. A literal address is connected to directly: create_connection would
    resolve it first, which under gevent is a trip through the hub's resolver threads (up to
    ten, started as thousands of streams open at once, and kept)."""
    try:
        family = (socket.AF_INET6 if ipaddress.ip_address(host).version == 6
                  else socket.AF_INET)
    except ValueError:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def default_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()      # CERT_REQUIRED, check_hostname, system CAs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.hostname_checks_common_name = False
    context.set_alpn_protocols(["http/1.1"])
    return context


class Pool:
    def __init__(self, origin: str, size: int, tls: ssl.SSLContext | None = None) -> None:
        scheme, _, netloc = origin.partition("://")
        scheme = scheme.lower()
        if scheme not in DEFAULT_PORTS or not netloc or "/" in netloc or "@" in netloc:
            raise ValueError(f"Not an http(s) origin: {origin!r}")
        host, port = _host_port(netloc, DEFAULT_PORTS[scheme])
        self.host, self.port, self.size = host, port, size
        self.tls = tls if scheme == "https" else None
        shown = f"[{host}]" if ":" in host else host
        self._host_line = (f"Host: {shown}\r\n" if port == DEFAULT_PORTS[scheme]
                           else f"Host: {shown}:{port}\r\n")
        self._idle: list[Connection] = []
        self._closed = False

    def request_head(self, method: str, path: str, headers: Mapping[str, str],
                     length: int | None, body: bool) -> tuple[bytes, bool]:
        """The request line and headers: Host, Accept-Encoding: identity and User-Agent
        unless the caller's headers have them, then Content-Length (`length`; with a body of
        unknown length, Transfer-Encoding: chunked) unless the caller's have it, then the
        caller's headers unchanged; and whether the body goes chunked. ValueError for a
        path or header that would break the request's framing (control characters, line
        breaks), as http.client raised."""
        if not path.isascii() or _BAD_PATH.search(path):
            raise ValueError(f"URL can't contain control characters or spaces: {path!r}")
        names = [name.lower() for name in headers]
        extra = ""
        chunked = False
        if "host" not in names:
            extra = self._host_line
        if "accept-encoding" not in names:
            extra += "Accept-Encoding: identity\r\n"
        if "content-length" not in names and "transfer-encoding" not in names:
            if length is not None:
                extra += f"Content-Length: {length}\r\n"
            elif body:
                extra += "Transfer-Encoding: chunked\r\n"
                chunked = True
            elif method in METHODS_WITH_BODY:
                extra += "Content-Length: 0\r\n"
        if "user-agent" not in names:
            extra += USER_AGENT
        text = f"{method} {path} HTTP/1.1\r\n{extra}" + "".join(
            [f"{name}: {value}\r\n" for name, value in headers.items()]) + "\r\n"
        lines = extra.count("\n") + len(names) + 2
        if text.count("\n") != lines or text.count("\r") != lines:
            raise ValueError("A header name or value contains a line break.")
        if "transfer-encoding" in names and length is None and body:
            chunked = any(name.lower() == "transfer-encoding" and "chunked" in value.lower()
                          for name, value in headers.items())
        return text.encode("latin-1"), chunked

    def take(self) -> Connection | None:
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:         # emptied by another thread meanwhile
                return None
            if not conn.dropped():
                return conn
            conn.close()
        return None

    def connect(self, timeout: float | None) -> Connection:
        """A new connection; raises the socket's or ssl's error (TimeoutError when the
        connect timeout ran out, the TLS handshake included)."""
        sock = _open(self.host, self.port, timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

    def release(self, conn: Connection) -> None:
        idle = self._idle
        if len(idle) < self.size and not self._closed:
            # idle with timeout 0, so that `dropped` is one syscall on a plain socket too
            conn.sock.settimeout(0.0)
            idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def body_length(body: bytes | Iterable[bytes] | None) -> int | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return len(body)
    try:
        return len(body)  # type: ignore[arg-type]
    except TypeError:
        return None


def _host_port(netloc: str, default: int) -> tuple[str, int]:
    if netloc.startswith("["):             # [IPv6]:port
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    if port and not port.isdigit():
        raise ValueError(f"Not a port: {port!r}")
    return host, int(port) if port else default
