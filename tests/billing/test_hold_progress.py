"""A stream's progress recorded on its hold, through the real pipeline in-process: the app's
WSGI body is read chunk by chunk from a fake upstream, and the worker's heartbeat records the
prompt estimate plus the output counted so far (never before the provider accepted it)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from falcon import testing
from sqlalchemy import select

from generated import registry
from runtime.app import create_app
from runtime.catalogue import load_catalogue
from runtime.settings import Settings
from runtime.store import open_store
from runtime.store.schema import holds
from runtime.upstream import Upstream
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic

WORDS = " ".join(f"word{i}" for i in range(40))


@pytest.fixture(scope="module")
def fakes():
    openai, anthropic = FakeOpenAI(api_key="up-key").start(), FakeAnthropic(api_key="an-key")
    anthropic.start()
    yield openai, anthropic
    anthropic.stop()
    openai.stop()


@pytest.fixture
def env(tmp_path, fakes):
    openai, anthropic = fakes
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    catalogue = load_catalogue(env={"OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "up-key",
                                    "ANTHROPIC_BASE_URL": anthropic.base_url,
                                    "ANTHROPIC_API_KEY": "an-key"})
    app = create_app(Settings(database_url="sqlite://"), registry, store, Upstream(2, 5),
                     catalogue)
    store.create_account("acme", 50_000_000_000)
    _, secret = store.create_key("acme", "ci")
    yield app, store, secret, catalogue
    store.close()


def _open(app, secret: str, path: str, body: dict) -> tuple[str, Iterator[bytes], object]:
    environ = testing.create_environ(method="POST", path=path, body=json.dumps(body),
                                     headers={"Authorization": f"Bearer {secret}",
                                              "Content-Type": "application/json"})
    started: dict = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=dict(headers))

    result = app(environ, start_response)
    assert started["status"].startswith("200"), started
    return started["headers"]["x-request-id"], iter(result), result


def _progress(store, request_id: str) -> dict | None:
    with store._reader.connect() as conn:
        text = conn.execute(select(holds.c.progress)
                            .where(holds.c.request_id == request_id)).scalar()
    return json.loads(text) if text else None


def _read_until(chunks: Iterator[bytes], needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        seen += next(chunks)
    return seen


def test_a_chat_streams_progress_is_its_prompt_estimate_plus_its_output_so_far(env):
    app, store, secret, catalogue = env
    prompt = "Count: " + WORDS
    rid, chunks, result = _open(app, secret, "/v1/chat/completions", {
        "model": "openai/gpt-4o", "stream": True, "max_tokens": 500,
        "messages": [{"role": "user", "content": prompt}]})
    assert store.heartbeat_holds("me") == 1
    at_start = _progress(store, rid)
    # accepted (the first chunk is in): at least the prompt estimate is owed
    assert at_start["prompt_tokens"] >= math.ceil(len(prompt) / 4)
    assert at_start["cost"] > 0 and at_start["model"] == "openai/gpt-4o"

    seen = _read_until(chunks, b"word20")
    store.heartbeat_holds("me")
    later = _progress(store, rid)
    streamed = sum(len(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
                   for line in seen.decode().split("\n\n") if line.startswith("data: {"))
    assert later["completion_tokens"] >= math.ceil(streamed / 4) > 0
    assert later["prompt_tokens"] == at_start["prompt_tokens"]
    model = catalogue.get("openai/gpt-4o")
    expected = (later["prompt_tokens"] * model.price("input_per_mtok")
                + later["completion_tokens"] * model.price("output_per_mtok")) * 1000
    assert later["cost"] == math.ceil(expected) > at_start["cost"]

    result.close()   # the client leaves: the worker settles it, and stops keeping it
    assert rid not in store.open_holds and _progress(store, rid) is None
    [row] = store.usage("acme")
    assert row.status == 499 and row.cost_nano >= later["cost"]


def test_an_anthropic_streams_progress_has_the_prompt_its_upstream_counted(env):
    app, store, secret, _ = env
    rid, chunks, result = _open(app, secret, "/v1/messages", {
        "model": "anthropic/claude-sonnet-4-5", "stream": True, "max_tokens": 500,
        "messages": [{"role": "user", "content": WORDS}]})
    _read_until(chunks, b"word10")
    store.heartbeat_holds("me")
    progress = _progress(store, rid)
    assert progress["prompt_tokens"] == 40       # the fake counts words
    assert progress["completion_tokens"] >= 1 and progress["cost"] > 0
    result.close()


def test_nothing_is_recorded_for_a_request_not_yet_accepted(env):
    _, store, _, _ = env
    account = store.get_account("acme")
    assert store.hold("req-waiting", account.id, 1_000)
    assert store.heartbeat_holds("me") == 1
    assert _progress(store, "req-waiting") is None
