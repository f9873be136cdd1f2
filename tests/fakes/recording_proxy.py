"""A recording reverse proxy for tests that drive the gateway with third-party programs (CLIs):
it records every request exactly as the program sent it (method, path, query, headers, raw and
JSON body), forwards it to the gateway, and streams the answer back as it arrives (one request
per connection: the answer goes back close-delimited, without its framing headers).

    proxy = RecordingProxy(gw.url).start()   # point the program at proxy.url
    proxy.requests                           # list of Received (tests.fakes.http_fake)
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from .http_fake import Received

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection",
       "upgrade", "te", "trailer"}


class RecordingProxy:
    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.requests: list[Received] = []
        self.answers: list[tuple[int, bytes]] = []
        """(status, the first 4 KiB of the body) of each answer, in the order of `requests`."""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RecordingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                raw = self._body()
                path, _, query = self.path.partition("?")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                headers = CaseInsensitiveDict(self.headers.items())
                with proxy._lock:
                    proxy.requests.append(Received(self.command, path, query, headers, raw,
                                                   body))
                    index = len(proxy.answers)
                    proxy.answers.append((0, b""))
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port,
                                                  timeout=60)
                out = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                out["Content-Length"] = str(len(raw))
                conn.request(self.command, self.path, body=raw or None, headers=out)
                resp = conn.getresponse()
                head = b""
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP:
                        self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    while chunk := resp.read1(65536):
                        head = (head + chunk)[:4096]
                        with proxy._lock:
                            proxy.answers[index] = (resp.status, head)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                with proxy._lock:
                    proxy.answers[index] = (resp.status, head)
                conn.close()
                self.close_connection = True

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _forward

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client closing its idle keep-alive connection

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
