"""A worker killed mid-stream (kill -9): its hold is settled by a sweeper for what was
produced, while a long stream served by another gateway process on the same database ("another
node") keeps its hold and is charged normally when it ends. On a SQLite file shared by both
gateways, and on PostgreSQL when TOKMODEL_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from datetime import UTC, datetime

import pytest
import requests

from runtime.catalogue import load_catalogue
from runtime.store.holds import WORKER_LOST_STATUS
from tests.fakes import FakeOpenAI
from tests.harness import START_CREDITS, Gateway, postgres_schema

pytestmark = pytest.mark.integration

HEARTBEAT, STALE = 0.3, 3.0
MODEL = "openai/gpt-4o"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_url(request, tmp_path_factory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('shared')}/tokmodel.db"
        return
    with postgres_schema("tm_lost_", "the PostgreSQL variant needs a server") as url:
        yield url


@pytest.fixture(scope="module")
def nodes(db_url, start_fakes, gateway_factory):
    """Two gateways (one worker each) on one database, each with its own slow upstream."""
    fast = start_fakes(FakeOpenAI(api_key="sk-up", chunk_delay=0.05))
    slow = start_fakes(FakeOpenAI(api_key="sk-up", chunk_delay=0.3))
    common = {"TOKMODEL_DATABASE_URL": db_url, "OPENAI_API_KEY": "sk-up",
              "TOKMODEL_HOLD_HEARTBEAT_SECONDS": str(HEARTBEAT),
              "TOKMODEL_HOLD_STALE_SECONDS": str(STALE)}
    node_a = gateway_factory("node-a", {**common, "OPENAI_BASE_URL": fast.base_url})
    node_b = gateway_factory("node-b", {**common, "OPENAI_BASE_URL": slow.base_url})
    return node_a, node_b, slow


def _stream(gw: Gateway, secret: str, text: str) -> requests.Response:
    resp = requests.post(f"{gw.base_url}/chat/completions", stream=True, timeout=60,
                         headers={"Authorization": f"Bearer {secret}"},
                         json={"model": MODEL, "stream": True, "max_tokens": 1000,
                               "stream_options": {"include_usage": True},
                               "messages": [{"role": "user", "content": text}]})
    assert resp.status_code == 200, resp.text
    return resp


def _events(resp: requests.Response):
    for line in resp.iter_lines(chunk_size=64):
        if line.startswith(b"data: "):
            yield line[6:]


def _hold(gw: Gateway, request_id: str):
    return next((h for h in gw.store.list_holds() if h.request_id == request_id), None)


def _wait(what, deadline_s: float, step: float = 0.1):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(step)
    return what()


def _worker_pid(gw: Gateway) -> int:
    """The gateway's only worker: the gunicorn master's child."""
    master = gw.process.pid
    with open(f"/proc/{master}/task/{master}/children") as f:
        [pid] = [int(p) for p in f.read().split()]
    return pid


def test_a_killed_workers_stream_is_charged_for_what_it_produced(nodes):
    node_a, node_b, slow_upstream = nodes
    account_a, secret_a = node_a.account(START_CREDITS)
    account_b, secret_b = node_b.account(START_CREDITS)

    # a long stream on node B: 200 words, 0.3 s apart, kept going throughout
    live = _stream(node_b, secret_b, " ".join(f"b{i}" for i in range(200)))
    live_id = live.headers["x-request-id"]
    live_events = _events(live)
    next(live_events)

    # on node A: a stream read for 40 words, recorded on its hold, then its worker killed
    prompt = " ".join(f"a{i}" for i in range(200))
    doomed = _stream(node_a, secret_a, prompt)
    doomed_id = doomed.headers["x-request-id"]
    doomed_events = _events(doomed)   # kept: a dropped generator would close the response
    streamed_chars = words = 0
    for data in doomed_events:
        delta = json.loads(data)["choices"][0]["delta"] if data.startswith(b"{") else {}
        if delta.get("content"):
            streamed_chars += len(delta["content"])
            words += 1
        if words == 40:
            break
    recorded = _wait(lambda: (h := _hold(node_a, doomed_id)) and h.progress and h.progress[
        "completion_tokens"] >= math.ceil(streamed_chars / 4) and h, 10)
    assert recorded, f"no progress on the hold: {node_a.store.list_holds()} {streamed_chars}"
    pid = _worker_pid(node_a)
    assert f":{pid}:" in recorded.owner
    os.kill(pid, signal.SIGKILL)
    doomed.close()
    killed_at = time.monotonic()

    # a sweeper (node A's next worker, or node B's) settles it once its heartbeat is stale
    assert _wait(lambda: _hold(node_a, doomed_id) is None, 40), "the lost hold was not swept"
    assert time.monotonic() - killed_at >= STALE - 2 * HEARTBEAT
    [row] = node_a.store.usage(node_a.store.get_account_by_id(account_a).name)
    assert row.request_id == doomed_id and row.status == WORKER_LOST_STATUS
    assert row.prompt_tokens >= math.ceil(len(prompt) / 4)
    assert row.completion_tokens >= math.ceil(streamed_chars / 4) > 0
    model = load_catalogue(env={"OPENAI_API_KEY": "k"}).get(MODEL)
    at_least = (row.prompt_tokens * model.price("input_per_mtok")
                + row.completion_tokens * model.price("output_per_mtok")) * 1000
    assert row.cost_nano == math.ceil(at_least)
    assert row.cost_nano == START_CREDITS - node_a.balance(account_a)
    assert row.cost_nano < recorded.amount     # charged for what was produced, not the hold

    # node B's stream is long past the grace, but alive: its hold was never swept
    held = _hold(node_b, live_id)
    assert held is not None and held.owner != recorded.owner
    now = datetime.now(UTC)
    assert (now - held.created_at).total_seconds() > STALE
    assert (now - held.heartbeat_at).total_seconds() < STALE
    assert node_b.store.usage(node_b.store.get_account_by_id(account_b).name) == []

    # it ends normally and is charged by its own worker from the upstream's usage
    slow_upstream.chunk_delay = 0
    try:
        rest = list(live_events)
    finally:
        slow_upstream.chunk_delay = 0.3
    assert rest[-1] == b"[DONE]"
    usage = json.loads(rest[-2])["usage"]
    assert usage["completion_tokens"] == 201    # "echo:" and the 200 words
    node_b.settled(account_b)
    [done] = node_b.store.usage(node_b.store.get_account_by_id(account_b).name)
    assert (done.request_id, done.status) == (live_id, 200)
    assert done.cost_nano == START_CREDITS - node_b.balance(account_b)
    assert usage["cost"] == done.cost_nano / 1_000_000_000
    assert _hold(node_b, live_id) is None

    # node A serves again, from the worker gunicorn started in place of the killed one
    again = requests.post(f"{node_a.base_url}/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {secret_a}"},
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 200
    assert "lost worker settled" in node_a.log() + node_b.log()
