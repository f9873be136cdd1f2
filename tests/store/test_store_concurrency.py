"""Credits under contention: threads in this process plus several spawned OS processes hold
and settle on one account at once, on SQLite and (when TOKMODEL_TEST_POSTGRES_URL is set) on
PostgreSQL. The balance never goes below zero, every nano-credit is accounted for (a cost
nothing covered is the account's debt), and the account agrees with its ledger."""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from runtime.store import Store, UsageRecord, open_store
from runtime.store.engine import normalize_url
from runtime.store.migrations import MIGRATIONS
from runtime.store.schema import holds, usage_log

PG_ENV = "TOKMODEL_TEST_POSTGRES_URL"
PROCESSES = 3
THREADS = 4  # per process, and in this process too
WAIT = 60  # seconds: a hang fails the test instead of blocking the run
HOLD = 1_000


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/tokmodel.db"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set: PostgreSQL tests need a server")
    import psycopg

    admin_url = base.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = "tm_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


# Work each thread does; module-level so spawned processes can run it too.


def _only_hold(store: Store, account_id: int, tag: str, rounds: int) -> dict[str, int]:
    won = 0
    for i in range(rounds):
        if store.hold(f"{tag}-{i}", account_id, HOLD):
            won += 1
    return {"holds": won, "charged": 0, "settles": 0}


def _hold_and_settle(store: Store, account_id: int, tag: str, rounds: int) -> dict[str, int]:
    rng = random.Random(tag)
    won = charged = settles = 0
    for i in range(rounds):
        rid = f"{tag}-{i}"
        if not store.hold(rid, account_id, HOLD):
            continue
        won += 1
        cost = rng.choice([0, 1, 300, HOLD, 1_700, 50_000])  # some overrun the hold
        usage = UsageRecord(rid, account_id, None, "/v1/chat/completions", "m", "p", 200)
        charged += store.settle(rid, cost, usage)
        settles += 1
        # A retried settle (e.g. a worker replaying) must not charge again.
        assert store.settle(rid, cost, usage) == 0
    return {"holds": won, "charged": charged, "settles": settles}


def _settle_given(store: Store, account_id: int, tag: str, rounds: int) -> dict[str, int]:
    """Settle the pre-made holds `pre-0..rounds-1`, racing other workers doing the same."""
    charged = settles = 0
    for i in range(rounds):
        rid = f"pre-{i}"
        usage = UsageRecord(rid, account_id, None, "/v1/embeddings", "m", "p", 200)
        got = store.settle(rid, 700, usage)
        charged += got
        settles += got > 0
    return {"holds": 0, "charged": charged, "settles": settles}


WORK: dict[str, Callable[[Store, int, str, int], dict[str, int]]] = {
    "only_hold": _only_hold,
    "hold_and_settle": _hold_and_settle,
    "settle_given": _settle_given,
}


def _run_threads(
    url: str, account_id: int, work: str, rounds: int, tag: str, barrier: Any
) -> list[dict[str, int]]:
    store = open_store(url)
    results: list[Any] = [None] * THREADS

    def run(n: int) -> None:
        try:
            results[n] = WORK[work](store, account_id, f"{tag}.{n}", rounds)
        except BaseException:
            results[n] = traceback.format_exc()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    try:
        barrier.wait(WAIT)
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
    finally:
        store.close()
    for r in results:
        if not isinstance(r, dict):
            raise AssertionError(f"worker failed: {r}")
    return results


def _process_main(
    url: str, account_id: int, work: str, rounds: int, tag: str, barrier: Any, out: Any
) -> None:
    try:
        out.put(("ok", _run_threads(url, account_id, work, rounds, tag, barrier)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def _migrate_main(url: str, barrier: Any, out: Any) -> None:
    try:
        store = Store(url)
        barrier.wait(WAIT)
        applied = store.migrate()
        store.close()
        out.put(("ok", applied))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def _collect(procs: list[Any], out: Any) -> list[Any]:
    got = []
    for _ in procs:
        try:
            status, payload = out.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("a worker process did not report back") from None
        assert status == "ok", payload
        got.append(payload)
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    return got


def _everywhere(url: str, account_id: int, work: str, rounds: int) -> list[dict[str, int]]:
    """Run `work` in THREADS threads here and in each of PROCESSES spawned processes."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_process_main,
            args=(url, account_id, work, rounds, f"p{n}", barrier, out),
            daemon=True,
        )
        for n in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        here = _run_threads(url, account_id, work, rounds, "main", barrier)
        results = [r for batch in _collect(procs, out) for r in batch]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return here + results


def _table_facts(url: str) -> tuple[int, int, int]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(func.count(), func.sum(usage_log.c.cost_nano))).one()
            held = conn.execute(select(func.count()).select_from(holds)).scalar()
    finally:
        engine.dispose()
    return rows[0], rows[1] or 0, held


def test_concurrent_holds_stop_exactly_at_the_balance(db_url: str) -> None:
    with open_store(db_url) as store:
        initial = 10 * HOLD + HOLD // 2  # room for exactly ten holds
        account = store.create_account("shared", initial)
        results = _everywhere(db_url, account.id, "only_hold", rounds=6)
        assert sum(r["holds"] for r in results) == 10
        assert store.get_account("shared").balance_nano == HOLD // 2
        assert _table_facts(db_url)[2] == 10
        assert store.audit("shared")["open_holds"] == 10
        assert store.release_stale_holds(0) == 10
        assert store.get_account("shared").balance_nano == initial
        assert store.audit("shared")["ok"]


def test_concurrent_hold_and_settle_account_for_every_nano_credit(db_url: str) -> None:
    with open_store(db_url) as store:
        initial = 25_000  # far less than the workers would spend: most holds get refused
        account = store.create_account("shared", initial)
        results = _everywhere(db_url, account.id, "hold_and_settle", rounds=15)
        after = store.get_account("shared")
        final = after.balance_nano
        charged = sum(r["charged"] for r in results)
        settles = sum(r["settles"] for r in results)
        assert final >= 0 and after.debt_nano >= 0
        assert initial - final + after.debt_nano == charged
        report = store.audit("shared")
        assert report["ok"], report["problems"]
        assert report["usage_rows"] == settles and report["open_holds"] == 0
        assert sum(r["holds"] for r in results) == settles
        logged, logged_cost, held = _table_facts(db_url)
        assert (logged, logged_cost, held) == (settles, charged, 0)
        assert charged > 0


def test_racing_settles_of_the_same_requests_charge_once(db_url: str) -> None:
    with open_store(db_url) as store:
        rounds = 20
        account = store.create_account("shared", rounds * HOLD)
        for i in range(rounds):
            assert store.hold(f"pre-{i}", account.id, HOLD)
        results = _everywhere(db_url, account.id, "settle_given", rounds=rounds)
        assert sum(r["settles"] for r in results) == rounds
        assert sum(r["charged"] for r in results) == rounds * 700
        assert store.get_account("shared").balance_nano == rounds * (HOLD - 700)
        assert _table_facts(db_url) == (rounds, rounds * 700, 0)
        assert store.audit("shared")["ok"]


def test_processes_starting_together_migrate_once(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_main, args=(db_url, barrier, out), daemon=True)
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        applied = _collect(procs, out)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert sorted(applied) == [[]] * (PROCESSES - 1) + [[m.version for m in MIGRATIONS]]
    with open_store(db_url) as store:
        assert store.create_account("after").balance_nano == 0
