"""Bad input on every route: hypothesis sends arbitrary, mutated and malformed requests to the
in-process app (real SQLite store, healthy fake upstreams) and checks the gateway's promise.

For every answer: the status is below 500; a 4xx carries a JSON error body in the client's
envelope (OpenAI's, or Anthropic's on /v1/messages) with a non-empty message; an answer that is
not a 200 leaves the balance as it was and logs no row with a cost; a 200 is charged exactly
once; no hold is left behind.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
from typing import Any

import pytest
from falcon import testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from generated import registry
from runtime.app import create_app
from runtime.catalogue import load_catalogue
from runtime.settings import Settings
from runtime.store import open_store
from runtime.upstream import Upstream
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.media_upstream import PNG, FakeOpenAIMedia, make_wav
from tests.fakes.rerank_upstream import FakeCohere
from tests.fakes.responses_upstream import FakeResponses

LIMIT = 64 * 1024
START = 10**12

# BAD_INPUT_EXAMPLES=500 explores further (locally); CI runs the small fixed default.
EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES") or 25)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
FEW = settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))


class FakeOpenAIAll(FakeResponses, FakeOpenAIMedia):
    """OpenAI's Responses, embeddings, images, audio and rerank routes on one server."""

    routes = {**FakeOpenAIMedia.routes, **FakeResponses.routes}


class App:
    def __init__(self, tmp: Any) -> None:
        self.chat = FakeOpenAI(api_key="mistral-key", models=None).start()
        self.openai = FakeOpenAIAll(api_key="sk-up", models=None).start()
        self.anthropic = FakeAnthropic(api_key="ant-key").start()
        self.gemini = FakeGemini(api_key="goog-key").start()
        self.cohere = FakeCohere(api_key="co-key").start()
        self.db = tmp / "db.sqlite"
        settings_ = Settings(database_url=f"sqlite:///{self.db}", max_body_bytes=LIMIT)
        self.store = open_store(settings_.database_url)
        catalogue = load_catalogue(env={
            "MISTRAL_BASE_URL": self.chat.base_url, "MISTRAL_API_KEY": "mistral-key",
            "OPENAI_BASE_URL": self.openai.base_url, "OPENAI_API_KEY": "sk-up",
            "VLLM_BASE_URL": self.openai.base_url, "VLLM_API_KEY": "sk-up",
            "ANTHROPIC_BASE_URL": self.anthropic.origin, "ANTHROPIC_API_KEY": "ant-key",
            "GOOGLE_BASE_URL": self.gemini.origin, "GOOGLE_API_KEY": "goog-key",
            "COHERE_BASE_URL": self.cohere.origin, "COHERE_API_KEY": "co-key"})
        self.app = create_app(settings_, registry, self.store, Upstream(2, 10), catalogue)
        self.store.create_account("acme", START)
        _, self.secret = self.store.create_key("acme", "fuzz")
        self.client = testing.TestClient(self.app)

    def stop(self) -> None:
        self.store.close()
        self.chat.stop()
        for fake in (self.openai, self.anthropic, self.gemini, self.cohere):
            fake.stop()

    def fake_errors(self) -> list[BaseException]:
        return [*self.chat.errors, *self.openai.errors, *self.anthropic.errors,
                *self.gemini.errors, *self.cohere.errors]

    def clear_fake_errors(self) -> None:
        for fake in (self.chat, self.openai, self.anthropic, self.gemini, self.cohere):
            fake.errors.clear()

    # -- the ledger, read directly --

    def _query(self, sql: str, *args: Any) -> list[tuple]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def balance(self) -> int:
        return self.store.get_account("acme").balance_nano

    def last_usage_id(self) -> int:
        return self._query("SELECT COALESCE(MAX(id), 0) FROM usage_log")[0][0]

    def usage_since(self, after: int) -> list[tuple[str, int, int]]:
        return self._query("SELECT request_id, status, cost_nano FROM usage_log WHERE id > ?",
                           after)

    # -- one request and every check on its answer --

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, *, auth: bool = True) -> testing.Result:
        sent = {"Authorization": f"Bearer {self.secret}"} if auth else {}
        sent.update(headers or {})
        balance, last = self.balance(), self.last_usage_id()
        result = self.client.simulate_request(method, path, body=body, headers=sent)
        check_answer(self, path, result, balance, last)
        return result


