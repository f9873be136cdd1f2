"""The fake OpenAI upstream behaves like the real API, so gateway tests can trust it.

Each test drives ``FakeOpenAI`` directly, with the official ``openai`` SDK where the SDK's own
parsing is the proof (types, streaming, exception mapping) and with ``requests`` or raw sockets
where the bytes on the wire matter (SSE framing, status codes, keep-alive, cut connections).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI

from tests.fakes import FakeOpenAI, free_port
from tests.fakes.openai_upstream import DEFAULT_KNOWN_FIELDS, OPENAI_CHAT_FIELDS
from tests.fakes.sse import (
    DONE,
    SSEDecoder,
    encode_comment,
    encode_event,
    parse_events,
    parse_sse,
)

KEY = "sk-upstream-test"
USER = [{"role": "user", "content": "Say hello to the nice people"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(KEY) as server:
        yield server
    assert not server.errors


@pytest.fixture
def client(fake: FakeOpenAI) -> OpenAI:
    return OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=10)


def post(fake: FakeOpenAI, body: Any, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
    return requests.post(
        f"{fake.base_url}/chat/completions", json=body, headers=headers, timeout=10, **kwargs
    )


# -- lifecycle and plumbing -----------------------------------------------------------------


def test_base_url_follows_sdk_convention_and_port_is_ephemeral() -> None:
    with FakeOpenAI() as one, FakeOpenAI() as two:
        assert one.base_url == f"http://127.0.0.1:{one.port}/v1"
        assert one.port != two.port
    with FakeOpenAI(base_path="/openai/v1") as groq:
        assert groq.base_url.endswith("/openai/v1")
        assert post_status(groq, "/openai/v1/chat/completions") == 200
        assert post_status(groq, "/v1/chat/completions") == 404


def post_status(fake: FakeOpenAI, path: str) -> int:
    response = requests.post(
        fake.origin + path,
        json={"model": "gpt-4o", "messages": USER},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    return response.status_code


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_fixed_port_and_stop_is_idempotent() -> None:
    port = free_port()
    fake = FakeOpenAI(port=port).start()
    assert fake.port == port
    fake.stop()
    fake.stop()
    with pytest.raises(RuntimeError):
        _ = fake.base_url


def test_records_requests_with_case_insensitive_headers(fake: FakeOpenAI) -> None:
    with pytest.raises(AssertionError):
        _ = fake.last
    response = post(fake, {"model": "gpt-4o", "messages": USER}, headers={"X-Trace": "abc"})
    assert response.status_code == 200
    received = fake.last
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == f"Bearer {KEY}"
    assert received.headers["x-trace"] == received.headers["X-TRACE"] == "abc"
    assert received.body == {"model": "gpt-4o", "messages": USER}
    assert json.loads(received.raw) == received.body
    requests.get(f"{fake.base_url}/models?limit=2", headers={"Authorization": f"Bearer {KEY}"})
    assert (fake.last.path, fake.last.query, fake.last.body) == ("/v1/models", "limit=2", None)
    assert len(fake.requests) == 2
    fake.fail_next(500)
    fake.reset()
    assert fake.requests == [] and fake.pending_scripts == 0


def test_keep_alive_serves_several_requests_on_one_connection(fake: FakeOpenAI) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    payload = json.dumps({"model": "gpt-4o", "messages": USER})
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    sockets = []
    for body in (payload, payload, "{not json"):
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.getheader("Content-Length")
        sockets.append(conn.sock)
    assert sockets[0] is sockets[1] is sockets[2] is not None
    conn.close()


def test_chunked_request_body_is_accepted(fake: FakeOpenAI) -> None:
    body = json.dumps({"model": "gpt-4o", "messages": USER}).encode()
    response = post(
        fake, None, data=iter([body[:10], body[10:]]), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert fake.last.body["model"] == "gpt-4o"


def test_hundreds_of_concurrent_streams() -> None:
    with FakeOpenAI(KEY, chunk_delay=0.02) as fake:
        barrier = threading.Barrier(300, timeout=20)

        def one(i: int) -> str:
            body = {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": f"n {i}"}],
                "stream": True,
            }
            with requests.Session() as session:
                barrier.wait()
                response = session.post(
                    f"{fake.base_url}/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {KEY}"},
                    stream=True,
                    timeout=30,
                )
                events = parse_events(response.content)
            return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])

        with ThreadPoolExecutor(max_workers=300) as pool:
            texts = list(pool.map(one, range(300)))
        assert texts == [f"echo: n {i}" for i in range(300)]
        assert len(fake.requests) == 300


# -- non-streaming answers --------------------------------------------------------------------


def test_text_completion_via_sdk(fake: FakeOpenAI, client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}],
            },
        ],
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.content == "echo: Hello world"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 7
    assert fake.last.headers["content-type"] == "application/json"


def test_response_shape_on_the_wire(fake: FakeOpenAI) -> None:
    fake.cached_tokens = 2
    response = post(fake, {"model": "gpt-4o", "messages": USER})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.headers["x-request-id"].startswith("req_")
    data = response.json()
    assert set(data) == {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "service_tier",
        "system_fingerprint",
    }
    assert isinstance(data["created"], int)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "echo: Say hello to the nice people",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = data["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (6, 7, 13)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_n_choices_multiply_completion_tokens(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=USER, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"echo: Say hello to the nice people"}
    assert completion.usage is not None and completion.usage.completion_tokens == 21


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_cap_truncates_with_finish_reason_length(client: OpenAI, field: str) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=USER, **{field: 3})
    assert completion.choices[0].message.content == "echo: Say hello"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_stop_sequence_cuts_the_text(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=USER, stop=[" nice"])
    assert completion.choices[0].message.content == "echo: Say hello to the"


def test_json_object_response_format(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Reply in JSON please"}]
    completion = client.chat.completions.create(
        model="gpt-4o", messages=messages, response_format={"type": "json_object"}
    )
    content = completion.choices[0].message.content
    assert content is not None and json.loads(content) == {"echo": "Reply in JSON please"}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="gpt-4o", messages=USER, response_format={"type": "json_object"}
        )
    assert err.value.param == "messages"


# -- tools ------------------------------------------------------------------------------------


def test_tool_call_round_trip(client: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Oslo"}'

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "4 degrees, rain"})
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "echo: 4 degrees, rain"
    assert second.choices[0].finish_reason == "stop"


def test_tool_choice_decides_whether_a_tool_is_called(client: OpenAI) -> None:
    weather = [{"role": "user", "content": "weather?"}]
    text = client.chat.completions.create(
        model="gpt-4o", messages=weather, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert text.choices[0].message.content == "echo: weather?"
    plain = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    assert plain.choices[0].message.tool_calls is None
    forced = client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert forced.choices[0].finish_reason == "tool_calls"


# -- streaming --------------------------------------------------------------------------------


def test_stream_text_without_usage_via_sdk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in middle] == [
        "echo: ",
        "Say ",
        "hello ",
        "to ",
        "the ",
        "nice ",
        "people",
    ]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_stream_text_with_usage_via_sdk(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    *content, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (6, 7)
    assert all(c.usage is None for c in content)
    assert content[-1].choices[0].finish_reason == "stop"


def test_stream_framing_on_the_wire(fake: FakeOpenAI) -> None:
    body = {
        "model": "gpt-4o",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = post(fake, body, stream=True)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    raw = response.raw.read()
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    assert all(f.startswith(b"data: {") for f in frames[:-2])
    events = parse_events(raw)
    assert events[-1] == DONE
    assert all(e["usage"] is None for e in events[:-2])
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] == 13
    assert "usage" in events[0] and events[0]["object"] == "chat.completion.chunk"


def test_stream_chunks_arrive_one_at_a_time(fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.05
    response = post(fake, {"model": "gpt-4o", "messages": USER, "stream": True}, stream=True)
    arrivals = []
    decoder = SSEDecoder()
    for piece in response.iter_content(chunk_size=None):
        arrivals.extend(time.monotonic() for _ in decoder.feed(piece))
    assert len(arrivals) == 10  # role, 7 words, finish, [DONE]
    assert arrivals[-1] - arrivals[0] >= 0.05 * 9 * 0.8


def test_stream_keepalive_comments_are_ignored_by_sdk(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.keepalive_comments = True
    raw = post(fake, {"model": "gpt-4o", "messages": USER, "stream": True}).content
    assert raw.startswith(b": keep-alive\n\n") and raw.count(b": keep-alive") == 10
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "echo: Say hello to the nice people"
    )


def test_stream_tool_call_via_sdk(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "weather in Oslo"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    first_delta = chunks[0].choices[0].delta
    assert first_delta.role == "assistant"
    assert first_delta.tool_calls is not None
    head = first_delta.tool_calls[0]
    assert head.index == 0 and head.id and head.id.startswith("call_") and head.type == "function"
    assert head.function is not None
    assert (head.function.name, head.function.arguments) == ("get_weather", "")
    fragments = []
    for chunk in chunks[1:-1]:
        calls = chunk.choices[0].delta.tool_calls
        assert calls is not None and calls[0].index == 0 and calls[0].id is None
        assert calls[0].function is not None and calls[0].function.arguments
        fragments.append(calls[0].function.arguments)
    assert 2 <= len(fragments) <= 3
    assert "".join(fragments) == '{"city": "Oslo"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_n_choices(fake: FakeOpenAI) -> None:
    events = parse_events(
        post(fake, {"model": "gpt-4o", "messages": USER, "stream": True, "n": 2}).content
    )
    texts = {0: "", 1: ""}
    for event in events[:-1]:
        choice = event["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == {0: "echo: Say hello to the nice people"} | {1: texts[0]}


# -- validation -------------------------------------------------------------------------------

TOOL_TURN = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ],
}


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"extra_body": {"foo": 1}}, "foo", "Unrecognized request argument supplied: foo"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when"),
        ({"n": 0}, "n", "below minimum"),
        ({"temperature": 2.5}, "temperature", "above maximum"),
        ({"top_p": -0.1}, "top_p", "below minimum"),
        ({"max_tokens": 0}, "max_tokens", "below minimum"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array too long"),
        ({"top_logprobs": 3}, "top_logprobs", "'logprobs' must be set"),
        ({"tool_choice": "auto"}, "tool_choice", "only allowed when 'tools'"),
        ({"tools": []}, "tools", "empty array"),
        (
            {"tools": [{"type": "function", "function": {"name": "a.b"}}]},
            "tools[0].function.name",
            "does not match pattern",
        ),
        ({"reasoning_effort": "max"}, "reasoning_effort", "Invalid value"),
        ({"extra_body": {"n": "2"}}, "n", "expected an integer"),
    ],
)
def test_invalid_parameters_are_rejected(
    client: OpenAI, extra: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=USER, **extra)
    assert err.value.status_code == 400
    assert err.value.param == param
    assert fragment in err.value.message
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "robot", "content": "hi"}], "messages[0].role"),
        ([{"content": "hi"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        (["hi"], "messages[0]"),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0].type",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "tool", "content": "4"}],
            "messages[1].tool_call_id",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_1", "content": "4"},
            ],
            "messages[1].role",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                TOOL_TURN,
                {"role": "tool", "tool_call_id": "call_2", "content": "4"},
            ],
            "messages[2].tool_call_id",
        ),
        ([{"role": "user", "content": "hi"}, TOOL_TURN], "messages[1].role"),
        (
            [{"role": "user", "content": "hi"}, TOOL_TURN, {"role": "user", "content": "and?"}],
            "messages[1].role",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {
                    **TOOL_TURN,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": {"a": 1}},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "4"},
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_invalid_messages_are_rejected(client: OpenAI, messages: list[Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=messages)
    assert err.value.param == param


def test_valid_tool_conversation_is_accepted(client: OpenAI) -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "sys"}]},
        {"role": "user", "content": "hi", "name": "ann"},
        TOOL_TURN,
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "4"}]},
        {"role": "assistant", "content": "It is 4."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "thanks"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
            ],
        },
    ]
    completion = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert completion.choices[0].message.content == "echo: thanks"


def test_missing_required_fields_and_bad_bodies(fake: FakeOpenAI) -> None:
    cases = [
        ({"messages": USER}, "model"),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": 4, "messages": USER}, "model"),
    ]
    for body, param in cases:
        response = post(fake, body)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param
    not_json = post(fake, None, data=b"{oops", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert "could not parse the JSON body" in not_json.json()["error"]["message"]
    assert (
        post(fake, None, data=b"[1]", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    wrong_type = post(
        fake,
        None,
        data=json.dumps({"model": "gpt-4o", "messages": USER}),
        headers={"Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 400
    error = wrong_type.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Content-Type" in error["message"]


def test_authentication(fake: FakeOpenAI) -> None:
    wrong = OpenAI(base_url=fake.base_url, api_key="sk-wrong-key-123456", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.code == "invalid_api_key"
    assert "sk-wrong-key-123456" not in err.value.message
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    missing = requests.post(
        f"{fake.base_url}/chat/completions", json={"model": "gpt-4o", "messages": USER}, timeout=10
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    with FakeOpenAI(api_key=None) as keyless:
        anonymous = requests.post(
            f"{keyless.base_url}/chat/completions",
            json={"model": "gpt-4o", "messages": USER},
            timeout=10,
        )
        assert anonymous.status_code == 200


def test_unknown_model_and_unknown_path(fake: FakeOpenAI, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=USER)
    assert err.value.code == "model_not_found"
    assert "gpt-9" in err.value.message
    response = requests.post(
        f"{fake.base_url}/completions",
        json={},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"
    with FakeOpenAI(KEY, models=None) as anything:
        sdk = OpenAI(base_url=anything.base_url, api_key=KEY, max_retries=0)
        assert sdk.chat.completions.create(model="whatever", messages=USER).model == "whatever"


def test_models_endpoint(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]
    model = client.models.retrieve("gpt-4o")
    assert (model.id, model.object) == ("gpt-4o", "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_provider_vocabularies() -> None:
    assert OPENAI_CHAT_FIELDS <= DEFAULT_KNOWN_FIELDS
    mistral_fields = (OPENAI_CHAT_FIELDS - {"seed", "max_completion_tokens"}) | {"random_seed"}
    with FakeOpenAI(KEY, known_fields=mistral_fields, models=["mistral-small-latest"]) as fake:
        ok = post(fake, {"model": "mistral-small-latest", "messages": USER, "random_seed": 1})
        assert ok.status_code == 200
        bad = post(fake, {"model": "mistral-small-latest", "messages": USER, "seed": 1})
        assert bad.status_code == 400
        assert bad.json()["error"]["message"] == "Unrecognized request argument supplied: seed"
    groq_rejects = {"logprobs", "logit_bias", "top_logprobs", "messages[].name"}
    with FakeOpenAI(KEY, rejected_fields=groq_rejects, base_path="/openai/v1") as fake:
        client = OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="gpt-4o", messages=USER, logprobs=True)
        assert err.value.param == "logprobs" and "logprobs" in err.value.message
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi", "name": "ann"}]
            )
        assert err.value.param == "messages[0].name"
    with FakeOpenAI(KEY, max_tokens_field="max_completion_tokens") as fake:
        client = OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=5)
        assert err.value.code == "unsupported_parameter" and err.value.param == "max_tokens"
        completion = client.chat.completions.create(
            model="gpt-4o", messages=USER, max_completion_tokens=5
        )
        assert completion.choices[0].finish_reason == "length"


def test_sdk_only_fields_are_known(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=USER, prompt_cache_retention="24h", seed=3, user="u1"
    )
    assert completion.choices[0].message.content


# -- scripted failures ------------------------------------------------------------------------


def test_scripted_429_surfaces_rate_limit_error(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices
    assert len(fake.requests) == 2


def test_scripted_failures_run_in_order(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.fail_next(500)
    fake.fail_next(503)
    fake.fail_next(
        402,
        {
            "error": {
                "message": "pay up",
                "type": "billing",
                "param": None,
                "code": "insufficient_quota",
            }
        },
    )
    fake.fail_next(502, "<html>bad gateway</html>", {"Content-Type": "text/html"})
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.status_code == 500 and err.value.type == "server_error"
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.status_code == 503
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert err.value.status_code == 402 and err.value.code == "insufficient_quota"
    response = post(fake, {"model": "gpt-4o", "messages": USER})
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert response.text == "<html>bad gateway</html>"
    assert fake.pending_scripts == 0


def test_scripted_failure_can_target_a_path(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.fail_next(500, path="/v1/models")
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices
    assert fake.pending_scripts == 1
    with pytest.raises(openai.InternalServerError):
        client.models.list()


def test_scripted_failure_waits_for_a_valid_key(fake: FakeOpenAI) -> None:
    fake.fail_next(500)
    response = requests.post(
        f"{fake.base_url}/chat/completions", json={"model": "gpt-4o", "messages": USER}, timeout=10
    )
    assert response.status_code == 401
    assert fake.pending_scripts == 1


def test_invalid_json_body(fake: FakeOpenAI) -> None:
    fake.invalid_json_next()
    response = post(fake, {"model": "gpt-4o", "messages": USER})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()


def test_hang_next_makes_the_client_time_out(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.hang_next(5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=USER, timeout=0.3)
    assert time.monotonic() - started < 3
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices


def test_cut_stream_raises_in_sdk(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.cut_stream_after(2)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        ):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "echo: ", "Say "]


def test_cut_stream_on_the_wire(fake: FakeOpenAI) -> None:
    fake.cut_stream_after(1)
    response = post(fake, {"model": "gpt-4o", "messages": USER, "stream": True}, stream=True)
    decoder = SSEDecoder()
    events = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in response.iter_content(chunk_size=None):
            events.extend(decoder.feed(piece))
    assert [e.json()["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": ""},
        {"content": "echo: "},
    ]
    assert fake.pending_scripts == 0
    assert post(fake, {"model": "gpt-4o", "messages": USER, "stream": True}).ok


def test_stream_scripts_wait_for_a_valid_stream(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.cut_stream_after(0)
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[], stream=True)
    assert fake.pending_scripts == 1


def test_error_in_stream_raises_api_error(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.error_in_stream_after(2, "upstream exploded")
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert not isinstance(err.value, openai.APIConnectionError)
    assert err.value.message == "upstream exploded"
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "server_error"
    assert received == ["", "echo: ", "Say "]

    fake.error_in_stream_after(0)
    raw = post(fake, {"model": "gpt-4o", "messages": USER, "stream": True}).content
    events = parse_events(raw)
    assert len(events) == 2 and DONE not in events
    assert events[-1]["error"]["type"] == "server_error"


def test_client_disconnect_is_counted(fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.05
    response = post(fake, {"model": "gpt-4o", "messages": USER, "stream": True}, stream=True)
    next(response.iter_content(chunk_size=None))
    response.close()
    deadline = time.monotonic() + 5
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1


# -- SSE helpers ------------------------------------------------------------------------------


def test_encode_event() -> None:
    assert encode_event({"a": 1, "b": "é"}) == 'data: {"a":1,"b":"é"}\n\n'.encode()
    assert encode_event(DONE) == b"data: [DONE]\n\n"
    assert encode_event({"type": "ping"}, "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert encode_event("two\nlines", crlf=True) == b"data: two\r\ndata: lines\r\n\r\n"
    assert encode_comment() == b": keep-alive\n\n"


def test_parse_events_handles_all_delimiters_and_comments() -> None:
    raw = (
        b": OPENROUTER PROCESSING\n\n"
        b'data: {"n":1}\r\n\r\n'
        b"event: message_start\n"
        b'data: {"n":2}\n\n'
        b'data: {"n":\ndata: 3}\r\r'
        b"data: not json\n\n"
        b"data: [DONE]\n\n"
        b'data: {"incomplete":'
    )
    assert parse_events(raw) == [{"n": 1}, {"n": 2}, {"n": 3}, "not json", DONE]
    assert parse_sse(raw)[1].event == "message_start"


def test_sse_decoder_is_incremental_and_reports_cut_streams() -> None:
    raw = encode_event({"x": 1}, crlf=True) + encode_event({"x": 2}) + b"data: {}"
    decoder = SSEDecoder()
    events = []
    for i in range(len(raw)):
        events.extend(decoder.feed(raw[i : i + 1]))
    events.extend(decoder.close())
    assert [e.json() for e in events] == [{"x": 1}, {"x": 2}]
    assert decoder.incomplete
    finished = SSEDecoder()
    assert (
        finished.feed(encode_event({"x": 3})) and not finished.close() and not finished.incomplete
    )
