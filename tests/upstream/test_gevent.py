"""Under gevent's monkey patching (as in the gunicorn worker) the client is cooperative:
many calls at once in one thread, keep-alive reuse, the idle check on gevent's socket
(its native socket peeked, not gevent's poll), and literal addresses connected to without
the resolver's threads. Run in a subprocess, patched from the start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import _socket, json, time
import gevent
from runtime.upstream import Upstream, read_body
from runtime.upstream_http import connection
from tests.upstream.raw_server import Peer, RawServer, keep_alive

def slow(peer, request):
    gevent.sleep(0.2)
    peer.answer(request.line)

def one_answer_then_close(peer: Peer) -> None:
    if peer.read_request() is not None:
        peer.answer()
    peer.close()

checks = []
original = connection.Connection.dropped
def dropped(self):
    checks.append(original(self))
    return checks[-1]
connection.Connection.dropped = dropped

busy, closing = RawServer(keep_alive(slow)), RawServer(one_answer_then_close)
upstream = Upstream(2, 5)
started = time.monotonic()
jobs = [gevent.spawn(lambda n=n: read_body(upstream.send("GET", f"{busy.origin}/{n}",
                                                          headers={}))) for n in range(20)]
gevent.joinall(jobs, raise_error=True)
concurrent = time.monotonic() - started
again = [read_body(upstream.send("GET", f"{busy.origin}/x", headers={})) for _ in range(3)]
read_body(upstream.send("GET", closing.origin + "/", headers={}))
gevent.sleep(0.1)
read_body(upstream.send("GET", closing.origin + "/", headers={}))
conn = upstream._pools[busy.origin]._idle[0]
print(json.dumps({
    # every connection went to a literal address: no resolver thread was ever started
    "resolver_threads": gevent.get_hub()._threadpool is not None,
    "bodies": sorted(job.value.decode() for job in jobs), "concurrent": concurrent,
    "again": [b.decode() for b in again], "busy_connections": busy.connections,
    "closing_connections": closing.connections, "checks": checks,
    "gevent_socket": type(conn.sock).__module__,
    # what the idle check peeks: a native socket, non-blocking
    "native": isinstance(conn.sock._sock, _socket.socket), "timeout": conn.sock._sock.gettimeout(),
}))
"""


def test_the_client_under_gevent():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bodies"] == sorted(f"GET /{n} HTTP/1.1" for n in range(20))
    assert result["concurrent"] < 2          # 20 calls of 0.2 s each, at once
    assert result["again"] == ["GET /x HTTP/1.1"] * 3
    assert result["busy_connections"] == 20  # the three later calls reused them
    assert result["closing_connections"] == 2
    assert True in result["checks"] and False in result["checks"]
    assert result["gevent_socket"].startswith("gevent")
    assert result["native"] and result["timeout"] == 0.0
    assert result["resolver_threads"] is False
