"""Group commit: concurrent write jobs share a transaction, see each other's effects in
order, get their own results, and a failing job costs only itself."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from runtime.store.group_commit import GroupCommit


class Ledger:
    """A real SQLite database whose transactions record their batch sizes; the first one
    is slow so that the jobs started meanwhile queue behind it."""

    def __init__(self, path: str, slow_first: float = 0.0) -> None:
        self.path = path
        self.batches: list[int] = []
        self.slow_first = slow_first
        with closing_conn(path) as conn:
            conn.execute("CREATE TABLE balance (id INTEGER PRIMARY KEY, nano INTEGER)")
            conn.execute("CREATE TABLE holds (rid TEXT PRIMARY KEY)")
            conn.execute("INSERT INTO balance VALUES (1, 1000)")

    def transaction(self, take: Callable[[], list[Callable[[Any], Any]]],
                    alone: bool = False) -> list[Any]:
        with closing_conn(self.path) as conn:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            works = take()
            try:
                if not self.batches and self.slow_first:
                    time.sleep(self.slow_first)
                results = [work(cur) for work in works]
            except Exception:
                conn.rollback()
                self.batches.append(-len(works))
                if alone or len(works) == 1:
                    return [None]
                raise
            conn.commit()
            self.batches.append(len(works))
            return results

    def alone(self, work: Callable[[Any], Any]) -> Any:
        return self.transaction(lambda: [work], True)[0]

    def balance(self) -> int:
        with closing_conn(self.path) as conn:
            return conn.execute("SELECT nano FROM balance").fetchone()[0]

    def holds(self) -> set[str]:
        with closing_conn(self.path) as conn:
            return {r[0] for r in conn.execute("SELECT rid FROM holds")}


def closing_conn(path: str) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False))


def hold(rid: str, amount: int) -> Callable[[Any], bool]:
    def work(cur: Any) -> bool:
        cur.execute("UPDATE balance SET nano = nano - ? WHERE id = 1 AND nano >= ?",
                    (amount, amount))
        if cur.rowcount != 1:
            return False
        cur.execute("INSERT INTO holds VALUES (?)", (rid,))
        return True
    return work


def run_together(group: GroupCommit, jobs: dict[str, Callable[[Any], Any]],
                 first: str | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        results[name] = group.run(jobs[name])

    threads = {name: threading.Thread(target=call, args=(name,)) for name in jobs}
    if first is not None:
        threads[first].start()
        time.sleep(0.1)  # the first transaction is now under way (it takes slow_first)
    for name, t in threads.items():
        if name != first:
            t.start()
    for t in threads.values():
        t.join(10)
    return results


def test_jobs_queued_during_a_commit_share_the_next_one(tmp_path) -> None:
    ledger = Ledger(str(tmp_path / "db"), slow_first=0.5)
    group = GroupCommit(ledger.transaction, ledger.alone)
    jobs = {f"r{n}": hold(f"r{n}", 100) for n in range(12)}
    results = run_together(group, jobs, first="r0")
    # ten holds of 100 fit in 1,000: every job saw the ones before it in its batch
    assert sorted(results.values()) == [False, False] + [True] * 10
    assert ledger.balance() == 0
    assert ledger.holds() == {rid for rid, ok in results.items() if ok}
    assert ledger.batches[0] == 1 and sum(ledger.batches) == 12
    assert len(ledger.batches) < 12, ledger.batches


def test_jobs_queued_while_the_write_lock_is_awaited_join_that_batch(tmp_path) -> None:
    """Another process holds the write lock: the leader's batch is taken once it has the
    lock, so every job that queued meanwhile shares its commit."""
    ledger = Ledger(str(tmp_path / "db"))
    group = GroupCommit(ledger.transaction, ledger.alone)
    jobs = {f"r{n}": hold(f"r{n}", 100) for n in range(6)}
    with closing_conn(ledger.path) as other:
        other.execute("BEGIN IMMEDIATE")
        releaser = threading.Timer(0.4, other.rollback)
        releaser.start()
        results = run_together(group, jobs, first="r0")
        releaser.join()
    assert all(results.values()), results
    assert ledger.batches == [6]


def test_a_batch_runs_its_accounts_in_ascending_order_each_in_arrival_order() -> None:
    """Concurrent batches lock account rows in one order (no deadlock between workers or
    PostgreSQL's two lanes), and each account's jobs keep their order."""
    ran: list[list[str]] = []

    def transaction(take, alone=False):
        works = take()
        if not ran:
            time.sleep(0.3)   # the first batch is under way while the others queue
        ran.append([work(None) for work in works])
        return ran[-1]

    group = GroupCommit(transaction, lambda work: transaction(lambda: [work], True)[0])
    arrivals = [("first", 5), ("b1", 9), ("a1", 2), ("b2", 9), ("c1", 0), ("a2", 2)]
    first = threading.Thread(target=group.run, args=(lambda _: "first", 5))
    first.start()
    time.sleep(0.1)
    for name, account in arrivals[1:]:   # queued one after the other, in this order
        t = threading.Thread(target=group.run, args=(lambda _, n=name: n, account))
        t.start()
        time.sleep(0.02)
    first.join(5)
    deadline = time.monotonic() + 5
    while sum(len(r) for r in ran) < len(arrivals) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == [["first"], ["c1", "a1", "a2", "b1", "b2"]]


def test_a_failing_job_costs_only_itself(tmp_path) -> None:
    ledger = Ledger(str(tmp_path / "db"), slow_first=0.5)
    group = GroupCommit(ledger.transaction, ledger.alone)
    assert group.run(hold("taken", 100)) is True
    ledger.batches.clear()
    jobs = {"first": hold("first", 10), "dup": hold("taken", 10),
            **{f"r{n}": hold(f"r{n}", 10) for n in range(5)}}
    results = run_together(group, jobs, first="first")
    assert results.pop("dup") is None
    assert all(results.values()), results
    assert ledger.holds() == {"taken", "first", *(f"r{n}" for n in range(5))}
    assert ledger.balance() == 1000 - 100 - 6 * 10
    assert any(size < -1 for size in ledger.batches), ledger.batches  # the batch rolled back


def test_a_job_alone_commits_at_once(tmp_path) -> None:
    ledger = Ledger(str(tmp_path / "db"))
    group = GroupCommit(ledger.transaction, ledger.alone)
    assert [group.run(hold(f"r{n}", 1)) for n in range(3)] == [True] * 3
    assert ledger.batches == [1, 1, 1]


def test_a_lingering_job_shares_its_commit_with_the_next_one(tmp_path) -> None:
    """A job that may wait (a settlement behind its answer) and would commit alone waits for
    the next job, which joins its batch: one commit for both, written by the job that came
    (the request waiting for it does not wait for the lingering thread to run)."""
    ledger = Ledger(str(tmp_path / "db"))
    group = GroupCommit(ledger.transaction, ledger.alone)
    results: dict[str, Any] = {}
    written_by: dict[str, str] = {}

    def job(rid: str) -> Callable[[Any], bool]:
        def work(cur: Any) -> bool:
            written_by[rid] = threading.current_thread().name
            return hold(rid, 1)(cur)
        return work

    lingering = threading.Thread(name="lingering", target=lambda: results.update(
        settle=group.run(job("settle"), linger=30.0)))
    lingering.start()
    time.sleep(0.2)
    assert ledger.batches == []   # still waiting for company
    assert group.run(job("next")) is True   # joins it, and does not wait 30 s
    assert written_by == {"settle": threading.current_thread().name,
                          "next": threading.current_thread().name}
    lingering.join(5)
    assert results == {"settle": True}
    assert ledger.batches == [2] and ledger.holds() == {"settle", "next"}
    # the lingering job's thread found its job written; the next job leads as before
    assert group.run(job("after"), linger=0.01) is True and ledger.batches == [2, 1]


def test_a_lingering_job_without_company_commits_after_its_linger(tmp_path) -> None:
    ledger = Ledger(str(tmp_path / "db"))
    group = GroupCommit(ledger.transaction, ledger.alone)
    assert group.run(hold("alone", 1), linger=0.05) is True
    assert ledger.batches == [1]
    # a job that finds a batch under way does not linger: it joins the queue as before
    jobs = {"first": hold("first", 1), **{f"r{n}": hold(f"r{n}", 1) for n in range(3)}}
    ledger.batches.clear()
    ledger.slow_first = 0.3
    assert all(run_together(group, jobs, first="first").values())
    assert ledger.batches[0] == 1 and sum(ledger.batches) == 4


# a gevent process with a store on the SQLite file argv[1]; `transactions` collects the size
# of each batch its group commit writes
COUNTING_PREAMBLE = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from runtime.store import open_store
from runtime.store.records import UsageRecord

store = open_store(sys.argv[1])
group = store._fast._group
transactions = []
run_batch = group._transaction
def counted(take, alone=False):
    def counting():
        works = take()
        transactions.append(len(works))
        return works
    return run_batch(counting, alone)
group._transaction = counted

def usage(rid):
    return UsageRecord(request_id=rid, account_id=account.id, key_id=None, endpoint="chat",
                       model="m", provider="p", status=200)
"""

GEVENT_SCRIPT = COUNTING_PREAMBLE + r"""
account = store.create_account("shared", 10_000)

def request(n):
    rid = f"rq-{n}"
    if not store.hold(rid, account.id, 1_000):
        return 0
    return store.settle(rid, 300, usage(rid))

charged = [g.value for g in gevent.joinall([gevent.spawn(request, n) for n in range(40)])]
print(json.dumps({"charged": charged, "transactions": transactions,
                  "balance": store.get_account("shared").balance_nano,
                  "audit": store.audit("shared")["ok"]}))
"""


def _run_script(script: str, tmp_path: Path) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script, f"sqlite:///{tmp_path / 'db.sqlite'}"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_gevent_requests_share_commits_and_stay_exact(tmp_path) -> None:
    """The server's workers are gevent: requests ready together there share transactions,
    and the balance still never goes below zero."""
    out = _run_script(GEVENT_SCRIPT, tmp_path)
    charged = out["charged"]
    # 10,000 covers ten holds of 1,000 at once; settled ones give 700 back each
    assert charged.count(300) >= 10 and set(charged) <= {0, 300}
    assert out["balance"] == 10_000 - 300 * charged.count(300)
    assert out["audit"]
    assert sum(out["transactions"]) >= 2 * charged.count(300)
    assert len(out["transactions"]) < sum(out["transactions"]), out["transactions"]


ONE_AT_A_TIME_SCRIPT = COUNTING_PREAMBLE + r"""
account = store.create_account("alone", 10_000)
writers = []
for n in range(20):   # one request at a time, its settlement written behind its answer
    rid = f"rq-{n}"
    assert store.hold(rid, account.id, 1_000)
    writers.append(gevent.spawn(store.settle, rid, 300, usage(rid), None, True))
    gevent.sleep(0.0002)   # the client reads the answer and sends its next request
gevent.joinall(writers)
print(json.dumps({"charged": [w.value for w in writers], "transactions": transactions,
                  "balance": store.get_account("alone").balance_nano,
                  "audit": store.audit("alone")["ok"]}))
"""


def test_one_request_at_a_time_commits_its_settlement_with_the_next_hold(tmp_path) -> None:
    """At concurrency 1 under gevent, a settlement written behind its answer waits for the
    next request's hold and shares its commit: about one commit a request, not two."""
    out = _run_script(ONE_AT_A_TIME_SCRIPT, tmp_path)
    assert out["charged"] == [300] * 20
    assert out["balance"] == 10_000 - 20 * 300 and out["audit"]
    assert sum(out["transactions"]) == 40   # 20 holds and 20 settlements
    assert len(out["transactions"]) <= 25, out["transactions"]
