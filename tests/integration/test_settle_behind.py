"""Settlements written behind the answer, end to end under gunicorn's gevent worker: the
client gets its whole answer, cost included, while the database cannot take the write; the
account is charged exactly that cost once the write goes through; and a worker told to stop
writes the settlements still behind their answers before it exits."""

from __future__ import annotations

import signal
import sqlite3
import threading
from contextlib import contextmanager

import pytest

from tests.fakes import FakeOpenAI
from tests.harness import openai_client

pytestmark = pytest.mark.integration

MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeOpenAI(api_key="sk-up", chunk_delay=0.1))


def start(gateway_factory, fakes, name: str):
    return gateway_factory(name, {"OPENAI_BASE_URL": fakes.base_url,
                                  "OPENAI_API_KEY": "sk-up"})


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return start(gateway_factory, fakes, "gw-behind")


@contextmanager
def write_lock(gw):
    """SQLite's write lock, taken by another connection (as a long write would hold it)."""
    db = sqlite3.connect(gw.db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def stream_under_lock(gw, account: int, secret: str, then=None
                      ) -> tuple[str, float, int, list[int]]:
    """Stream a chat answer, taking the write lock once the stream has started (so after
    the hold) and keeping it until `then()` returns; (text, cost shown, balance and the held
    amounts of the account seen while the lock was held)."""
    client = openai_client(gw, secret)
    chunks = client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "settle me after the answer"}])
    first = next(chunks)
    text = first.choices[0].delta.content or "" if first.choices else ""
    with write_lock(gw):
        usage = None
        for chunk in chunks:   # the whole answer, its final usage chunk and [DONE]
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        balance = gw.store.get_account_by_id(account).balance_nano
        held = [h.amount for h in gw.store.list_holds() if h.account_id == account]
        if then is not None:
            then()
    return text, usage.model_extra["cost"], balance, held


def test_the_answer_does_not_wait_for_the_settlement_write(gw, up):
    account, secret = gw.account()
    text, cost, during, held = stream_under_lock(gw, account, secret)
    assert text == "echo: settle me after the answer"
    assert cost > 0
    assert len(held) == 1   # answered, its hold still in place while the write waits
    assert during == 10_000_000_000 - held[0]
    assert gw.settled(account)
    assert gw.balance(account) == 10_000_000_000 - round(cost * 1_000_000_000)
    assert [(r.status, r.cost_nano) for r in gw.store.usage(
        gw.store.get_account_by_id(account).name)] == [(200, round(cost * 1_000_000_000))]


def test_a_stopping_worker_writes_what_is_behind_its_answers(fakes, gateway_factory):
    gw = start(gateway_factory, fakes, "gw-behind-stop")
    account, secret = gw.account()
    stopped = threading.Event()

    def stop_while_locked() -> None:
        gw.process.send_signal(signal.SIGTERM)   # graceful stop, the write still waiting
        stopped.set()

    _, cost, _, held = stream_under_lock(gw, account, secret, then=stop_while_locked)
    assert len(held) == 1
    assert stopped.is_set()
    assert gw.process.wait(timeout=30) == 0
    assert gw.store.list_holds() == []
    assert gw.balance(account) == 10_000_000_000 - round(cost * 1_000_000_000)
    assert gw.audit(account)["ok"]
