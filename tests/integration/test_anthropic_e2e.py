"""OpenAI clients reaching an Anthropic model end to end: the official openai SDK -> the
gateway under gunicorn -> a strict fake Anthropic Messages API. Checks what reached Anthropic,
what the client got, and the exact charge (usage x catalogue prices, computed independently).
"""

from __future__ import annotations

import base64
import json

import openai
import pytest
import requests

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import charged
from tests.pricing_oracle import chat_cost_nano, credits

pytestmark = pytest.mark.integration

MODEL = "anthropic/claude-sonnet-4-5"
KEY = "anthropic-upstream-key"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeAnthropic(api_key=KEY, models=("claude-sonnet-4-5",
                                                          "claude-haiku-4-5")))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-anthropic", {
        "ANTHROPIC_BASE_URL": fakes.base_url, "ANTHROPIC_API_KEY": KEY})


def test_text_with_system_is_translated_and_charged_exactly(gw, up, acct):
    account, client = acct
    reply = client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": "hello there gateway"}], temperature=0.5, stop="END",
        user="u-42")
    sent = up.last
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"]
    assert sent.body["model"] == "claude-sonnet-4-5"
    assert sent.body["max_tokens"] == 64000            # the catalogue's output limit
    assert sent.body["system"] == [{"type": "text", "text": "Be brief."},
                                   {"type": "text", "text": "Use metric units."}]
    assert sent.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "hello there gateway"}]}]
    assert sent.body["stop_sequences"] == ["END"] and sent.body["temperature"] == 0.5
    assert sent.body["metadata"] == {"user_id": "u-42"}
    assert reply.choices[0].message.content == "echo: hello there gateway"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 4)
    cost = chat_cost_nano(MODEL, 8, 4)
    assert charged(gw, account) == cost
    assert reply.usage.model_extra["cost"] == credits(cost)


def test_cache_reads_and_writes_count_as_prompt_at_cache_prices(gw, up, acct):
    account, client = acct
    up.cache_read_tokens, up.cache_write_tokens = 1000, 200
    reply = client.chat.completions.create(
        model=MODEL, max_completion_tokens=50,
        messages=[{"role": "user", "content": "cached words here"}])
    assert up.last.body["max_tokens"] == 50
    usage = reply.usage
    assert usage.prompt_tokens == 3 + 1000 + 200
    assert usage.prompt_tokens_details.cached_tokens == 1000
    assert getattr(usage.prompt_tokens_details, "cache_write_tokens", None) == 200
    assert charged(gw, account) == chat_cost_nano(MODEL, 1203, usage.completion_tokens,
                                                   cached=1000, cache_write=200)


def test_stream_text_chunks_usage_and_cost(gw, up, acct):
    account, client = acct
    up.cache_read_tokens = 10
    chunks = list(client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream these five words"}]))
    assert up.last.body["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream these five words"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices
                and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    # message_delta repeats the cumulative totals: counted once, not added up
    assert (usage.prompt_tokens, usage.completion_tokens) == (4 + 10, 5)
    cost = chat_cost_nano(MODEL, 14, 5, cached=10)
    assert usage.model_extra["cost"] == credits(cost)
    assert charged(gw, account) == cost


def test_tool_round_trip(gw, up, acct):
    account, client = acct
    first = client.chat.completions.create(
        model=MODEL, tools=[WEATHER_TOOL], parallel_tool_calls=False,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}])
    assert up.last.body["tools"] == [{
        "name": "get_weather", "description": "Current weather in a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert up.last.body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]
    assert call.id.startswith("toolu_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}

    final = client.chat.completions.create(model=MODEL, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "What is the weather in Oslo?"},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 4}'}])
    sent = up.last.body["messages"]
    assert sent[1]["content"][1] == {"type": "tool_use", "id": call.id, "name": "get_weather",
                                     "input": {"city": "Oslo"}}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 4}'}]}
    assert final.choices[0].message.content == 'echo: {"temp_c": 4}'
    assert final.choices[0].finish_reason == "stop"
    assert charged(gw, account) == (
        chat_cost_nano(MODEL, first.usage.prompt_tokens, first.usage.completion_tokens)
        + chat_cost_nano(MODEL, final.usage.prompt_tokens, final.usage.completion_tokens))


def test_tool_round_trip_streamed(gw, up, acct):
    _, client = acct
    chunks = list(client.chat.completions.create(
        model=MODEL, stream=True, tools=[WEATHER_TOOL], tool_choice="required",
        messages=[{"role": "user", "content": "Oslo please"}]))
    assert up.last.body["tool_choice"] == {"type": "any"}
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks
              if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].index == 0 and deltas[0].id.startswith("toolu_")
    assert deltas[0].function.name == "get_weather"
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices
            and c.choices[0].finish_reason] == ["tool_calls"]

    final = list(client.chat.completions.create(model=MODEL, stream=True, tools=[WEATHER_TOOL],
                                                messages=[
        {"role": "user", "content": "Oslo please"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": deltas[0].id, "type": "function",
             "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": deltas[0].id, "content": "4 degrees"}]))
    assert "".join(c.choices[0].delta.content or "" for c in final
                   if c.choices) == "echo: 4 degrees"


