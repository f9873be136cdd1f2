"""SIGHUP end to end under real gunicorn: the master starts new workers and stops the old
ones, and an idle keep-alive connection on an old worker receives nothing it did not ask
for -- it is closed cleanly (EOF) or keeps working -- also with a shutdown timeout of 0,
where the old worker ends its connections at once (gunicorn's own handler answered those
with an unsolicited 500)."""

from __future__ import annotations

import signal
import socket
import time

import pytest
import requests

from tests.harness import start_gateway

pytestmark = pytest.mark.integration

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


def _answer(sock: socket.socket) -> bytes:
    """One whole answer to GET /healthz read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed mid-answer: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def _idle_connection(port: int, used: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if used:                      # a keep-alive connection that served a request
        sock.sendall(HEALTHZ)
        assert _answer(sock) == b'{"status": "ok"}'
    return sock


@pytest.mark.parametrize("shutdown_timeout", ["0", "30"])
def test_sighup_sends_nothing_on_idle_keep_alive_connections(tmp_path, shutdown_timeout):
    gw = start_gateway(tmp_path, {"TOKMODEL_SHUTDOWN_TIMEOUT": shutdown_timeout}, workers=2)
    try:
        port = int(gw.url.rsplit(":", 1)[1])
        session = requests.Session()               # an SDK-style pooled client
        assert session.get(f"{gw.url}/healthz", timeout=5).status_code == 200
        idle = [_idle_connection(port, used=i % 3 != 2) for i in range(6)]
        time.sleep(0.3)                            # every handler is waiting on its socket
        gw.process.send_signal(signal.SIGHUP)
        outcomes = []
        for sock in idle:
            sock.settimeout(6)
            try:
                unsolicited = sock.recv(65536)
            except TimeoutError:
                # still open: it must keep working
                sock.sendall(HEALTHZ)
                assert _answer(sock) == b'{"status": "ok"}'
                outcomes.append("kept")
            else:
                assert unsolicited == b"", unsolicited[:300]
                outcomes.append("closed")
            finally:
                sock.close()
        assert outcomes == ["closed"] * 6          # the old workers let go of them
        # the reloaded gateway serves, on new connections and on the pooled client (they
        # wait in the listen backlog while the new workers boot: slow on a busy machine)
        assert requests.get(f"{gw.url}/healthz", timeout=30).status_code == 200
        assert session.get(f"{gw.url}/healthz", timeout=30).status_code == 200
        assert "500 Internal Server Error" not in gw.log()
    finally:
        gw.stop()
