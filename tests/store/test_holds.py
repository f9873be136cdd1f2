"""Holds of lost workers, against real databases (SQLite, and PostgreSQL when
TOKMODEL_TEST_POSTGRES_URL is set): heartbeats, progress, the sweep and its claim, the
keeper loop, migration 5 and `tokmodel holds`. Two Store objects on one database stand for
two worker processes (or two nodes): each has its own open holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    create_engine,
    insert,
    select,
    update,
)

from runtime.billing.sweeper import HoldKeeper, HoldSettings
from runtime.store import Store, UsageRecord, open_store
from runtime.store.engine import normalize_url
from runtime.store.holds import HEARTBEAT_BATCH, WORKER_LOST_STATUS, heartbeat_statements
from runtime.store.migrations import MIGRATIONS
from runtime.store.schema import holds, schema_migrations
from tests.harness import postgres_schema
from tests.store.schema_v3 import metadata_v3


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/holds.db"
        return
    with postgres_schema("tm_holds_", "the PostgreSQL variant needs a server") as url:
        yield url


@pytest.fixture
def worker(db_url: str) -> Iterator[Store]:
    """The worker that took the holds."""
    with open_store(db_url) as store:
        yield store


@pytest.fixture
def other(db_url: str) -> Iterator[Store]:
    """Another worker (or node) on the same database: the one that sweeps."""
    with open_store(db_url) as store:
        yield store


@pytest.fixture
def raw(db_url: str) -> Iterator:
    engine = create_engine(normalize_url(db_url))
    try:
        yield engine
    finally:
        engine.dispose()


def _progress(cost: int, prompt: int = 120, completion: int = 45) -> dict:
    return {"cost": cost, "prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": 0, "units": {}, "endpoint": "chat", "model": "openai/gpt-4o",
            "provider": "openai", "key_id": None}


def _age(raw, request_id: str, seconds: float) -> None:
    """Make a hold look as if its worker last spoke `seconds` ago."""
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    with raw.begin() as conn:
        conn.execute(update(holds).where(holds.c.request_id == request_id)
                     .values(created_at=then, heartbeat_at=then))


def _row(raw, request_id: str):
    with raw.connect() as conn:
        return conn.execute(select(holds).where(holds.c.request_id == request_id)).first()


def _balance(store: Store, account_id: int) -> int:
    return store.get_account_by_id(account_id).balance_nano


def _usage(store: Store, account_id: int) -> list[UsageRecord]:
    return store.usage(store.get_account_by_id(account_id).name)


# heartbeats and progress


def test_heartbeat_stamps_every_open_hold_and_records_changed_progress(worker, raw):
    acme = worker.create_account("acme", 1_000_000)
    for rid in ("streaming", "waiting"):
        assert worker.hold(rid, acme.id, 10_000)
    produced = {"cost": 100}
    worker.open_holds.watch("streaming", lambda: _progress(produced["cost"]))
    before = datetime.now(UTC) - timedelta(seconds=1)

    assert worker.heartbeat_holds("node-a:123:abc") == 2
    streaming, waiting = _row(raw, "streaming"), _row(raw, "waiting")
    for row in (streaming, waiting):
        assert row.owner == "node-a:123:abc"
        assert _utc(row.heartbeat_at) > before
    assert json.loads(streaming.progress)["cost"] == 100
    assert waiting.progress is None

    produced["cost"] = 250
    assert worker.open_holds.changed_progress() == {
        "streaming": json.dumps(_progress(250), separators=(",", ":"), sort_keys=True)}
    worker.heartbeat_holds("node-a:123:abc")
    assert json.loads(_row(raw, "streaming").progress)["cost"] == 250
    assert worker.open_holds.changed_progress() == {}   # nothing new to record

    worker.settle("streaming", 300, UsageRecord("streaming", acme.id, None, "chat", "m", "p",
                                                200))
    assert worker.heartbeat_holds("node-a:123:abc") == 1   # settled holds are not kept
    assert "streaming" not in worker.open_holds


def test_heartbeat_batches_hundreds_of_holds(worker, raw):
    ids = [f"r{i}" for i in range(HEARTBEAT_BATCH * 2 + 10)]
    statements = list(heartbeat_statements(ids, {ids[0]: "{}", ids[-1]: "{}"}, "me", "t",
                                           "qmark"))
    assert len(statements) == 3
    assert list(heartbeat_statements(ids[:HEARTBEAT_BATCH], {}, "me", "t", "format"))[0][0] \
        .count("%s") == HEARTBEAT_BATCH + 2

    acme = worker.create_account("acme", 10_000_000)
    for rid in ids:
        assert worker.hold(rid, acme.id, 1)
    worker.open_holds.watch(ids[-1], lambda: _progress(1))
    assert worker.heartbeat_holds("me") == len(ids)
    with raw.connect() as conn:
        owners = conn.execute(select(holds.c.owner, holds.c.progress)).all()
    assert [o for o, _ in owners] == ["me"] * len(ids)
    assert sum(p is not None for _, p in owners) == 1


# the sweep


def test_a_lost_workers_hold_is_settled_at_its_progress(worker, other, raw):
    acme = worker.create_account("acme", 100_000)
    assert worker.hold("req-lost", acme.id, 10_000)
    worker.open_holds.watch("req-lost", lambda: _progress(3_000))
    worker.heartbeat_holds("node-a:1:aa")
    _age(raw, "req-lost", 120)

    swept = other.sweep_stale_holds(60)
    assert [(s.request_id, s.held, s.charged, s.logged) for s in swept] == [
        ("req-lost", 10_000, 3_000, True)]
    assert _row(raw, "req-lost") is None
    assert _balance(other, acme.id) == 97_000
    [row] = _usage(other, acme.id)
    assert (row.status, row.cost_nano, row.prompt_tokens, row.completion_tokens,
            row.model, row.endpoint) == (WORKER_LOST_STATUS, 3_000, 120, 45, "openai/gpt-4o",
                                         "chat")
    assert other.sweep_stale_holds(60) == []
    # a worker that was only stalled settles later: it is charged nothing more
    late = UsageRecord("req-lost", acme.id, None, "chat", "openai/gpt-4o", "openai", 200)
    assert worker.settle("req-lost", 5_000, late) == 0
    assert _balance(worker, acme.id) == 97_000
    assert len(_usage(worker, acme.id)) == 1


def test_a_hold_the_provider_never_accepted_is_given_back(worker, other, raw):
    acme = worker.create_account("acme", 100_000)
    assert worker.hold("req-unsent", acme.id, 10_000)
    worker.heartbeat_holds("node-a:1:aa")
    _age(raw, "req-unsent", 120)
    [swept] = other.sweep_stale_holds(60)
    assert (swept.charged, swept.logged) == (0, False)
    assert _balance(other, acme.id) == 100_000
    assert _usage(other, acme.id) == []


def test_fresh_holds_and_the_sweepers_own_holds_are_left_alone(worker, other, raw):
    acme = worker.create_account("acme", 100_000)
    assert worker.hold("live-elsewhere", acme.id, 1_000)
    worker.heartbeat_holds("node-a:1:aa")
    assert other.hold("own", acme.id, 1_000)
    _age(raw, "own", 120)   # even when its own heartbeat failed for a while
    # a long-lived request whose heartbeat is fresh
    with raw.begin() as conn:
        conn.execute(update(holds).where(holds.c.request_id == "live-elsewhere")
                     .values(created_at=datetime.now(UTC) - timedelta(hours=2)))
    assert other.sweep_stale_holds(60) == []
    assert _row(raw, "live-elsewhere") is not None and _row(raw, "own") is not None
    assert _balance(other, acme.id) == 98_000


def test_progress_beyond_hold_and_balance_never_drives_the_balance_below_zero(worker, other,
                                                                             raw):
    acme = worker.create_account("acme", 1_500)
    assert worker.hold("req", acme.id, 1_000)
    worker.open_holds.watch("req", lambda: _progress(9_999))
    worker.heartbeat_holds("node-a:1:aa")
    _age(raw, "req", 120)
    [swept] = other.sweep_stale_holds(60)
    assert swept.charged == 9_999          # the rest beyond hold and balance is a debt
    assert _balance(other, acme.id) == 0
    assert other.get_account("acme").debt_nano == 9_999 - 1_500
    assert other.audit("acme")["ok"]


def test_many_sweepers_settle_each_hold_exactly_once(db_url, worker, raw):
    acme = worker.create_account("acme", 10_000_000)
    ids = [f"lost-{i}" for i in range(40)]
    for i, rid in enumerate(ids):
        assert worker.hold(rid, acme.id, 10_000)
        worker.open_holds.watch(rid, lambda i=i: _progress(100 + i))
    worker.heartbeat_holds("dead:1:aa")
    with raw.begin() as conn:
        conn.execute(update(holds).values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    sweepers = [open_store(db_url) for _ in range(4)]
    results: list = []
    barrier = threading.Barrier(len(sweepers))

    def sweep(store: Store) -> None:
        barrier.wait()
        results.extend(store.sweep_stale_holds(60))

    threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in sweepers:
        s.close()
    assert sorted(r.request_id for r in results) == sorted(ids)
    expected = sum(100 + i for i in range(len(ids)))
    rows = worker.usage("acme", 1000)
    assert len(rows) == len(ids) and sum(r.cost_nano for r in rows) == expected
    assert _balance(worker, acme.id) == 10_000_000 - expected


# the keeper loop


def test_the_keeper_keeps_its_holds_alive_and_sweeps_a_dead_workers(worker, other, raw):
    acme = worker.create_account("acme", 100_000)
    assert worker.hold("dead-stream", acme.id, 10_000)
    worker.open_holds.watch("dead-stream", lambda: _progress(2_500))
    worker.heartbeat_holds("dead:1:aa")         # then the worker is gone: no more beats
    assert other.hold("live-stream", acme.id, 10_000)
    keeper = HoldKeeper(other, HoldSettings(heartbeat_seconds=0.1, stale_seconds=0.6))
    keeper.start()
    try:
        deadline = time.monotonic() + 10
        while _row(raw, "dead-stream") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _row(raw, "dead-stream") is None
        time.sleep(1.0)    # well past the grace: the keeper's own hold stays
        live = _row(raw, "live-stream")
        assert live is not None and live.owner == keeper.owner
    finally:
        keeper.stop()
    [row] = _usage(other, acme.id)
    assert (row.request_id, row.cost_nano, row.status) == ("dead-stream", 2_500, 499)
    assert _balance(other, acme.id) == 100_000 - 10_000 - 2_500


def test_the_grace_must_cover_several_heartbeats():
    with pytest.raises(ValueError, match="TOKMODEL_HOLD_STALE_SECONDS"):
        HoldSettings.from_env({"TOKMODEL_HOLD_HEARTBEAT_SECONDS": "30",
                               "TOKMODEL_HOLD_STALE_SECONDS": "45"})
    assert HoldSettings.from_env({}) == HoldSettings(10.0, 60.0)


# migration 5


def test_migration_5_adds_the_columns_and_keeps_open_holds(db_url, raw):
    """A database at version 3 (holds without owner, heartbeat, progress) gets them; an open
    hold survives and can be swept."""
    old = metadata_v3()   # holds without rowid, as version 2 left it
    then = datetime.now(UTC) - timedelta(hours=1)
    with raw.begin() as conn:
        old.create_all(conn)
        conn.execute(insert(old.tables["schema_migrations"]),
                     [{"version": v, "name": f"v{v}", "applied_at": then} for v in (1, 2, 3)])
        conn.execute(insert(old.tables["accounts"]),
                     {"id": 1, "name": "acme", "balance_micro": 900, "created_at": then})
        conn.execute(insert(old.tables["holds"]),
                     {"request_id": "req-open", "account_id": 1, "amount_micro": 100,
                      "created_at": then})
    with open_store(db_url) as store:
        with raw.connect() as conn:
            versions = conn.execute(select(schema_migrations.c.version)).scalars().all()
        assert sorted(versions) == [m.version for m in MIGRATIONS]
        assert _row(raw, "req-open").owner is None
        [swept] = store.sweep_stale_holds(60)
        assert (swept.request_id, swept.logged) == ("req-open", False)
        assert store.get_account("acme").balance_nano == 1_000_000   # version 4: nano
        assert store.audit("acme")["ok"]
        assert store.migrate() == []


# the operator's command


def _tokmodel(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "TOKMODEL_DATABASE_URL": db_url,
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True,
                          text=True, env=env, check=False)


def test_holds_release_settles_what_was_produced_and_refund_gives_back(db_url, worker, raw):
    acme = worker.create_account("acme", 100_000)
    for rid in ("produced", "unsent", "recent", "refunded"):
        assert worker.hold(rid, acme.id, 10_000)
    worker.open_holds.watch("produced", lambda: _progress(4_000))
    worker.open_holds.watch("refunded", lambda: _progress(4_000))
    worker.heartbeat_holds("dead:1:aa")
    _age(raw, "produced", 7200)
    _age(raw, "unsent", 7200)
    _age(raw, "refunded", 9000)
    listed = json.loads(_tokmodel(db_url, "holds", "list", "--json").stdout)
    assert {h["request_id"]: h["progress"] and h["progress"]["cost"] for h in listed} == {
        "produced": 4_000, "unsent": None, "recent": None, "refunded": 4_000}
    assert {h["owner"] for h in listed} == {"dead:1:aa"}

    refund = _tokmodel(db_url, "holds", "release", "--older-than", "8000", "--refund")
    assert refund.returncode == 0, refund.stderr
    assert "1 hold(s)" in refund.stdout and "0 settled" in refund.stdout
    assert _row(raw, "refunded") is None and _usage(worker, acme.id) == []

    released = _tokmodel(db_url, "holds", "release", "--older-than", "3600")
    assert released.returncode == 0, released.stderr
    assert "2 hold(s)" in released.stdout and "1 settled" in released.stdout
    assert "0.000004 credits charged" in released.stdout
    [row] = _usage(worker, acme.id)
    assert (row.request_id, row.cost_nano, row.status) == ("produced", 4_000, 499)
    assert _row(raw, "recent") is not None
    assert _balance(worker, acme.id) == 100_000 - 10_000 - 4_000
    assert worker.audit("acme")["ok"]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
