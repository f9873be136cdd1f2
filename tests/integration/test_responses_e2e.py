"""The Responses API end to end: the official openai SDK -> the gateway under gunicorn -> strict
fakes. `openai/gpt-4o` is passed through to a fake of OpenAI's native /v1/responses; Anthropic,
Gemini and Mistral models are translated through OpenAI chat to their own strict fakes. Checks
what reached the upstream, what the client got, and the exact charge (pricing_oracle)."""

from __future__ import annotations

import json
import math
import time

import openai
import pytest
import requests
from openai import OpenAI

from runtime.clients.responses_translation import decode_summary
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import START_CREDITS, charged, openai_client, reset_fakes
from tests.pricing_oracle import chat_cost_nano, credits

pytestmark = pytest.mark.integration

NATIVE = "openai/gpt-4o"
TRANSLATED = ["anthropic/claude-sonnet-4-5", "google/gemini-2.0-flash",
              "mistral/mistral-large-latest"]
ALL = [NATIVE, *TRANSLATED]
UPSTREAM = {NATIVE: "openai", TRANSLATED[0]: "anthropic", TRANSLATED[1]: "google",
            TRANSLATED[2]: "mistral"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
SCHEMA = {"type": "json_schema", "name": "echo", "strict": True,
          "schema": {"type": "object", "properties": {"echo": {"type": "string"}},
                     "required": ["echo"], "additionalProperties": False}}
MISTRAL_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop",
                  "random_seed", "response_format", "tools", "tool_choice", "presence_penalty",
                  "frequency_penalty", "n", "parallel_tool_calls", "prediction", "safe_prompt",
                  "stream_options"}


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(openai=FakeResponses(api_key="sk-openai-upstream"),
                       anthropic=FakeAnthropic(api_key="anthropic-up"),
                       google=FakeGemini(api_key="gemini-up"),
                       mistral=FakeOpenAI(api_key="mistral-up", models=["mistral-large-latest"],
                                          known_fields=MISTRAL_FIELDS))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    env = {"OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": "sk-openai-upstream",
           "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url, "ANTHROPIC_API_KEY": "anthropic-up",
           "GOOGLE_BASE_URL": fakes["google"].base_url, "GOOGLE_API_KEY": "gemini-up",
           "MISTRAL_BASE_URL": fakes["mistral"].base_url, "MISTRAL_API_KEY": "mistral-up"}
    return gateway_factory("gw-responses", env, workers=2)


@pytest.fixture
def up(fakes):
    """The shared reset, and afterwards: no fake saw a request it had to refuse."""
    yield reset_fakes(fakes)
    for fake in fakes.values():
        assert not fake.errors


def account(gw, nano: int = START_CREDITS) -> tuple[int, OpenAI]:
    acct, secret = gw.account(nano)
    return acct, openai_client(gw, secret)


def settled(gw, acct: int, timeout: float = 5.0) -> None:
    """Wait until the account's requests are all settled (a stream the client left settles
    when the gateway notices)."""
    name = gw.store.get_account_by_id(acct).name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = gw.store.usage(name)
        if rows:
            return
        time.sleep(0.05)
    raise AssertionError("the request was not settled")


def assert_usage_charged(gw, acct: int, model: str, usage) -> None:
    expected = chat_cost_nano(model, usage.input_tokens, usage.output_tokens,
                               cached=usage.input_tokens_details.cached_tokens)
    assert expected > 0
    assert charged(gw, acct) == expected
    assert usage.model_extra["cost"] == pytest.approx(credits(expected))
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


@pytest.mark.parametrize("model", ALL)
def test_text_with_instructions(gw, up, model):
    acct, c = account(gw)
    resp = c.responses.create(model=model, instructions="Be brief.",
                              input="hello there gateway", max_output_tokens=200,
                              temperature=0.5)
    assert resp.output_text == "echo: hello there gateway"
    assert resp.model == model and resp.status == "completed" and resp.object == "response"
    assert resp.output[0].type == "message" and resp.output[0].role == "assistant"
    assert resp.usage.input_tokens_details.cache_write_tokens == 0
    assert_usage_charged(gw, acct, model, resp.usage)
    sent = up[UPSTREAM[model]].last.body
    if model == NATIVE:
        assert sent["model"] == "gpt-4o" and sent["instructions"] == "Be brief."
        assert sent["max_output_tokens"] == 200
    elif model.startswith("anthropic"):
        assert sent["system"][0]["text"] == "Be brief." and sent["max_tokens"] == 200
    elif model.startswith("mistral"):
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["max_tokens"] == 200