def check_answer(app: App, path: str, result: testing.Result, balance: int, last: int) -> None:
    status = result.status_code
    assert status < 500, (status, result.text[:500])
    rows = app.usage_since(last)
    after = app.balance()
    if status == 200:
        if path.startswith(("/v1/models", "/v1beta/models")):
            assert rows == [] and after == balance
        else:
            request_id = result.headers.get("x-request-id")
            assert [r[0] for r in rows] == [request_id], rows
            assert rows[0][1] == 200
            assert balance - after == rows[0][2] >= 0
    else:
        assert after == balance, (status, result.text[:300])
        assert all(cost == 0 for _, _, cost in rows), rows
        assert all(s == status for _, s, _ in rows), (status, rows)
        check_envelope(path, result)
    assert app.store.release_stale_holds(0) == 0, "a hold was left behind"
    errors = app.fake_errors()
    app.clear_fake_errors()
    assert errors == [], "a fake upstream crashed"


def check_envelope(path: str, result: testing.Result) -> None:
    assert result.headers.get("content-type", "").startswith("application/json"), \
        result.headers
    body = json.loads(result.content)
    assert isinstance(body, dict), body
    if path.startswith("/v1/messages"):
        assert body.get("type") == "error", body
        error = body["error"]
        assert isinstance(error, dict) and isinstance(error.get("type"), str), body
    else:
        error = body.get("error")
        assert isinstance(error, dict), body
        assert {"message", "type"} <= set(error), body
    assert isinstance(error["message"], str) and error["message"].strip(), body


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    app = App(tmp_path_factory.mktemp("bad_input"))
    yield app
    app.stop()


# -- valid requests, the starting point of every mutation ----------------------------------

CHAT_MODELS = ("mistral/mistral-small-latest", "anthropic/claude-haiku-4-5",
               "google/gemini-2.0-flash")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}}}}]
IMAGE_URL = "data:image/png;base64,iVBORw0KGgo="


def chat_templates(model: str) -> list[dict[str, Any]]:
    return [
        {"model": model, "max_tokens": 16, "temperature": 0.5,
         "messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "hello there"}]},
        {"model": model, "stream": True, "stream_options": {"include_usage": True},
         "messages": [{"role": "user", "content": [
             {"type": "text", "text": "what is this"},
             {"type": "image_url", "image_url": {"url": IMAGE_URL}}]}]},
        {"model": model, "tools": TOOLS, "tool_choice": "auto",
         "messages": [{"role": "user", "content": "weather in Oslo"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "call_1", "type": "function", "function": {
                              "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
    ]


def chat_extra_templates(model: str) -> list[dict[str, Any]]:
    return [
        {"model": model, "n": 1, "stop": ["END"], "top_p": 0.9, "user": "u1",
         "response_format": {"type": "json_schema", "json_schema": {
             "name": "echo", "schema": {"type": "object"}}},
         "messages": [{"role": "developer", "content": "answer in json"},
                      {"role": "user", "name": "ann", "content": [
                          {"type": "text", "text": "json please"}]}]},
    ]


def responses_templates(model: str) -> list[dict[str, Any]]:
    return [
        {"model": model, "input": "hello there", "instructions": "be brief",
         "max_output_tokens": 32},
        {"model": model, "stream": True, "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                {"type": "input_image",
                                                 "image_url": IMAGE_URL}]}]},
        {"model": model, "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather",
             "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]},
        {"model": model, "text": {"format": {"type": "json_object"}}, "temperature": 0.2,
         "top_p": 0.5, "reasoning": {"effort": "low"}, "store": False,
         "input": [{"type": "message", "role": "developer", "content": "reply in json"},
                   {"type": "message", "role": "user", "content": [
                       {"type": "input_text", "text": "json please"}]}]},
    ]


def messages_templates(model: str) -> list[dict[str, Any]]:
    return [
        {"model": model, "max_tokens": 32, "system": "be brief",
         "messages": [{"role": "user", "content": "hello there"}]},
        {"model": model, "max_tokens": 32, "stream": True, "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}}]}]},
        {"model": model, "max_tokens": 32, "tools": [
            {"name": "get_weather", "input_schema": {"type": "object"}}],
         "messages": [{"role": "user", "content": "weather?"},
                      {"role": "assistant", "content": [
                          {"type": "tool_use", "id": "tu_1", "name": "get_weather",
                           "input": {"city": "Oslo"}}]},
                      {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": "tu_1",
                           "content": "sunny"}]}]},
        {"model": model, "max_tokens": 64, "temperature": 0.3,
         "stop_sequences": ["END"], "metadata": {"user_id": "u1"},
         "tool_choice": {"type": "auto"}, "tools": [
             {"name": "lookup", "description": "find", "input_schema": {
                 "type": "object", "properties": {"q": {"type": "string"}}}}],
         "system": [{"type": "text", "text": "be brief"}],
         "messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": [{"type": "text", "text": "again"}]}]},
    ]


