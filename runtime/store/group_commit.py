"""Group commit: the hot path's write transactions of concurrent requests, committed together.

Contract:
- `GroupCommit.run(work)` runs `work(cursor)` inside a write transaction and returns its
  result once that transaction has committed, exactly as if it had its own transaction; None
  when the driver failed (the caller then falls back to the Core path, as before).
- Requests that arrive while a transaction is being written join the next one: one caller (the
  leader) opens a transaction, and once it holds the write lock (another process may hold it
  first) takes every queued job, runs them in order and commits once, then hands the lead to
  the first job that queued meanwhile. Each job sees the effects of the ones
  before it, so a hold checked against the balance in a batch is as safe as one alone.
- A batch runs in arrival order per account, its accounts in ascending order (`run`'s
  `order`; a stable sort): concurrent transactions (other workers, other nodes, PostgreSQL's
  two lanes) then lock account rows in one order and cannot deadlock each other.
- A job that raises rolls the batch back; each job of that batch is then run again in its own
  transaction, so one bad job costs only itself.
- `run(work, order, linger)`: a job that would lead a batch alone may wait up to `linger`
  seconds for another job to join it. For writes nobody waits for: a settlement written
  behind its answer, which at concurrency 1 then shares the commit of the next request's
  hold instead of committing alone just before it. The job that comes takes the lead and
  writes the batch (the lingering one with it) at once, in its own thread of control: the
  request waiting for it (the hold) does not wait for the lingering one to be scheduled.
- Works with gevent (monkey-patched threading cooperates) and with threads.

Why: a commit is most of a hold's and a settlement's cost (SQLite writes every touched page
to the WAL once per commit; PostgreSQL waits for its WAL flush). Under load, many holds and
settlements share one commit; alone, a job commits at once after one scheduler yield.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gevent import monkey, sleep


def _let_ready_requests_in() -> None:
    """Under gevent (the server's workers), one pass of the event loop, so that every request
    ready to write reaches the queue before the batch is taken. With threads nothing: they
    queue by themselves while the leader waits on the database (and a sleep(0) of a thread
    would give its CPU away for a whole time slice)."""
    if monkey.is_module_patched("time"):
        sleep(0)


class _Job:
    __slots__ = ("work", "order", "result", "done", "lead")

    def __init__(self, work: Callable[[Any], Any], order: int) -> None:
        self.work = work
        self.order = order
        self.result: Any = None
        self.done = False
        self.lead = threading.Event()


def _order(job: _Job) -> int:
    return job.order


class GroupCommit:
    """`transaction(take)` opens a write transaction, then calls `take()` for the batch's
    jobs (once it holds the write lock) and runs them; `alone(work)` runs one job in its own
    (both return None for a job whose transaction failed)."""

    def __init__(self, transaction: Callable[[Callable[[], list[Callable[[Any], Any]]]],
                                             list[Any]],
                 alone: Callable[[Callable[[Any], Any]], Any]) -> None:
        self._transaction = transaction
        self._alone = alone
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._leading = False
        self._company: threading.Event | None = None   # set: a lingering leader waits

    def run(self, work: Callable[[Any], Any], order: int = 0, linger: float = 0.0) -> Any:
        """`order`: the account whose rows the job writes (0: none in particular); `linger`:
        seconds this job may wait for company when it would be written alone."""
        job = _Job(work, order)
        with self._lock:
            self._queue.append(job)
            company, self._company = self._company, None
            # joining a lingering leader: this job takes the lead and writes at once
            lead = not self._leading or company is not None
            self._leading = True
        if company is not None:
            company.set()
        elif lead:
            if linger > 0 and not self._linger(linger):
                lead = False   # a job that came meanwhile took the lead
            if lead:
                _let_ready_requests_in()
        if not lead:
            job.lead.wait()
            if job.done:
                return job.result
        self._write_batch()
        return job.result

    def _linger(self, seconds: float) -> bool:
        """Wait up to `seconds` for another job; whether this one still leads (a job that
        comes meanwhile takes the lead, and this one is written in its batch)."""
        company = threading.Event()
        with self._lock:
            if len(self._queue) > 1:
                return True
            self._company = company
        company.wait(seconds)
        with self._lock:
            if self._company is company:   # nobody came
                self._company = None
                return True
            return False

    def _write_batch(self) -> None:
        batch: list[_Job] = []

        def take() -> list[Callable[[Any], Any]]:
            # called once the transaction holds the database's write lock: every job that
            # queued while it waited for the lock joins this batch
            with self._lock:
                batch.extend(self._queue)
                self._queue = []
            batch.sort(key=_order)
            return [j.work for j in batch]

        try:
            try:
                results = self._transaction(take)
            except Exception:
                if not batch:   # failed before it took the queue
                    take()
                results = [self._alone(j.work) for j in batch]
            for j, result in zip(batch, results, strict=True):
                j.result = result
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for j in batch:
                j.done = True
                j.lead.set()
            if successor is not None:
                successor.lead.set()
