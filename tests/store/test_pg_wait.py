"""Under gevent (the gunicorn worker), psycopg waits on the worker's event loop
(runtime/store/pg_wait.py): a write that waits for a row lock on PostgreSQL leaves the
worker's other greenlets running, the hot path's holds and settlements, pipelined or
not, come out as they did, and more greenlets than the fast path has connections wait their
turn for one. Run in a subprocess, patched from the start; needs
TOKMODEL_TEST_POSTGRES_URL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import postgres_schema

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import json, sys
from datetime import UTC, datetime
import gevent
import psycopg
from psycopg import waiting
from runtime.store import Store, pg_wait
from runtime.store.records import UsageRecord

url = sys.argv[1]
store = Store(url)
store.migrate()
account = store.create_account("acme", 1_000)

locker = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
locker.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account.id,))
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(30)])
holds = [gevent.spawn(store.hold, f"rq-{n}", account.id, 100) for n in range(3)]
gevent.sleep(0.3)
waited = not any(h.ready() for h in holds)
locker.rollback()
locker.close()
gevent.joinall(holds, timeout=5)
ticker.kill()

_key, secret = store.create_key("acme", "k")
readers = [gevent.spawn(store.authenticate, secret) for _ in range(30)]
gevent.joinall(readers, timeout=10)
authenticated = sum(1 for r in readers if r.value is not None and r.value.name == "k")

charged = [store.settle(f"rq-{n}", 60, UsageRecord(
    request_id=f"rq-{n}", account_id=account.id, key_id=None, endpoint="chat", model="m",
    provider="p", status=200, created_at=datetime.now(UTC))) for n in range(3)]
print(json.dumps({
    "installed": waiting.wait is pg_wait.wait,
    "waited": waited, "held": [h.value for h in holds], "ticks": len(ticks),
    "charged": charged, "balance": store.get_account("acme").balance_nano,
    "authenticated": authenticated,
}))
"""


@pytest.fixture
def pg_url():
    with postgres_schema("pgwait_", "the gevent waits are PostgreSQL's") as url:
        yield url


def test_a_write_waiting_on_postgresql_leaves_the_worker_running(pg_url):
    out = subprocess.run([sys.executable, "-c", SCRIPT, pg_url], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["installed"], result
    # the holds waited the 0.3 s for the row lock, then went through; meanwhile the other
    # greenlet kept running (a frozen loop would have ticked once or twice)
    assert result["waited"] and result["held"] == [True, True, True], result
    assert result["ticks"] >= 15, result
    assert result["charged"] == [60, 60, 60]
    # thirty greenlets reading keys at once share the fast path's few connections
    assert result["authenticated"] == 30, result
    assert result["balance"] == 1_000 - 3 * 60