JSON_ROUTES: dict[str, list[dict[str, Any]]] = {
    "/v1/chat/completions": [t for m in CHAT_MODELS
                             for t in chat_templates(m) + chat_extra_templates(m)],
    "/v1/responses": [t for m in ("openai/gpt-4o-mini", "mistral/mistral-small-latest")
                      for t in responses_templates(m)],
    "/v1/responses/compact": [
        {"model": m, "instructions": "keep names",
         "input": [{"role": "user", "content": "hello there"},
                   {"role": "assistant", "content": "hi"}]}
        for m in ("openai/gpt-4o-mini", "mistral/mistral-small-latest")],
    "/v1/messages": [t for m in ("anthropic/claude-haiku-4-5", "mistral/mistral-small-latest")
                     for t in messages_templates(m)],
    "/v1/embeddings": [
        {"model": "openai/text-embedding-3-small", "input": ["a b", "c"],
         "encoding_format": "float", "dimensions": 512},
        {"model": "openai/text-embedding-3-large", "input": "one text",
         "encoding_format": "base64"}],
    "/v1/rerank": [
        {"model": m, "query": "red fox", "documents": ["a red fox", {"text": "blue sky"}],
         "top_n": 1, "return_documents": True}
        for m in ("vllm/bge-reranker-v2-m3", "cohere/rerank-v3.5")],
    "/v1/images/generations": [
        {"model": "openai/dall-e-2", "prompt": "a fox", "n": 1, "size": "256x256",
         "response_format": "url"},
        {"model": "openai/gpt-image-1", "prompt": "a cat", "quality": "low",
         "size": "1024x1024"},
        {"prompt": "default model", "size": "512x512"}],
    "/v1/audio/speech": [
        {"model": "openai/tts-1", "input": "hello there", "voice": "alloy",
         "response_format": "mp3"},
        {"model": "openai/tts-1-hd", "input": "stream it", "voice": "nova",
         "stream_format": "sse"}],
}

MULTIPART_ROUTES: dict[str, list[tuple[str, str | None, str | None, bytes]]] = {
    # (name, filename, content type, content)
    "/v1/images/edits": [("model", None, None, b"openai/dall-e-2"),
                         ("prompt", None, None, b"a fox in snow"),
                         ("n", None, None, b"1"), ("size", None, None, b"256x256"),
                         ("image", "fox.png", "image/png", PNG)],
    "/v1/images/variations": [("model", None, None, b"openai/dall-e-2"),
                              ("size", None, None, b"256x256"),
                              ("image", "fox.png", "image/png", PNG)],
    "/v1/audio/transcriptions": [("model", None, None, b"openai/whisper-1"),
                                 ("response_format", None, None, b"json"),
                                 ("file", "a.wav", "audio/wav", make_wav(0.5))],
    "/v1/audio/translations": [("model", None, None, b"openai/whisper-1"),
                               ("response_format", None, None, b"text"),
                               ("file", "a.wav", "audio/wav", make_wav(0.25))],
}