def test_consecutive_tool_results_are_one_user_turn_results_first(gw, up, acct):
    _, client = acct
    client.chat.completions.create(model=MODEL, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Oslo and Bergen?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "4"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "7"}]},
        {"role": "user", "content": "Thanks, summarise."}])
    sent = up.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][1]["input"] == {}
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_a", "content": "4"},
        {"type": "tool_result", "tool_use_id": "call_b", "content": "7"},
        {"type": "text", "text": "Thanks, summarise."}]


def test_images_as_data_url_and_http_url(gw, up, acct):
    _, client = acct
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}]}])
    blocks = up.last.body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64",
                                                      "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url",
                                                      "url": "https://example.com/b.jpg"}}
    assert reply.choices[0].message.content == (
        "echo: Compare [image image/png 32 bytes] [image https://example.com/b.jpg]")


def test_json_schema_output_uses_structured_outputs(gw, up, acct):
    _, client = acct
    schema = {"type": "object", "properties": {"echo": {"type": "string"}},
              "required": ["echo"], "additionalProperties": False}
    reply = client.chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": "give json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}})
    assert up.last.body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert json.loads(reply.choices[0].message.content) == {"echo": "echo: give json"}


def test_reasoning_effort_becomes_thinking_and_reasoning_content(gw, up, acct):
    _, client = acct
    reply = client.chat.completions.create(model=MODEL, reasoning_effort="low",
                                           messages=[{"role": "user", "content": "think"}])
    assert up.last.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    message = reply.choices[0].message
    assert message.model_extra["reasoning_content"] == "Thinking about think"
    assert message.content == "echo: think"
    assert reply.usage.completion_tokens == 3 + 2      # thinking words are output tokens


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_thinking_stays_on_in_a_tool_loop_when_the_signed_block_comes_back(gw, up, acct,
                                                                          stream):
    """The answer carries the signed thinking block in `thinking_blocks`; a client that sends
    the assistant message back as it came keeps thinking on for the next step (without it,
    that step runs without thinking)."""
    _, client = acct
    ask = {"role": "user", "content": "What is the weather in Oslo?"}
    if stream:
        chunks = list(client.chat.completions.create(
            model=MODEL, reasoning_effort="low", tools=[WEATHER_TOOL], messages=[ask],
            stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        blocks = [b for d in deltas for b in (d.model_extra or {}).get("thinking_blocks") or ()]
        calls = [t for d in deltas for t in d.tool_calls or ()]
        message = {"role": "assistant", "content": "Let me check.", "thinking_blocks": blocks,
                   "tool_calls": [{"id": calls[0].id, "type": "function", "function": {
                       "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
    else:
        first = client.chat.completions.create(model=MODEL, reasoning_effort="low",
                                               tools=[WEATHER_TOOL], messages=[ask])
        message = first.choices[0].message.model_dump(exclude_none=True)
        blocks = message["thinking_blocks"]
    signed = blocks
    assert [b["type"] for b in signed] == ["thinking"]
    assert signed[0]["signature"] in up.issued_signatures
    result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"],
              "content": '{"temp_c": 4}'}

    final = client.chat.completions.create(model=MODEL, reasoning_effort="low",
                                           tools=[WEATHER_TOOL],
                                           messages=[ask, message, result])
    assert up.last.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert up.last.body["messages"][1]["content"][0] == signed[0]
    assert final.choices[0].message.content == 'echo: {"temp_c": 4}'

    message.pop("thinking_blocks")
    client.chat.completions.create(model=MODEL, reasoning_effort="low", tools=[WEATHER_TOOL],
                                   messages=[ask, message, result])
    assert up.last.body["thinking"] == {"type": "disabled"}


@pytest.mark.parametrize("kwargs, param", [
    ({"n": 2}, "n"), ({"temperature": 1.5}, "temperature"), ({"logit_bias": {"1": 5}},
                                                              "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"modalities": ["text", "audio"]},
                                                      "modalities"),
    ({"max_completion_tokens": 500, "reasoning_effort": "high"}, "max_completion_tokens")])
def test_unsupported_parameters_are_a_400_naming_the_field(gw, up, acct, kwargs, param):
    account, client = acct
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "hi"}], **kwargs)
    assert info.value.body["param"] == param
    assert up.requests == [] and charged(gw, account) == 0


def test_neutral_values_and_hints_pass(gw, up, acct):
    _, client = acct
    client.chat.completions.create(model=MODEL, n=1, presence_penalty=0, seed=7, store=False,
                                   messages=[{"role": "user", "content": "hi"}])
    assert not {"n", "presence_penalty", "seed", "store"} & set(up.last.body)


@pytest.mark.parametrize("status, kind, expected", [
    (529, "overloaded_error", openai.InternalServerError),
    (400, "invalid_request_error", openai.BadRequestError)])
def test_upstream_errors_are_mapped(gw, up, acct, status, kind, expected):
    account, client = acct
    for _ in range(3):  # every attempt (retryable statuses are tried three times)
        up.fail_next(status, {"type": "error", "error": {"type": kind, "message": "upstream said"}})
    with pytest.raises(expected) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == (503 if status == 529 else 400)
    assert info.value.body["message"] == "upstream said"
    assert charged(gw, account) == 0


def test_rate_limit_keeps_retry_after(gw, up, acct):
    _, client = acct
    up.fail_next(429, headers={"retry-after": "17"})
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "17"


def test_rejected_gateway_key_is_an_operator_problem(gw, up, acct):
    _, client = acct
    up.fail_next(401, {"type": "error", "error": {"type": "authentication_error",
                                                  "message": "invalid x-api-key"}})
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "ANTHROPIC_API_KEY" in info.value.body["message"]


def test_mid_stream_error_becomes_error_event_and_charges_what_was_produced(gw, up, acct):
    account, client = acct
    up.error_in_stream_after(2)
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
                model=MODEL, stream=True,
                messages=[{"role": "user", "content": "one two three four five six"}]):
            got.append(chunk)
    assert "Overloaded" in str(info.value)
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text == "echo: one "
    # input is exact from message_start; output estimated from the text (ceil(10/4) = 3)
    assert charged(gw, account) == chat_cost_nano(MODEL, 6, 3)


def test_raw_stream_framing_ends_with_done(gw, up, acct):
    account, _ = acct
    secret = gw.account(5_000_000_000)[1]
    resp = requests.post(f"{gw.base_url}/chat/completions", headers={
        "Authorization": f"Bearer {secret}"}, json={
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        timeout=20)
    lines = [x for x in resp.text.split("\n\n") if x]
    assert lines[-1] == "data: [DONE]"
    assert all(x.startswith("data: ") for x in lines)
    assert not any('"usage": {' in x or '"usage":{' in x for x in lines)  # not asked for
