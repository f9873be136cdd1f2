"""Requests shaped like the Codex CLI's (wire_api "responses", default features), replayed with
the official openai SDK through the gateway to strict fakes: OpenAI's native Responses API
(which refuses parameters it does not know, as `client_metadata`), and Claude and Gemini models
translated through chat. Two turns of the tool loop, whole and streamed: the model calls a
namespaced (MCP-style) function; the next turn sends back a reasoning item with encrypted
content, the function call and its output, and gets the final answer. Checks what reached each
upstream, the names the client gets back, the dropped-tools header (Mistral, which has no web
search) and the exact charges."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from runtime.clients.responses_translation import flat_name
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import START_CREDITS, charged, openai_client, reset_fakes
from tests.pricing_oracle import chat_cost_nano

pytestmark = pytest.mark.integration

NATIVE = "openai/gpt-4o"
CLAUDE = "anthropic/claude-sonnet-4-5"
GEMINI = "google/gemini-2.0-flash"
MISTRAL = "mistral/mistral-large-latest"
UPSTREAM = {NATIVE: "openai", CLAUDE: "anthropic", GEMINI: "google", MISTRAL: "mistral"}
MISTRAL_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop",
                  "random_seed", "response_format", "tools", "tool_choice", "presence_penalty",
                  "frequency_penalty", "n", "parallel_tool_calls", "prediction", "safe_prompt",
                  "stream_options"}
NAMESPACE = "mcp__weather__"
FLAT = flat_name(NAMESPACE, "get_forecast")
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "namespace", "name": NAMESPACE, "description": "Tools of the weather MCP server",
     "tools": [{"type": "function", "name": "get_forecast", "description": "Forecast for a city",
                "strict": False, "parameters": CITY}]},
    {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False,
     "parameters": {"type": "object", "properties": {
         "command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
    {"type": "web_search"},
]
# What Codex sends besides tools and input (the SDK takes the unusual ones in extra_body).
CODEX = dict(instructions="You are Codex, a coding agent.", tool_choice="auto",
             parallel_tool_calls=False, store=False, include=["reasoning.encrypted_content"],
             reasoning={"effort": "medium", "summary": "auto"}, prompt_cache_key="conv-123",
             extra_body={"client_metadata": {"originator": "codex_cli_rs"},
                         "text": {"verbosity": "medium"}})
REASONING = {"type": "reasoning", "id": "rs_0123", "summary": [],
             "encrypted_content": "gAAAAABoQ-opaque-state-of-another-turn"}


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
    return gateway_factory("gw-codex", env, workers=1)


@pytest.fixture
def up(fakes):
    """The shared reset, and afterwards: no fake saw a request it had to refuse."""
    yield reset_fakes(fakes)
    for fake in fakes.values():
        assert not fake.errors


def turn(c: OpenAI, model: str, items: list, stream: bool, **kw):
    """One Codex turn: the Response and the answer's headers. A keyword set to None is not
    sent."""
    args = {k: v for k, v in {**CODEX, **kw}.items() if v is not None}
    raw = c.responses.with_raw_response.create(model=model, input=items, tools=TOOLS,
                                               stream=stream, **args)
    if not stream:
        return raw.parse(), raw.headers
    events = list(raw.parse())
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    for e in events:
        if e.type in ("response.output_item.added", "response.output_item.done") \
                and e.item.type == "function_call":
            # streamed call items carry the client's names from the first event on
            assert (e.item.name, e.item.namespace) == ("get_forecast",
                                                                        NAMESPACE)
    return events[-1].response, raw.headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", [NATIVE, CLAUDE, GEMINI])
def test_codex_tool_loop(gw, up, model, stream):
    acct, secret = gw.account(START_CREDITS)
    c = openai_client(gw, secret)
    items: list = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is the weather in Oslo tomorrow?"}]}]

    first, headers = turn(c, model, items, stream)
    assert first.status == "completed" and first.model == model
    calls = [i for i in first.output if i.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    # the namespaced tool comes back under its own name and namespace, as Codex dispatches it
    assert call.name == "get_forecast" and call.namespace == NAMESPACE
    assert json.loads(call.arguments) == {"city": "Oslo"}
    sent = up[UPSTREAM[model]].last.body
    assert "client_metadata" not in sent
    if model == NATIVE:
        assert [t["type"] for t in sent["tools"]] == ["namespace", "function", "web_search"]
        assert sent["store"] is False and sent["prompt_cache_key"] == "conv-123"
        assert sent["include"] == ["reasoning.encrypted_content"]
        assert "x-tokmodel-dropped-tools" not in headers
    elif model == CLAUDE:
        assert [t["name"] for t in sent["tools"]] == [FLAT, "shell", "web_search"]
        assert sent["tools"][2] == {"type": "web_search_20250305", "name": "web_search"}
        assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
        assert not {"store", "include", "prompt_cache_key", "text"} & set(sent)
    else:
        assert sent["tools"] == [
            {"functionDeclarations": [
                {"name": FLAT, "description": "Forecast for a city",
                 "parameters": sent["tools"][0]["functionDeclarations"][0]["parameters"]},
                {"name": "shell", "description": "Runs a shell command",
                 "parameters": sent["tools"][0]["functionDeclarations"][1]["parameters"]}]},
            {"googleSearch": {}}]
        assert not {"store", "include", "prompt_cache_key", "text"} & set(sent)
    if model != NATIVE:
        assert "x-tokmodel-dropped-tools" not in headers   # both have a web search

    # Turn 2: what Codex sends back (the reasoning item of the earlier turn included).
    items += [REASONING, {"type": "function_call", "call_id": call.call_id,
                          "name": "get_forecast", "namespace": NAMESPACE,
                          "arguments": call.arguments},
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second, _ = turn(c, model, items, stream)
    assert second.status == "completed"
    assert not [i for i in second.output if i.type == "function_call"]
    assert "sunny" in second.output_text
    sent = up[UPSTREAM[model]].last.body
    assert "client_metadata" not in sent
    if model == NATIVE:
        assert sent["input"][1] == REASONING
        assert sent["input"][2]["namespace"] == NAMESPACE
    elif model == CLAUDE:
        use = sent["messages"][1]["content"][-1]
        assert use["type"] == "tool_use" and use["name"] == FLAT
        assert "thinking" not in json.dumps(sent["messages"])   # the reasoning item is dropped
    else:
        call_part = sent["contents"][1]["parts"][-1]["functionCall"]
        assert call_part["name"] == FLAT and call_part["args"] == {"city": "Oslo"}

    total = sum(chat_cost_nano(model, r.usage.input_tokens, r.usage.output_tokens,
                                cached=r.usage.input_tokens_details.cached_tokens)
                for r in (first, second))
    assert total > 0 and charged(gw, acct) == total


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_web_search_dropped_where_the_provider_has_none(gw, up, stream):
    """Mistral has no web search: the hosted tool is left out and the header says so. (Codex
    sends `reasoning` only for models it knows to reason, which mistral-large is not.)"""
    acct, secret = gw.account(START_CREDITS)
    c = openai_client(gw, secret)
    resp, headers = turn(c, MISTRAL, [{"role": "user", "content": "weather in Oslo?"}], stream,
                         reasoning=None)
    assert headers["x-tokmodel-dropped-tools"] == "web_search"
    call = resp.output[-1]
    assert call.type == "function_call" and call.name == "get_forecast"
    assert call.namespace == NAMESPACE
    sent = up["mistral"].last.body
    assert [t["function"]["name"] for t in sent["tools"]] == [FLAT, "shell"]
    assert "web_search_options" not in sent and "client_metadata" not in sent
    assert charged(gw, acct) == chat_cost_nano(MISTRAL, resp.usage.input_tokens,
                                                resp.usage.output_tokens)


@pytest.mark.parametrize("model", [NATIVE, CLAUDE, GEMINI, MISTRAL])
def test_object_tool_choice_names_a_namespaced_tool(gw, up, model):
    acct, secret = gw.account(START_CREDITS)
    c = openai_client(gw, secret)
    resp, _ = turn(c, model, [{"role": "user", "content": "hello"}], False,
                   tool_choice={"type": "function", "name": "get_forecast",
                                "namespace": NAMESPACE},
                   reasoning=None if model == MISTRAL else CODEX["reasoning"])
    call = resp.output[-1]
    assert call.type == "function_call" and call.name == "get_forecast"
    assert call.namespace == NAMESPACE
    sent = up[UPSTREAM[model]].last.body
    if model == CLAUDE:
        assert sent["tool_choice"] == {"type": "tool", "name": FLAT,
                                       "disable_parallel_tool_use": True}
    elif model == GEMINI:
        assert sent["toolConfig"]["functionCallingConfig"] == {
            "mode": "ANY", "allowedFunctionNames": [FLAT]}
    elif model == MISTRAL:
        assert sent["tool_choice"] == {"type": "function", "function": {"name": FLAT}}
    assert charged(gw, acct) == chat_cost_nano(model, resp.usage.input_tokens,
                                                resp.usage.output_tokens)


def test_long_namespaced_names_fit_every_provider():
    long = flat_name("mcp__" + "x" * 80, "a.tool/with:odd chars")
    assert len(long) <= 64 and long.replace("_", "a").replace("-", "a").isalnum()
    assert long != flat_name("mcp__" + "x" * 80, "a.tool/with:odd chars2")
    assert flat_name("mcp__weather__", "get_forecast") == "mcp__weather__get_forecast"
