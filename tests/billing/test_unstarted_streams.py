"""A stream body the server closes before it ever ran (the client left before the first
byte went out) still pays the prompt of the request the provider accepted."""

from __future__ import annotations

import json

import pytest

from runtime.billing.meter import Meter
from runtime.catalogue import load_catalogue
from runtime.clients.chat import ChatStream
from runtime.clients.messages import PassthroughStream
from runtime.sse import iter_events
from runtime.store import open_store

CLAUDE = "anthropic/claude-sonnet-4-5"


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/tokmodel.db") as s:
        yield s


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(env={})


def meter(store, model: str) -> Meter:
    store.create_account("acct", 1_000_000_000)
    key, _secret = store.create_key("acct")
    m = Meter(store, key, "messages", model, model.split("/")[0])
    m.reserve(500_000_000)
    return m


def test_anthropic_body_never_started_pays_message_start_input(store, catalogue):
    model = catalogue.get(CLAUDE)
    m = meter(store, CLAUDE)
    start = {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5", "usage": {"input_tokens": 1234, "output_tokens": 1}}}
    first = f"event: message_start\ndata: {json.dumps(start)}\n\n".encode()
    closed = []
    body = PassthroughStream(iter_events(iter([first])), model=model, client_model=CLAUDE,
                             meter=m, on_close=lambda: closed.append(True),
                             prompt=lambda: 99)
    body.close()
    (row,) = store.usage("acct")
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (499, 1234, 1)
    assert row.cost_nano == (1234 * 3 + 15) * 1000 and closed == [True]


def test_chat_body_never_started_pays_the_prompt_estimate(store, catalogue):
    model = catalogue.get("openai/gpt-4o")
    m = meter(store, "openai/gpt-4o")
    body = ChatStream(iter(()), model=model, client_model="gpt-4o", meter=m,
                      include_usage=False, prompt=lambda: 400, on_close=lambda: None)
    body.close()
    (row,) = store.usage("acct")
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (499, 400, 0)
    assert row.cost_nano == 1_000_000
