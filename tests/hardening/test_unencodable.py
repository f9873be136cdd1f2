"""Text that cannot be encoded (a lone UTF-16 surrogate) is a 400 naming the field, in the
client's error format, on every JSON endpoint, for every provider kind: never a 500, never a
charge (the in-process app of tests/app/test_bad_input.py: real store, real fake upstreams;
`App.send` checks the balance, the usage rows, the holds and the envelope of every answer)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.app.test_bad_input import JSON_CT, JSON_ROUTES, App

LONE = "before \ud800 after"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    started = App(tmp_path_factory.mktemp("unencodable"))
    yield started
    started.stop()


def _template(path: str, model: str, index: int = 0) -> dict[str, Any]:
    found = [t for t in JSON_ROUTES[path] if t.get("model") == model]
    return copy.deepcopy(found[index])


def _set(body: Any, where: tuple[Any, ...], value: Any) -> None:
    for step in where[:-1]:
        body = body[step]
    body[where[-1]] = value


CASES = [
    # (path, model, template index, where to put the surrogate, the field the 400 names)
    ("/v1/chat/completions", "mistral/mistral-small-latest", 0, ("messages", 1, "content"),
     "messages[1].content"),
    ("/v1/chat/completions", "anthropic/claude-haiku-4-5", 0, ("messages", 0, "content"),
     "messages[0].content"),
    ("/v1/chat/completions", "google/gemini-2.0-flash", 2,
     ("tools", 0, "function", "description"), "tools[0].function.description"),
    ("/v1/chat/completions", "anthropic/claude-haiku-4-5", 2,
     ("messages", 2, "content"), "messages[2].content"),
    ("/v1/messages", "anthropic/claude-haiku-4-5", 0, ("system",), "system"),
    ("/v1/messages", "anthropic/claude-haiku-4-5", 0, ("messages", 0, "content"),
     "messages[0].content"),
    ("/v1/messages", "anthropic/claude-haiku-4-5", 3, ("tools", 0, "description"),
     "tools[0].description"),
    ("/v1/messages", "anthropic/claude-haiku-4-5", 2,
     ("messages", 2, "content", 0, "content"), "messages[2].content[0].content"),
    ("/v1/messages", "mistral/mistral-small-latest", 3, ("system", 0, "text"),
     "system[0].text"),
    ("/v1/responses", "openai/gpt-4o-mini", 0, ("instructions",), "instructions"),
    ("/v1/responses", "mistral/mistral-small-latest", 0, ("input",), "input"),
    ("/v1/responses", "mistral/mistral-small-latest", 2, ("input", 2, "output"),
     "input[2].output"),
    ("/v1/responses/compact", "anthropic/claude-haiku-4-5", 0, ("input", 0, "content"),
     "input[0].content"),
    ("/v1/responses/compact", "openai/gpt-4o-mini", 0, ("instructions",), "instructions"),
    ("/v1/embeddings", "openai/text-embedding-3-small", 0, ("input", 1), "input[1]"),
    ("/v1/embeddings", "openai/text-embedding-3-large", 0, ("input",), "input"),
    ("/v1/rerank", "vllm/bge-reranker-v2-m3", 0, ("query",), "query"),
    ("/v1/rerank", "cohere/rerank-v3.5", 0, ("documents", 1, "text"), "documents[1].text"),
    ("/v1/images/generations", "openai/dall-e-2", 0, ("prompt",), "prompt"),
    ("/v1/audio/speech", "openai/tts-1", 0, ("input",), "input"),
    ("/v1/messages/count_tokens", "anthropic/claude-haiku-4-5", 0,
     ("messages", 0, "content"), "messages[0].content"),
]


@pytest.mark.parametrize(("path", "model", "index", "where", "field"), CASES,
                         ids=[f"{c[0]}:{c[1]}:{c[4]}" for c in CASES])
def test_lone_surrogate_is_a_400_naming_the_field(app, path, model, index, where, field):
    if path == "/v1/responses/compact":
        body = copy.deepcopy(JSON_ROUTES[path][0])
        body["model"] = model
    elif path == "/v1/messages/count_tokens":    # free, but its body is checked the same
        body = _template("/v1/messages", model)
        del body["max_tokens"]
    else:
        body = _template(path, model, index)
    _set(body, where, LONE)
    raw = json.dumps(body).encode()          # the standard library escapes it as \ud800
    assert b"\\ud800" in raw
    result = app.send("POST", path, raw, JSON_CT)   # no 5xx, no charge, no hold, envelope
    assert result.status_code == 400, result.text
    error = result.json["error"]
    assert field in error["message"] and "surrogate" in error["message"]
    if path.startswith("/v1/messages"):
        assert result.json["type"] == "error" and error["type"] == "invalid_request_error"
    else:
        assert error["param"] == field


def test_raw_surrogate_bytes_and_surrogate_keys_are_refused(app):
    body = _template("/v1/chat/completions", "mistral/mistral-small-latest")
    raw = json.dumps(body).encode().replace(b"hello there", b"hello \xed\xa0\x80 there")
    result = app.send("POST", "/v1/chat/completions", raw, JSON_CT)
    assert result.status_code == 400 and result.json["error"]["param"] == "messages[1].content"
    # an upper-case escape (Java's encoders write them), and a low surrogate alone
    for escape in (b"\\uDBFF", b"\\uDc00"):
        raw = json.dumps(body).encode().replace(b"hello there", b"hello " + escape + b" there")
        result = app.send("POST", "/v1/chat/completions", raw, JSON_CT)
        assert result.status_code == 400, (escape, result.text)
    body = _template("/v1/messages", "anthropic/claude-haiku-4-5")
    body["metadata"] = {"\udc00key": "v"}
    result = app.send("POST", "/v1/messages", json.dumps(body).encode(), JSON_CT)
    assert result.status_code == 400
    assert "metadata.\\udc00key" in result.json["error"]["message"]


def test_escaped_surrogate_pairs_are_text_and_served(app):
    body = _template("/v1/messages", "anthropic/claude-haiku-4-5")
    body["messages"][0]["content"] = "a smile \U0001F600"
    raw = json.dumps(body).encode()
    assert b"\\ud83d\\ude00" in raw
    result = app.send("POST", "/v1/messages", raw, JSON_CT)
    assert result.status_code == 200, result.text
    assert "\U0001F600" in json.dumps(app.anthropic.requests[-1].body, ensure_ascii=False)