@pytest.mark.parametrize("model", ALL)
def test_streaming_text(gw, up, model):
    acct, c = account(gw)
    events = list(c.responses.create(model=model, input="stream these words please",
                                     stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == sorted({e.sequence_number for e in events})
    assert "response.output_text.delta" in types and "response.output_text.done" in types
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == final.output_text == "echo: stream these words please"
    assert final.model == model
    assert_usage_charged(gw, acct, model, final.usage)


@pytest.mark.parametrize("model", ALL)
def test_stream_helper_accumulates(gw, up, model):
    _, c = account(gw)
    with c.responses.stream(model=model, input="helper check") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "echo: helper check"


@pytest.mark.parametrize("model", ALL)
@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(gw, up, model, stream):
    acct, c = account(gw)
    conversation: list = [{"role": "user", "content": "What is the weather in Oslo?"}]

    def create(**kw):
        if not stream:
            return c.responses.create(model=model, input=conversation, tools=[WEATHER], **kw)
        events = list(c.responses.create(model=model, input=conversation, tools=[WEATHER],
                                         stream=True, **kw))
        assert events[-1].type == "response.completed"
        if any(e.type == "response.output_item.added" and e.item.type == "function_call"
               for e in events):
            assert any(e.type == "response.function_call_arguments.done" for e in events)
        return events[-1].response

    first = create()
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert call.call_id
    conversation += [item.model_dump(exclude_none=True, warnings=False) for item in first.output]
    conversation.append({"type": "function_call_output", "call_id": call.call_id,
                         "output": json.dumps({"temp_c": 4})})
    second = create()
    assert "temp_c" in second.output_text and "4" in second.output_text
    assert not [i for i in second.output if i.type == "function_call"]
    total = sum(chat_cost_nano(model, r.usage.input_tokens, r.usage.output_tokens)
                for r in (first, second))
    assert charged(gw, acct) == total
    if model.startswith("mistral"):
        sent = up["mistral"].last.body
        assert sent["tools"][0] == {"type": "function", "function": {
            k: WEATHER[k] for k in ("name", "description", "parameters")}}
        assert sent["messages"][-1]["role"] == "tool"
        assert sent["messages"][-2]["tool_calls"][0]["id"] == call.call_id


@pytest.mark.parametrize("model", ALL)
def test_json_schema_text_format(gw, up, model):
    _, c = account(gw)
    resp = c.responses.create(model=model, input="structured please",
                              text={"format": SCHEMA})
    answer = json.loads(resp.output_text)
    assert list(answer) == ["echo"] and answer["echo"].endswith("structured please")
    if model.startswith("mistral"):
        fmt = up["mistral"].last.body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "echo"
        assert fmt["json_schema"]["schema"] == SCHEMA["schema"]


def test_previous_response_id_never_issued_is_404_and_free(gw, up):
    acct, c = account(gw)
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.create(model=TRANSLATED[0], input="hi", previous_response_id="resp_1")
    assert err.value.body["param"] == "previous_response_id"
    assert not up["anthropic"].requests and charged(gw, acct) == 0


def test_previous_response_id_and_store_pass_through_natively(gw, up):
    _, c = account(gw)
    first = c.responses.create(model=NATIVE, input="first turn", store=True)
    second = c.responses.create(model=NATIVE, input="second turn",
                                previous_response_id=first.id)
    assert second.output_text == "echo: second turn"
    assert up["openai"].last.body["previous_response_id"] == first.id
    assert up["openai"].requests[0].body["store"] is True


def test_store_is_dropped_when_translated(gw, up):
    _, c = account(gw)
    c.responses.create(model=TRANSLATED[2], input="hi there", store=True,
                       metadata={"k": "v"}, include=["reasoning.encrypted_content"])
    sent = up["mistral"].last.body
    assert "store" not in sent and "metadata" not in sent and "include" not in sent


def test_cached_tokens_are_priced_natively(gw, up):
    acct, c = account(gw)
    up["openai"].cached_tokens = 2
    resp = c.responses.create(model=NATIVE, input="one two three four five six")
    assert resp.usage.input_tokens_details.cached_tokens == 2
    assert charged(gw, acct) == chat_cost_nano(NATIVE, resp.usage.input_tokens,
                                              resp.usage.output_tokens, cached=2)


@pytest.mark.parametrize("model", ALL)
def test_compact_then_continue(gw, up, model):
    acct, c = account(gw)
    history = [{"role": "user", "content": "My name is Ada."},
               {"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello Ada."}]},
               {"role": "user", "content": "Remember my name."}]
    compacted = c.responses.compact(model=model, input=history)
    assert compacted.object == "response.compaction"
    kinds = [(getattr(i, "role", None), i.type) for i in compacted.output]
    assert kinds == [("user", "message"), ("user", "message"), (None, "compaction")]
    assert compacted.output[0].content[0].text == "My name is Ada."
    usage = compacted.usage
    assert charged(gw, acct) == chat_cost_nano(model, usage.input_tokens, usage.output_tokens)
    assert usage.model_extra["cost"] > 0
    item = compacted.output[-1]
    if model != NATIVE:
        assert "Hello Ada." in decode_summary(item.encrypted_content)
    follow = [i.model_dump(exclude_none=True, warnings=False) for i in compacted.output]
    follow.append({"role": "user", "content": "What is my name?"})
    nxt = c.responses.create(model=model, input=follow)
    # Anthropic and Gemini merge the kept user messages with the new one into one turn
    assert nxt.output_text.startswith("echo: ") and nxt.output_text.endswith("my name?")
    if model.startswith("mistral"):
        system = [m for m in up["mistral"].last.body["messages"] if m["role"] == "system"]
        assert "Hello Ada." in system[0]["content"]


