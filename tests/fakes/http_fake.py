"""The HTTP machinery the non-chat fake providers share.

Contract
--------
``FakeServer`` is an HTTP/1.1 server on 127.0.0.1 served from daemon threads of the test
process. A subclass declares ``routes`` (``(method, path) -> handler name``; a path may end
in ``*`` to match a prefix), ``check_auth(headers)`` and ``error_body(status, message)`` (the
provider's own error envelope). Every request is recorded in ``requests`` as a ``Received``
(headers, raw bytes, parsed JSON body, and for multipart/form-data the parts, parsed with the
standard library's email parser, independently of the gateway's parser) before it is judged.
Handlers return a ``Reply``; a body that is an iterator of bytes is sent with chunked
transfer encoding, one HTTP chunk per item, ``chunk_delay`` seconds apart. ``Reject(status,
message)`` from a handler becomes the provider's error envelope. ``fail_next(status, body=None,
headers=None)`` answers the next authenticated request with that failure instead.
"""

from __future__ import annotations

import email.policy
import json
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Self

from requests.structures import CaseInsensitiveDict


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: CaseInsensitiveDict[str]
    raw: bytes
    body: Any = None
    """The body parsed as JSON, or None."""
    form: list[FormPart] | None = None
    """The parts of a multipart/form-data body, or None."""

    def fields(self) -> dict[str, list[str]]:
        """Text parts by name (repeated names collect)."""
        out: dict[str, list[str]] = {}
        for part in self.form or ():
            if part.filename is None:
                out.setdefault(part.name, []).append(part.text)
        return out

    def files(self) -> list[FormPart]:
        return [p for p in self.form or () if p.filename is not None]


@dataclass
class Reply:
    status: int = 200
    body: bytes | Iterator[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(obj).encode())


class Reject(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def parse_form(content_type: str, raw: bytes) -> list[FormPart]:
    """Parse multipart/form-data the way a standards-following server does; Reject(400) if
    the body is not well-formed."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not msg.is_multipart() or msg.defects:
        raise Reject(400, "Malformed multipart/form-data body.")
    parts = []
    for part in msg.iter_parts():
        if part.defects:
            raise Reject(400, "Malformed multipart/form-data part.")
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise Reject(400, "A multipart part has no name.")
        payload = part.get_payload(decode=True)
        parts.append(FormPart(str(name), part.get_filename(), part.get("content-type"),
                              payload if isinstance(payload, bytes) else b""))
    return parts


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """A request's body, sent with Content-Length or chunked transfer encoding."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        data = bytearray()
        while True:
            size = int(handler.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(65537).strip():
                    pass
                return bytes(data)
            data += handler.rfile.read(size)
            handler.rfile.readline(65537)
    length = int(handler.headers.get("Content-Length") or 0)
    if length < 0:
        raise ValueError("negative Content-Length")
    return handler.rfile.read(length) if length else b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeServer

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # no reverse DNS lookup for 127.0.0.1
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = self.server.fake
        raw = read_body(self)
        path, _, query = self.path.partition("?")
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name in set(self.headers.keys()):
            headers[name] = ", ".join(self.headers.get_all(name) or [])
        content_type = headers.get("Content-Type", "")
        body = form = None
        form_error: Reject | None = None
        if content_type.startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        elif content_type.startswith("multipart/form-data"):
            try:
                form = parse_form(content_type, raw)
            except Reject as exc:
                form_error = exc
        received = Received(self.command, path, query, headers, raw, body, form)
        with fake.lock:
            fake.requests.append(received)
        try:
            handler = fake.route(self.command, path)
            fake.check_auth(headers, query)
            with fake.lock:
                script = fake.scripts.pop(0) if fake.scripts else None
            if script is not None:
                self._send(script)
                return
            if form_error is not None:
                raise form_error
            self._send(handler(received))
        except Reject as exc:
            self._send(Reply.json(fake.error_body(exc.status, exc.message, **exc.extra),
                                  exc.status))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug in the fake must be loud, not a hang
            traceback.print_exc(file=sys.stderr)
            fake.errors.append(exc)
            self.close_connection = True
            self._send(Reply.json({"error": {"message": f"fake bug: {exc!r}"}}, 500))

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes):
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fake = self.server.fake
        try:
            for i, chunk in enumerate(reply.body):
                if i and fake.chunk_delay:
                    time.sleep(fake.chunk_delay)
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
                with fake.lock:
                    fake.chunks_sent += 1
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            with fake.lock:
                fake.disconnects += 1
            self.close_connection = True


class FakeServer:
    """Base of the fake providers; see the module docstring."""

    routes: Mapping[tuple[str, str], str] = {}
    base_path = ""

    def __init__(self, api_key: str | None = "upstream-key", *, chunk_delay: float = 0.0) -> None:
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.requests: list[Received] = []
        self.scripts: list[Reply] = []
        self.errors: list[BaseException] = []
        self.usages: list[dict[str, Any]] = []
        """The usage of each answer a generating fake gave, in its own format and order."""
        self.disconnects = 0
        self.chunks_sent = 0
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- what a provider defines -------------------------------------------------------------

    def check_auth(self, headers: CaseInsensitiveDict[str], query: str) -> None:
        if self.api_key is None:
            return
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            raise Reject(401, "Invalid API key.")

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"message": message}

    # -- plumbing ----------------------------------------------------------------------------

    def route(self, method: str, path: str) -> Any:
        for (m, pattern), name in self.routes.items():
            full = self.base_path + pattern
            if m == method and (path == full or (full.endswith("*")
                                                 and path.startswith(full[:-1]))):
                return getattr(self, name)
        raise Reject(404, f"Not found: {method} {path}")

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def origin(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.base_path

    @property
    def last(self) -> Received:
        with self.lock:
            if not self.requests:
                raise AssertionError(f"{type(self).__name__} received no request")
            return self.requests[-1]

    def fail_next(self, status: int, body: Mapping[str, Any] | bytes | None = None,
                  headers: Mapping[str, str] | None = None) -> None:
        if body is None:
            data = json.dumps(self.error_body(status, f"Scripted failure {status}.")).encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        with self.lock:
            self.scripts.append(Reply(status, data, headers=dict(headers or {})))

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.scripts.clear()
            self.errors.clear()
            self.usages.clear()
            self.disconnects = 0
            self.chunks_sent = 0


def require_json(req: Received, known: Iterable[str], required: Iterable[str]) -> dict:
    """The JSON object body, with OpenAI-style checks: content type, unknown and missing
    fields (explicit nulls count as absent)."""
    if not req.headers.get("Content-Type", "").startswith("application/json"):
        raise Reject(400, "Content-Type must be application/json.")
    if not isinstance(req.body, dict):
        raise Reject(400, "We could not parse the JSON body of your request.")
    unknown = sorted(set(req.body) - set(known))
    if unknown:
        raise Reject(400, f"Unrecognized request argument supplied: {unknown[0]}",
                     param=unknown[0])
    for name in required:
        if req.body.get(name) is None:
            raise Reject(400, f"Missing required parameter: '{name}'.", param=name)
    return req.body