GET_ROUTES = ("/v1/models", "/v1/models/openai/gpt-4o", "/v1beta/models",
              "/v1/models/openai/text-embedding-3-small")
ALL_POST = (*JSON_ROUTES, *MULTIPART_ROUTES)

JSON_CT = {"Content-Type": "application/json"}


def encode_form(parts: list[tuple[str, str | None, str | None, bytes]],
                boundary: str = "fuzzBoundary7") -> bytes:
    out = b""
    for name, filename, ctype, content in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if filename is not None:
            head += f'; filename="{filename}"'
        head += "\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        out += head.encode("utf-8", "surrogateescape") + b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def form_ct(boundary: str = "fuzzBoundary7") -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# -- the sanity baseline: every template is served and charged once -------------------------

@pytest.mark.parametrize("path,index", [(p, i) for p, ts in JSON_ROUTES.items()
                                        for i in range(len(ts))])
def test_valid_json_requests_are_served(gw, path, index):
    result = gw.send("POST", path, json.dumps(JSON_ROUTES[path][index]).encode(), JSON_CT)
    assert result.status_code == 200, result.text[:500]


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
def test_valid_multipart_requests_are_served(gw, path):
    result = gw.send("POST", path, encode_form(MULTIPART_ROUTES[path]), form_ct())
    assert result.status_code == 200, result.text[:500]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_model_routes_answer(gw, path):
    assert gw.send("GET", path).status_code == 200


# -- strategies ------------------------------------------------------------------------------

HUGE = st.sampled_from([10**20, -(10**20), 2**63, -(2**63) - 1, 10**300, 1e308, -1e308,
                        2**53 + 1, 0, -1])