def test_foreign_compaction_item_on_translated_model_is_400(gw, up):
    _, c = account(gw)
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model=TRANSLATED[1], input=[
            {"type": "compaction", "encrypted_content": "gAAAA-openai-only"},
            {"role": "user", "content": "go on"}])
    assert err.value.body["param"] == "input[0]"


def test_own_compaction_item_reaches_native_provider_as_a_message(gw, up):
    _, c = account(gw)
    compacted = c.responses.compact(model=TRANSLATED[2], input="remember the code 7421")
    follow = [i.model_dump(exclude_none=True, warnings=False) for i in compacted.output]
    follow.append({"role": "user", "content": "and now?"})
    assert c.responses.create(model=NATIVE, input=follow).output_text == "echo: and now?"
    sent = up["openai"].last.body["input"]
    assert sent[1]["type"] == "message" and sent[1]["role"] == "developer"
    assert "7421" in sent[1]["content"]


def test_bad_key_unknown_model_and_insufficient_credits(gw, up):
    with pytest.raises(openai.AuthenticationError):
        openai_client(gw, "tm-wrong").responses.create(model=NATIVE, input="hi")
    acct, c = account(gw)
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.create(model="nope/missing", input="hi")
    assert err.value.body["param"] == "model"
    poor, secret = gw.account(1)
    for model in (NATIVE, TRANSLATED[0]):
        with pytest.raises(openai.PermissionDeniedError) as err:
            openai_client(gw, secret).responses.create(model=model, input="hi")
        assert "Insufficient credits" in err.value.message
    assert gw.balance(poor) == 1
    assert not any(f.requests for f in up.values())


def test_invalid_body_names_the_field(gw, up):
    acct, secret = gw.account(5_000_000_000)
    resp = requests.post(f"{gw.base_url}/responses", headers={
        "Authorization": f"Bearer {secret}"}, json={"model": NATIVE, "input": "x",
                                                    "temperature": 7}, timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "temperature"
    resp = requests.post(f"{gw.base_url}/responses", headers={
        "Authorization": f"Bearer {secret}"}, json={"model": TRANSLATED[0], "input": "x",
                                                    "tools": [{"type": "file_search",
                                                               "vector_store_ids": ["vs_1"]}]},
        timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tools[0].type"
    assert charged(gw, acct) == 0


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED[0], TRANSLATED[2]])
def test_upstream_429_keeps_status_and_costs_nothing(gw, up, model):
    acct, c = account(gw)
    up[UPSTREAM[model]].fail_next(429, headers={"Retry-After": "30"})
    with pytest.raises(openai.RateLimitError) as err:
        c.responses.create(model=model, input="hi")
    assert err.value.response.headers.get("retry-after") == "30"
    assert charged(gw, acct) == 0


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED[0], TRANSLATED[2]])
def test_mid_stream_error_raises_and_charges_what_was_produced(gw, up, model):
    acct, c = account(gw)
    fake = up[UPSTREAM[model]]
    if model == NATIVE:
        fake.error_in_stream_after(2)
    elif model.startswith("anthropic"):
        fake.error_in_stream_after(2)
    else:
        fake.error_in_stream_after(2, message="boom")
    seen = []
    with pytest.raises(openai.APIError):
        for event in c.responses.create(model=model, input="one two three four five",
                                        stream=True):
            seen.append(event)
    assert "response.output_text.delta" in [e.type for e in seen]
    settled(gw, acct)
    cost = charged(gw, acct)
    assert cost > 0
    # settled before the error event went out, so recorded as the upstream's failure
    assert [r.status for r in gw.store.usage(gw.store.get_account_by_id(acct).name)] == [502]
    if model != NATIVE:
        # the prompt is known from usage or estimated; the output was produced
        assert cost < chat_cost_nano(model, 100, 100)
    else:
        produced = len("echo: one ")
        prompt = len("one two three four five")
        assert cost == chat_cost_nano(model, math.ceil(prompt / 4),
                                       math.ceil(produced / 4))


@pytest.mark.parametrize("stream", [False, True])
def test_length_cut_is_incomplete(gw, up, stream):
    acct, c = account(gw)
    kw = {"model": TRANSLATED[2], "input": "one two three four five six seven",
          "max_output_tokens": 3}
    if stream:
        events = list(c.responses.create(stream=True, **kw))
        assert events[-1].type == "response.incomplete"
        resp = events[-1].response
    else:
        resp = c.responses.create(**kw)
    assert resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == "echo: one two"
    assert_usage_charged(gw, acct, TRANSLATED[2], resp.usage)


def test_reasoning_is_streamed_as_a_reasoning_item(gw, up):
    acct, c = account(gw)
    with c.responses.stream(model=TRANSLATED[0], input="think about this",
                            reasoning={"effort": "low"}) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.reasoning_text.delta" in types
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "Thinking about think about this"
    assert final.output_text == "echo: think about this"
    assert up["anthropic"].last.body["thinking"]["budget_tokens"] == 2048
    assert_usage_charged(gw, acct, TRANSLATED[0], final.usage)
