"""Anthropic Messages clients reaching every chat model end to end: the official anthropic SDK
-> the gateway under gunicorn (`POST /v1/messages`) -> strict fake Anthropic, OpenAI and Gemini
APIs. Anthropic models get the body passed through (only the model name changes); the others
get it translated through OpenAI chat. Checks what reached the upstream, what the client got,
the Anthropic error classes, and the exact charge (usage x catalogue prices, computed
independently). The translation functions themselves are checked against the fixture files in
tests/fixtures/messages/ by tests/clients/test_messages_fixtures.py.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import anthropic
import pytest
import requests
from anthropic import Anthropic

from runtime.sse import iter_events
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import START_CREDITS, anthropic_client, charged
from tests.pricing_oracle import chat_cost_nano, credits

CLAUDE = "anthropic/claude-sonnet-4-5"
GPT = "openai/gpt-4o"
GEMINI = "google/gemini-2.0-flash"
MODELS = [CLAUDE, GPT, GEMINI]
KEYS = {"anthropic": "anthropic-up", "openai": "sk-openai-up", "gemini": "gemini-up"}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()
TOOL = {"name": "get_weather", "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(anthropic=FakeAnthropic(api_key=KEYS["anthropic"],
                                               models=("claude-sonnet-4-5",)),
                       openai=FakeOpenAI(api_key=KEYS["openai"]),
                       gemini=FakeGemini(api_key=KEYS["gemini"], models=("gemini-2.0-flash",)))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-messages", {
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": KEYS["anthropic"],
        "OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": KEYS["openai"],
        "GOOGLE_BASE_URL": fakes["gemini"].base_url, "GOOGLE_API_KEY": KEYS["gemini"]})


@pytest.fixture
def acct(gw):
    """Like the shared `acct`, with the anthropic SDK: (account id, client)."""
    account, secret = gw.account(START_CREDITS)
    return account, anthropic_client(gw, secret)


def upstream_of(up: dict[str, Any], model: str):
    return up[{"anthropic": "anthropic", "openai": "openai", "google": "gemini"}[
        model.split("/")[0]]]


def prompt_of(usage: Any) -> int:
    return (usage.input_tokens + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0))


def frames(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(e.event, json.loads(e.data)) for e in iter_events([text.encode()])]


# -- plain text -------------------------------------------------------------------------------

def test_anthropic_model_gets_the_body_unchanged_except_model(gw, up, acct):
    account, client = acct
    sent = {"model": CLAUDE, "max_tokens": 2000, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "hello there gateway"}],
            "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    reply = client.messages.create(**sent, extra_body={"temperature": 1, "top_k": 5},
                                   extra_headers={"anthropic-beta": "some-beta-2025"})
    got = up["anthropic"].last
    assert got.body == {**sent, "model": "claude-sonnet-4-5", "temperature": 1, "top_k": 5}
    assert got.headers["x-api-key"] == KEYS["anthropic"]
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["anthropic-beta"] == "some-beta-2025"
    assert "Authorization" not in got.headers
    assert reply.model == CLAUDE
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[1].text == "echo: hello there gateway"
    assert reply.content[0].signature.startswith("sig_")
    cost = chat_cost_nano(CLAUDE, reply.usage.input_tokens, reply.usage.output_tokens)
    assert charged(gw, account) == cost
    assert reply.usage.model_extra["cost"] == credits(cost)


@pytest.mark.parametrize("model", MODELS)
def test_text_with_system_prompt(gw, up, acct, model):
    account, client = acct
    reply = client.messages.create(model=model, max_tokens=200, system="Be brief.",
                                   messages=[{"role": "user", "content": "hello there gateway"}],
                                   metadata={"user_id": "u-7"})
    assert reply.type == "message" and reply.role == "assistant" and reply.model == model
    assert reply.id.startswith("msg_")
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == "echo: hello there gateway"
    assert reply.stop_reason == "end_turn"
    got = upstream_of(up, model).last.body
    if model == GPT:
        assert got["messages"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "hello there gateway"}]
        assert got["max_completion_tokens"] == 200 and got["user"] == "u-7"
        assert got["model"] == "gpt-4o"
    elif model == GEMINI:
        assert got["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert got["generationConfig"]["maxOutputTokens"] == 200
    usage = reply.usage
    assert (prompt_of(usage), usage.output_tokens) == (5, 4)   # words, in every fake
    cost = chat_cost_nano(model, prompt_of(usage), usage.output_tokens,
                           cached=usage.cache_read_input_tokens or 0)
    assert cost > 0 and charged(gw, account) == cost
    assert usage.model_extra["cost"] == credits(cost)


def test_cache_tokens_are_prompt_at_cache_prices(gw, up, acct):
    account, client = acct
    up["anthropic"].cache_read_tokens, up["anthropic"].cache_write_tokens = 1000, 200
    reply = client.messages.create(model=CLAUDE, max_tokens=50,
                                   messages=[{"role": "user", "content": "cached words here"}])
    usage = reply.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens) == (3, 1000, 200)
    assert charged(gw, account) == chat_cost_nano(CLAUDE, 1203, usage.output_tokens,
                                                   cached=1000, cache_write=200)


# -- streaming --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_stream_text(gw, up, acct, model):
    account, client = acct
    with client.messages.stream(model=model, max_tokens=100, system="Be brief.",
                                messages=[{"role": "user",
                                           "content": "stream these five words"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "echo: stream these five words"
    assert final.content[0].text == "echo: stream these five words"
    assert final.stop_reason == "end_turn" and final.model == model
    assert upstream_of(up, model).last.body.get("stream", True) is True
    usage = final.usage
    assert usage.output_tokens == 5 and prompt_of(usage) > 0
    assert charged(gw, account) == chat_cost_nano(model, prompt_of(usage), usage.output_tokens)


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_stream_raw_events(gw, up, acct, model):
    account, client = acct
    secret = client.api_key
    resp = requests.post(f"{gw.url}/v1/messages", headers={"x-api-key": secret}, json={
        "model": model, "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "hi there"}]}, timeout=20)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert "[DONE]" not in resp.text
    events = [(name, data) for name, data in frames(resp.text) if name != "ping"]
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert events[0][1]["message"]["model"] == model
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    usage = delta["usage"]
    cost = chat_cost_nano(model, usage["input_tokens"], usage["output_tokens"])
    assert usage["cost"] == credits(cost) and charged(gw, account) == cost


def test_create_stream_true_yields_events(gw, up, acct):
    _, client = acct
    events = list(client.messages.create(model=GEMINI, max_tokens=50, stream=True,
                                         messages=[{"role": "user", "content": "one two"}]))
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "echo: one two"


# -- tools ------------------------------------------------------------------------------------

def _ask(client: Anthropic, stream: bool, **kwargs: Any):
    if not stream:
        return client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_tool_round_trip(gw, up, acct, model, stream):
    account, client = acct
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = _ask(client, stream, model=model, max_tokens=200, tools=[TOOL],
                 messages=[question])
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert uses[0].input == {"city": "Oslo"}
    got = upstream_of(up, model).last.body
    if model == GPT:
        assert got["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather in a city",
            "parameters": TOOL["input_schema"]}}]
    history = [question,
               {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                 for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                             "content": "4 degrees"}]}]
    final = _ask(client, stream, model=model, max_tokens=200, tools=[TOOL], messages=history)
    assert final.stop_reason == "end_turn"
    assert final.content[-1].type == "text" and final.content[-1].text.startswith("echo: ")
    assert "4 degrees" in final.content[-1].text
    got = upstream_of(up, model).last.body
    if model == CLAUDE:
        assert got["messages"] == history
    elif model == GPT:
        assert got["messages"][1]["tool_calls"][0]["id"] == uses[0].id
        assert json.loads(got["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
            "city": "Oslo"}
        assert got["messages"][2] == {"role": "tool", "tool_call_id": uses[0].id,
                                      "content": "4 degrees"}
    assert charged(gw, account) == sum(
        chat_cost_nano(model, prompt_of(m.usage), m.usage.output_tokens) for m in (first, final))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_gemini_tool_loop_gives_back_thought_signatures(gw, up, acct, stream):
    """Gemini 3 refuses a tool-loop step whose function call comes back without the thought
    signature it issued (the fake's `signatures` switch): the signature leaves in a thinking
    block, the SDK's content sent back as received returns it onto the function call."""
    account, client = acct
    up["gemini"].signatures = True
    earlier = set(up["gemini"].issued_signatures)
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = _ask(client, stream, model=GEMINI, max_tokens=200, tools=[TOOL],
                 messages=[question])
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    (issued,) = up["gemini"].issued_signatures - earlier
    use = first.content[1]

    history = [question, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": "4 degrees"}]}]
    final = _ask(client, stream, model=GEMINI, max_tokens=200, tools=[TOOL], messages=history)
    assert final.stop_reason == "end_turn" and "4 degrees" in final.content[-1].text
    assert up["gemini"].last.body["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
         "thoughtSignature": issued}]}
    assert charged(gw, account) == sum(
        chat_cost_nano(GEMINI, prompt_of(m.usage), m.usage.output_tokens) for m in (first, final))

    # the same conversation continued on a Claude model: Anthropic never sees the carrier
    again = client.messages.create(model=CLAUDE, max_tokens=200, tools=[TOOL],
                                   messages=history)
    assert again.content[-1].text.startswith("echo: ")
    sent = up["anthropic"].last.body["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["tool_use"]


def test_tool_choice_and_parallel_flag_are_translated(gw, up, acct):
    _, client = acct
    reply = client.messages.create(
        model=GPT, max_tokens=100, tools=[TOOL],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Oslo"}])
    got = up["openai"].last.body
    assert got["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert got["parallel_tool_calls"] is False
    assert reply.content[0].type == "tool_use" and reply.stop_reason == "tool_use"
    client.messages.create(model=GEMINI, max_tokens=100, tools=[TOOL],
                           tool_choice={"type": "any"},
                           messages=[{"role": "user", "content": "Oslo"}])
    assert up["gemini"].last.body["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"


# -- images -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_image_input(gw, up, acct, model):
    _, client = acct
    reply = client.messages.create(model=model, max_tokens=100, messages=[{
        "role": "user", "content": [
            {"type": "text", "text": "Describe"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}])
    text = reply.content[0].text
    got = upstream_of(up, model).last.body
    if model == GPT:
        assert got["messages"][0]["content"][1] == {
            "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
        assert text == "echo: Describe"
    else:
        assert text == "echo: Describe [image image/png 32 bytes]"


def test_image_url_reaches_openai_as_url(gw, up, acct):
    _, client = acct
    client.messages.create(model=GPT, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.jpg"}},
        {"type": "text", "text": "What is it?"}]}])
    assert up["openai"].last.body["messages"][0]["content"][0] == {
        "type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}


# -- errors -----------------------------------------------------------------------------------

def test_bad_key_is_authentication_error(gw, up):
    client = Anthropic(base_url=gw.url, api_key="tok-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=CLAUDE, max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "authentication_error"
    resp = requests.post(f"{gw.url}/v1/messages", headers={"x-api-key": "nope"}, json={},
                         timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert up["anthropic"].requests == []


def test_unknown_model_is_not_found(gw, acct):
    _, client = acct
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="nobody/nothing", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "nobody/nothing" in info.value.body["error"]["message"]


def test_model_without_chat_is_bad_request(gw, acct):
    _, client = acct
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="openai/text-embedding-3-small", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "invalid_request_error"


def test_insufficient_credits_is_permission_denied(gw, up):
    account, secret = gw.account(1)
    client = Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client.messages.create(model=GPT, max_tokens=1000,
                               messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "permission_error"
    assert "Insufficient credits" in info.value.body["error"]["message"]
    assert gw.balance(account) == 1 and up["openai"].requests == []


@pytest.mark.parametrize("body, field", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"max_tokens": 10, "temperature": 1.5, "messages": [{"role": "user", "content": "hi"}]},
     "temperature"),
    ({"max_tokens": 10, "messages": [{"role": "tool", "content": "hi"}]}, "role"),
])
def test_invalid_request_is_bad_request_naming_the_field(gw, up, acct, body, field):
    account, client = acct
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", cast_to=anthropic.types.Message,
                    body={"model": GPT, **body})
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert field in info.value.body["error"]["message"]
    assert up["openai"].requests == [] and charged(gw, account) == 0


def test_field_other_models_cannot_take_is_bad_request(gw, up, acct):
    account, client = acct
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=GPT, max_tokens=10, container="c-1",
                               messages=[{"role": "user", "content": "hi"}])
    assert "'container'" in info.value.body["error"]["message"]
    assert charged(gw, account) == 0


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_upstream_rate_limit_keeps_retry_after(gw, up, acct, model):
    account, client = acct
    upstream_of(up, model).fail_next(429, headers={"retry-after": "17"})
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=model, max_tokens=10,
                               messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "17"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert charged(gw, account) == 0


@pytest.mark.parametrize("model, status", [(CLAUDE, 529), (GPT, 503)])
def test_upstream_overload_is_internal_server_error(gw, up, acct, model, status):
    account, client = acct
    for _ in range(3):  # every attempt
        upstream_of(up, model).fail_next(status)
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model=model, max_tokens=10,
                               messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.body["error"]["type"] == "overloaded_error"
    assert charged(gw, account) == 0


def test_rejected_gateway_key_is_an_operator_problem(gw, up, acct):
    _, client = acct
    up["anthropic"].fail_next(401)
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model=CLAUDE, max_tokens=10,
                               messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "ANTHROPIC_API_KEY" in info.value.body["error"]["message"]


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_mid_stream_error_raises_and_charges_what_was_produced(gw, up, acct, model):
    account, client = acct
    upstream_of(up, model).error_in_stream_after(2)
    words = "one two three four five six"
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=model, max_tokens=100,
                                    messages=[{"role": "user", "content": words}]) as stream:
            for text in stream.text_stream:
                got.append(text)
    assert "".join(got) == "echo: one "
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] in ("overloaded_error",
                                                                 "api_error")
    produced = math.ceil(len("echo: one ") / 4)
    if model == CLAUDE:   # input exact from message_start, output estimated from the text
        expected = chat_cost_nano(model, 6, produced)
    else:   # no usage at all: the whole request is estimated ("role", "user", "content")
        expected = chat_cost_nano(model, math.ceil((15 + len(words)) / 4), produced)
    assert charged(gw, account) == expected