scalars = (st.none() | st.booleans() | st.integers() | HUGE
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


# Values that pass a type check but not common sense: empty, zero, negative, huge, odd
# enumerations, the wrong model for the route.
EDGE = st.sampled_from([
    0, -1, 1, 2, 11, 129, 2**31, 2**63, 10**20, 0.0, -0.5, 2.5, 1e308, "", " ", "\x00", "🦊",
    [], {}, [""], [[]], [0], [[0]], [{}], [None], None, True, False, "auto", "none", "9999x9999",
    "1024x1024", "hd", "high", "low", "b64_json", "base64", "float", "sse", "audio", "json",
    "user", "assistant", "system", "tool", "function", "developer", "text", "image_url",
    "openai/gpt-4o", "openai/dall-e-3", "openai/gpt-image-1", "openai/tts-1",
    "openai/text-embedding-3-large", "google/gemini-embedding-001", "cohere/rerank-v3.5",
    "vllm/bge-reranker-v2-m3", "anthropic/claude-sonnet-4-5", "google/gemini-2.0-flash",
    "openai/whisper-1", {"type": "text"}, {"type": "function"}, {"text": ""},
    {"role": "user", "content": []}, {"type": "image_url", "image_url": {"url": ""}},
    "data:image/png;base64,", "data:image/png;base64,!!!"])
replacements = (EDGE | json_values).map(copy.deepcopy)


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths_of(value, (*prefix, i))
    return out


def parent_of(body: Any, path: tuple) -> Any:
    for part in path[:-1]:
        body = body[part]
    return body


@st.composite
def mutated(draw: Any, templates: list[dict[str, Any]]) -> dict[str, Any]:
    body = copy.deepcopy(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in paths_of(body) if p]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not paths:
            op = "add"
        if op == "add":
            targets = [p for p in paths_of(body) if isinstance(parent_of(body, (*p, 0))
                                                               if p else body, dict)]
            target = draw(st.sampled_from(targets or [()]))
            node = body
            for part in target:
                node = node[part]
            if isinstance(node, dict):
                key = draw(st.text(min_size=1, max_size=10) | st.sampled_from(
                    ["n", "stream", "dimensions", "top_n", "size", "quality", "max_tokens",
                     "user", "tools", "tool_choice", "response_format", "previous_response_id",
                     "speed", "stream_options", "system", "metadata", "stop"]))
                node[key] = draw(replacements)
            continue
        path = draw(st.sampled_from(paths))
        parent = parent_of(body, path)
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(replacements)
    return body


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def nested_in(template: dict[str, Any], depth: int) -> bytes:
    """The template with one of its fields nested `depth` levels deep in objects."""
    field = next(k for k in template if k != "model")
    inner = '{"a":' * depth + "1" + "}" * depth
    text = json.dumps({**template, field: "__HERE__"})
    return text.replace('"__HERE__"', inner).encode()


RAW_BODIES = [
    b"", b" ", b"\n\t", b"{", b"}", b"null", b"[]", b"[1,2]", b'"text"', b"1", b"-0", b"1e999",
    b"true", b"NaN", b"Infinity", b"-Infinity", b'{"model": NaN}', b'{"model": Infinity}',
    b'{"model": "openai/gpt-4o", "messages": [], "temperature": NaN}',
    b'{"max_tokens": 1e999}', b'{"model": "\xff\xfe"}', b"\xff\xfe\x00{", b"\xef\xbb\xbf{}",
    b'{"a": "\\ud800"}', b'{"model": "\\u0000"}', b'{"model": "x", "model": 1}',
    b"\x00" * 16, b"{}" * 3, b"\x1f\x8b\x08\x00", b'{"model": ' + b"9" * 5000 + b"}",
    nested(5000).encode(), ('{"a":' * 5000 + "1" + "}" * 5000).encode(),
    b'{"messages": ' + nested(3000).encode() + b"}",
]


def anything_at_model(template: dict[str, Any], value: Any) -> bytes:
    return json.dumps({**template, "model": value}).encode()


# -- JSON routes -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ALL_POST)
@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_malformed_bodies(gw, path, raw):
    headers = JSON_CT if path in JSON_ROUTES else form_ct()
    result = gw.send("POST", path, raw, headers)
    assert 400 <= result.status_code < 500


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@pytest.mark.parametrize("depth", [50, 129, 200, 900, 1000, 5000])
def test_deeply_nested_fields(gw, path, depth):
    result = gw.send("POST", path, nested_in(JSON_ROUTES[path][0], depth), JSON_CT)
    assert 400 <= result.status_code < 500
    if depth > 128:
        assert "levels deep" in result.text


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_numbers_are_400(gw, path, literal):
    """Regression: NaN and overflowing numbers were parsed, validated as floats and sent
    upstream as invalid JSON; now the body is refused before anything else."""
    text = json.dumps({**JSON_ROUTES[path][0], "x_extra": "__X__"})
    result = gw.send("POST", path, text.replace('"__X__"', literal).encode(), JSON_CT)
    assert result.status_code == 400
    assert "not valid JSON" in result.text


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@pytest.mark.parametrize("raw", [nested(1200).encode(), ('{"a":' * 999 + "1" + "}" * 999)
                                 .encode()], ids=["array", "object"])
def test_json_nested_beyond_the_parser_is_400(gw, path, raw):
    """Regression: json.loads raised RecursionError on deep nesting: a 500."""
    result = gw.send("POST", path, raw, JSON_CT)
    assert result.status_code == 400
    assert "levels deep" in result.text


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "mistral/mistral-small-latest"])
@pytest.mark.parametrize("text", [-1, 1.5, True, [], {}, None])
def test_responses_text_part_of_any_type(gw, model, text):
    """Regression: a Responses input part whose `text` was not a string (input items are
    passed through loosely) crashed the prompt estimate: a 500."""
    body = {"model": model, "stream": True, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": text}]}]}
    gw.send("POST", "/v1/responses", json.dumps(body).encode(), JSON_CT)


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
@pytest.mark.parametrize("name", ["model", "model[]"])
def test_model_sent_twice_in_a_form_is_named(gw, path, name):
    """Regression: a repeated `model` part was answered "'model' is required"."""
    parts = [*MULTIPART_ROUTES[path], (name, None, None, b"openai/dall-e-2")]
    result = gw.send("POST", path, encode_form(parts), form_ct())
    assert result.status_code == 400
    assert result.json["error"]["message"] == "'model' must be sent once."
    assert result.json["error"]["param"] == "model"


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@FUZZ
@given(body=json_values)
def test_arbitrary_json_values(gw, path, body):
    gw.send("POST", path, json.dumps(body).encode(), JSON_CT)


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@FUZZ
@given(data=st.data())
def test_mutated_valid_requests(gw, path, data):
    body = data.draw(mutated(JSON_ROUTES[path]))
    gw.send("POST", path, json.dumps(body).encode(), JSON_CT)


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@FEW
@given(value=json_values)
def test_any_model_value(gw, path, value):
    gw.send("POST", path, anything_at_model(JSON_ROUTES[path][0], value), JSON_CT)


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@FEW
@given(raw=st.binary(max_size=200))
def test_random_bytes_as_json(gw, path, raw):
    gw.send("POST", path, raw, JSON_CT)


@pytest.mark.parametrize("path", list(JSON_ROUTES))
def test_oversized_json_is_413(gw, path):
    body = dict(JSON_ROUTES[path][0], padding="x" * (LIMIT + 10))
    result = gw.send("POST", path, json.dumps(body).encode(), JSON_CT)
    assert result.status_code == 413


# -- multipart routes --------------------------------------------------------------------------

odd_names = st.sampled_from(["", " ", "image[]", "file[]", "model[]", "n", "prompt", "a\"b",
                             "x\\y", "名前", "image;", "file\x7f", "a" * 300])
odd_filenames = st.one_of(st.none(), st.sampled_from(
    ["", "..", "../../etc/passwd", "a.wav", "x.png", "no-ext", "名前.png", 'q"uote.png',
     "a" * 300, "x.mp3"]))
odd_types = st.one_of(st.none(), st.sampled_from(
    ["image/png", "audio/wav", "application/json", "text/plain", "", "x/y; q=1"]))


@st.composite
def mutated_form(draw: Any, parts: list[tuple]) -> list[tuple]:
    parts = list(parts)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "duplicate", "rename", "refile", "content",
                                   "add"]))
        if not parts:
            op = "add"
        i = draw(st.integers(0, max(len(parts) - 1, 0)))
        if op == "delete":
            parts.pop(i)
        elif op == "duplicate":
            parts.insert(i, parts[i])
        elif op == "rename":
            name, filename, ctype, content = parts[i]
            parts[i] = (draw(odd_names), filename, ctype, content)
        elif op == "refile":
            name, _filename, _ctype, content = parts[i]
            parts[i] = (name, draw(odd_filenames), draw(odd_types), content)
        elif op == "content":
            name, filename, ctype, _content = parts[i]
            content = draw(st.binary(max_size=64) | st.sampled_from(
                [b"", b"0", b"-1", b"99999999999999999999", b"\xff\xfe", b"nan", b"1.5",
                 b"openai/gpt-4o", b"openai/dall-e-3", b"openai/tts-1", b"openai/whisper-1",
                 b"verbose_json", b"srt", b"vtt", b"9999x9999", b" 1 "]))
            parts[i] = (name, filename, ctype, content)
        else:
            parts.append((draw(odd_names), draw(odd_filenames), draw(odd_types),
                          draw(st.binary(max_size=32))))
    return parts


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
@FUZZ
@given(data=st.data())
def test_mutated_forms(gw, path, data):
    parts = data.draw(mutated_form(MULTIPART_ROUTES[path]))
    gw.send("POST", path, encode_form(parts), form_ct())


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
@FUZZ
@given(data=st.data())
def test_truncated_forms(gw, path, data):
    raw = encode_form(MULTIPART_ROUTES[path])
    # every cut before the closing "--" leaves an unfinished body
    cut = data.draw(st.integers(0, len(raw) - len("--\r\n") - 1))
    result = gw.send("POST", path, raw[:cut], form_ct())
    assert 400 <= result.status_code < 500


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
@FEW
@given(raw=st.binary(max_size=300), boundary=st.sampled_from(
    ["fuzzBoundary7", "x", "--", "a b", "\"quoted\""]))
