"""Under gevent (the gunicorn worker), a write that finds the SQLite file's write lock taken
by another connection (another worker, the checkpoint thread) waits for it without freezing
the worker's other greenlets: the hot path's writes and the Core path's (background folds and
prunes, console writes) alike. Run in a subprocess, patched from the start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import json, sqlite3, sys, time
from datetime import UTC, datetime
import gevent
from runtime.store import Store

path = sys.argv[1]
store = Store("sqlite:///" + path)
store.migrate()
account = store.create_account("acme", 1_000)

def while_locked(write):
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")          # another process's write transaction
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(30)])
    writer = gevent.spawn(write)
    gevent.sleep(0.3)
    waiting = not writer.ready()
    other.execute("COMMIT")
    writer.join(5)
    ticker.kill()
    other.close()
    return {"waited": waiting, "done": writer.successful(), "ticks": len(ticks)}

out = {
    "core": while_locked(lambda: store.topup("acme", 500)),
    "fast": while_locked(lambda: store.hold("rq-1", account.id, 100)),
    "balance": store.get_account("acme").balance_nano,
}
print(json.dumps(out))
"""


def test_a_write_waits_for_the_lock_without_freezing_the_worker(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "t.db")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for path in ("core", "fast"):
        # the write waited the 0.3 s for the lock, then went through; meanwhile the other
        # greenlet kept running (a frozen loop would have ticked once or twice)
        assert result[path]["waited"] and result[path]["done"], result
        assert result[path]["ticks"] >= 15, result
    assert result["balance"] == 1_400
