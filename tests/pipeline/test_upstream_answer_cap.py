"""A whole upstream answer is read up to the cap and no further, however it is framed or
compressed; answers up to the cap are read whole."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runtime.upstream import AnswerTooLarge, Upstream, read_body

CAP = 10_000
BODIES = {
    "/exact": (b"a" * CAP, {}),
    "/over": (b"b" * (CAP + 1), {}),
    # 2 KB on the wire, 5 MB once decoded
    "/bomb": (gzip.compress(b"c" * 5_000_000), {"Content-Encoding": "gzip"}),
    "/small-gzip": (gzip.compress(b"d" * 100), {"Content-Encoding": "gzip"}),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"1000\r\n" + b"e" * 4096 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        body, headers = BODIES[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        return


@pytest.fixture(scope="module")
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def get(origin: str, path: str) -> bytes:
    upstream = Upstream(2, 5, max_answer_bytes=CAP)
    try:
        return read_body(upstream.send("GET", origin + path, headers={}))
    finally:
        upstream.close()


def test_an_answer_of_exactly_the_cap_is_read_whole(origin):
    assert get(origin, "/exact") == b"a" * CAP
    assert get(origin, "/small-gzip") == b"d" * 100


@pytest.mark.parametrize("path", ["/over", "/bomb", "/chunked"])
def test_past_the_cap_reading_stops_one_byte_after_it(origin, path):
    with pytest.raises(AnswerTooLarge) as info:
        get(origin, path)
    assert info.value.received == CAP + 1
    assert info.value.status == 502 and str(CAP) in info.value.message