def test_random_bytes_as_multipart(gw, path, raw, boundary):
    gw.send("POST", path, raw, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
@pytest.mark.parametrize("content_type", [
    None, "", "multipart/form-data", "multipart/form-data; boundary=",
    "multipart/form-data; boundary=" + "b" * 300, "multipart/mixed; boundary=fuzzBoundary7",
    "application/json", "application/x-www-form-urlencoded", "text/plain",
    "multipart/form-data; boundary=other", "multipart/form-data; boundary=\"fuzzBoundary7\"",
    "MULTIPART/FORM-DATA; BOUNDARY=fuzzBoundary7; charset=utf-8", ";;;", "*/*"])
def test_multipart_content_types(gw, path, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    gw.send("POST", path, encode_form(MULTIPART_ROUTES[path]), headers)


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
def test_json_to_a_multipart_endpoint_is_415(gw, path):
    result = gw.send("POST", path, b'{"model": "openai/dall-e-2"}', JSON_CT)
    assert result.status_code == 415


@pytest.mark.parametrize("path", list(JSON_ROUTES))
def test_multipart_to_a_json_endpoint(gw, path):
    form = [(k, None, None, json.dumps(v).encode()) for k, v in JSON_ROUTES[path][0].items()]
    result = gw.send("POST", path, encode_form(form), form_ct())
    assert 400 <= result.status_code < 500


@pytest.mark.parametrize("path", list(MULTIPART_ROUTES))
def test_oversized_upload_is_413(gw, path):
    parts = [*MULTIPART_ROUTES[path], ("pad", "pad.bin", None, b"\0" * (LIMIT + 1))]
    result = gw.send("POST", path, encode_form(parts), form_ct())
    assert result.status_code == 413


# -- headers -----------------------------------------------------------------------------------

CONTENT_TYPES = [None, "", "text/plain", "application/json; charset=latin-1",
                 "application/x-www-form-urlencoded", "application/json;;;", "*/*",
                 "application/octet-stream", "APPLICATION/JSON", "application/jsonx"]


@pytest.mark.parametrize("path", list(JSON_ROUTES))
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_json_routes_with_odd_content_types(gw, path, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    gw.send("POST", path, json.dumps(JSON_ROUTES[path][0]).encode(), headers)


AUTH_FORMS = ["", "Bearer", "Bearer ", "bearer {key}", "BEARER {key}", "Bearer  {key}",
              "Bearer {key} extra", "Basic {key}", "{key}", "Bearer tm-unknown", "Token {key}",
              "Bearer {key}\t", "Bearer " + "x" * 5000, "Bearer é"]


@pytest.mark.parametrize("path", [*ALL_POST, *GET_ROUTES])
@pytest.mark.parametrize("form", AUTH_FORMS)
def test_odd_authorization(gw, path, form):
    headers = {"Authorization": form.replace("{key}", gw.secret)}
    method = "GET" if path in GET_ROUTES else "POST"
    if path in JSON_ROUTES:
        body, headers = json.dumps(JSON_ROUTES[path][0]).encode(), {**headers, **JSON_CT}
    elif path in MULTIPART_ROUTES:
        body, headers = encode_form(MULTIPART_ROUTES[path]), {**headers, **form_ct()}
    else:
        body = None
    result = gw.send(method, path, body, headers, auth=False)
    assert result.status_code in (200, 401)


@pytest.mark.parametrize("path", [*ALL_POST, *GET_ROUTES])
def test_no_key_at_all_is_401(gw, path):
    result = gw.send("GET" if path in GET_ROUTES else "POST", path, b"{}", JSON_CT, auth=False)
    assert result.status_code == 401


@FEW
@given(model_id=st.text(max_size=40))
@example(model_id="../../etc")
@example(model_id="openai/gpt-4o/extra")
@example(model_id="%00")
def test_model_lookup_with_any_id(gw, model_id):
    from urllib.parse import quote
    gw.send("GET", "/v1/models/" + quote(model_id, safe="/"))
    gw.send("GET", "/v1beta/models/" + quote(model_id, safe=""))
