"""Hosted web searches are charged at settle, in every client format, whole and streamed, on
the real gateway under gunicorn with strict fakes that report the searches they ran:
Anthropic's usage.server_tool_use.web_search_requests, Gemini's grounding (one grounded
prompt), OpenAI Responses' web_search_call items, and OpenAI chat's web_search_options (one
search per request). Each search costs the catalogue's per_web_search; the charge is in
`usage.cost` and in the usage log's details, and the balance moves by exactly that."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
import requests
import yaml

from runtime.billing.credits import nano_to_credits
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import anthropic_client, openai_client, usage_rows
from tests.pricing_oracle import chat_cost_nano

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = "anthropic/claude-sonnet-4-5"
GEMINI = "google/gemini-2.0-flash"
GPT = "openai/gpt-4o"
START = 5_000_000_000
NANO = Decimal(1_000_000_000)
TEXT = "what happened in the news today"


def fee(model: str, searches: int) -> int:
    """searches x the catalogue's per_web_search, in nano-credits."""
    catalogue = yaml.safe_load((ROOT / "providers.yaml").read_text())
    price = Decimal(str(catalogue["models"][model]["pricing"]["per_web_search"]))
    return int(searches * price * NANO)


def catalogue_with_openai_search(tmp_path_factory, base_url: str) -> str:
    """The catalogue (its own OpenAI web-search prices), with OpenAI at `base_url`."""
    catalogue = yaml.safe_load((ROOT / "providers.yaml").read_text())
    catalogue["providers"]["openai"] = {"deployments": [
        {"name": "main", "base_url": base_url, "api_key_env": "OPENAI_API_KEY"}]}
    path = tmp_path_factory.mktemp("search-catalogue") / "providers.yaml"
    path.write_text(yaml.safe_dump(catalogue))
    return str(path)


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(anthropic=FakeAnthropic(api_key="anthropic-up"),
                       google=FakeGemini(api_key="gemini-up"),
                       openai=FakeOpenAI(api_key="sk-up"),
                       responses=FakeResponses(api_key="sk-up"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory, tmp_path_factory):
    """Anthropic, Gemini and OpenAI chat."""
    return gateway_factory("gw-search-fees", {
        "TOKMODEL_PROVIDERS": catalogue_with_openai_search(tmp_path_factory,
                                                           fakes["openai"].base_url),
        "OPENAI_API_KEY": "sk-up",
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url, "ANTHROPIC_API_KEY": "anthropic-up",
        "GOOGLE_BASE_URL": fakes["google"].base_url, "GOOGLE_API_KEY": "gemini-up"})


@pytest.fixture(scope="module")
def gw_responses(fakes, gateway_factory, tmp_path_factory):
    """OpenAI's native Responses API."""
    return gateway_factory("gw-search-fees-responses", {
        "TOKMODEL_PROVIDERS": catalogue_with_openai_search(tmp_path_factory,
                                                           fakes["responses"].base_url),
        "OPENAI_API_KEY": "sk-up"})


def only_row(gw, account: int):
    (row,) = usage_rows(gw, account)
    return row


def stream_lines(gw, secret: str, path: str, body: dict) -> list[str]:
    headers = {"Authorization": f"Bearer {secret}", "anthropic-version": "2023-06-01"}
    resp = requests.post(gw.url + path, json=body, headers=headers, timeout=20)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return [line[6:] for line in resp.text.splitlines() if line.startswith("data: {")]


def check_charged(gw, account: int, model: str, usage: dict, searches: int) -> int:
    """The row and the balance: tokens at their prices plus the searches' fee, exactly."""
    row = only_row(gw, account)
    expected = chat_cost_nano(model, usage["prompt"], usage["completion"]) + fee(model,
                                                                                  searches)
    assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt"], usage["completion"])
    assert row.details.get("web_searches") == searches
    assert row.cost_nano == expected
    assert START - gw.balance(account) == expected
    return expected


def anthropic_usage(up) -> dict:
    (usage,) = up["anthropic"].usages
    assert usage["server_tool_use"] == {"web_search_requests": 2}
    return {"prompt": usage["input_tokens"], "completion": usage["output_tokens"]}


@pytest.fixture
def two_searches(up):
    up["anthropic"].web_searches = 2
    return up


# -- Anthropic: chat and Responses clients, whole and streamed ---------------------------------

def test_chat_whole_from_claude_charges_its_searches(gw, two_searches):
    account, secret = gw.account(START)
    answer = openai_client(gw, secret).chat.completions.create(
        model=CLAUDE, max_tokens=50, web_search_options={},
        messages=[{"role": "user", "content": TEXT}])
    charged = check_charged(gw, account, CLAUDE, anthropic_usage(two_searches), 2)
    assert answer.usage.model_extra["cost"] == nano_to_credits(charged)


def test_chat_stream_from_claude_charges_its_searches(gw, two_searches):
    account, secret = gw.account(START)
    chunks = stream_lines(gw, secret, "/v1/chat/completions", {
        "model": CLAUDE, "max_tokens": 50, "stream": True, "web_search_options": {},
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": TEXT}]})
    charged = check_charged(gw, account, CLAUDE, anthropic_usage(two_searches), 2)
    assert json.loads(chunks[-1])["usage"]["cost"] == nano_to_credits(charged)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_from_claude_charge_its_searches(gw, two_searches, stream):
    account, secret = gw.account(START)
    body = {"model": CLAUDE, "max_output_tokens": 50, "input": TEXT,
            "tools": [{"type": "web_search"}]}
    if stream:
        events = [json.loads(e) for e in stream_lines(gw, secret, "/v1/responses",
                                                      {**body, "stream": True})]
        usage = events[-1]["response"]["usage"]
    else:
        usage = openai_client(gw, secret).responses.create(**body).usage.model_dump()
    charged = check_charged(gw, account, CLAUDE, anthropic_usage(two_searches), 2)
    assert usage["cost"] == nano_to_credits(charged)


def test_a_search_the_model_did_not_run_costs_nothing(gw, up):
    account, secret = gw.account(START)
    openai_client(gw, secret).chat.completions.create(
        model=CLAUDE, max_tokens=50, web_search_options={},
        messages=[{"role": "user", "content": TEXT}])
    (usage,) = up["anthropic"].usages
    assert "server_tool_use" not in usage
    row = only_row(gw, account)
    assert "web_searches" not in row.details
    assert row.cost_nano == chat_cost_nano(CLAUDE, usage["input_tokens"],
                                           usage["output_tokens"])


# -- Gemini grounding: one grounded prompt -----------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_grounded_gemini_answers_pay_one_grounded_prompt(gw, up, stream):
    up["google"].grounded = True
    account, secret = gw.account(START)
    body = {"model": GEMINI, "max_tokens": 50, "web_search_options": {},
            "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        chunks = stream_lines(gw, secret, "/v1/chat/completions", {
            **body, "stream": True, "stream_options": {"include_usage": True}})
        usage = json.loads(chunks[-1])["usage"]
    else:
        usage = openai_client(gw, secret).chat.completions.create(**body).usage.model_dump()
    (meta,) = up["google"].usages
    charged = check_charged(gw, account, GEMINI, {"prompt": meta["promptTokenCount"],
                                                  "completion": meta["candidatesTokenCount"]},
                            1)
    assert usage["cost"] == nano_to_credits(charged)


# -- OpenAI: chat's web_search_options, Responses' web_search_call items -----------------------

@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_with_web_search_options_pays_one_search(gw, up, stream):
    account, secret = gw.account(START)
    body = {"model": GPT, "max_tokens": 50, "web_search_options": {}, "stream": stream,
            "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
        usage = json.loads(stream_lines(gw, secret, "/v1/chat/completions", body)[-1])["usage"]
    else:
        resp = requests.post(gw.url + "/v1/chat/completions", json=body, timeout=20,
                             headers={"Authorization": f"Bearer {secret}"})
        assert resp.status_code == 200, resp.text
        usage = resp.json()["usage"]
    row = only_row(gw, account)
    assert row.details.get("web_searches") == 1
    expected = (chat_cost_nano(GPT, usage["prompt_tokens"], usage["completion_tokens"])
                + fee(GPT, 1))
    assert row.cost_nano == expected == START - gw.balance(account)
    assert usage["cost"] == nano_to_credits(expected)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_responses_pay_each_web_search_call(gw_responses, up, stream):
    up["responses"].web_search = True
    gw = gw_responses
    account, secret = gw.account(START)
    body = {"model": GPT, "input": TEXT, "tools": [{"type": "web_search"}]}
    if stream:
        events = [json.loads(e) for e in stream_lines(gw, secret, "/v1/responses",
                                                      {**body, "stream": True})]
        response = events[-1]["response"]
    else:
        response = openai_client(gw, secret).responses.create(**body).model_dump()
    assert [i["type"] for i in response["output"]] == ["web_search_call", "message"]
    usage = response["usage"]
    row = only_row(gw, account)
    assert row.details.get("web_searches") == 1
    expected = (chat_cost_nano(GPT, usage["input_tokens"], usage["output_tokens"])
                + fee(GPT, 1))
    assert fee(GPT, 1) > 0          # the catalogue's own price for OpenAI's search calls
    assert row.cost_nano == expected == START - gw.balance(account)
    assert usage["cost"] == nano_to_credits(expected)


# -- Messages clients: Anthropic's web search server tool, as Claude Code's WebSearch sends it --

SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
WEATHER = {"name": "get_weather", "description": "Weather of a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def sent_tools(fake) -> list:
    return [r.body.get("tools") for r in fake.requests if isinstance(r.body, dict)]


@pytest.mark.parametrize("stream", [False, True])
def test_messages_server_tool_on_claude_passes_through_and_its_searches_are_charged(
        gw, two_searches, stream):
    account, secret = gw.account(START)
    client = anthropic_client(gw, secret)
    body = {"model": CLAUDE, "max_tokens": 50, "tools": [SEARCH_TOOL, WEATHER],
            "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        with client.messages.stream(**body) as events:
            final = events.get_final_message()
    else:
        final = client.messages.create(**body)
    assert sent_tools(two_searches["anthropic"]) == [[SEARCH_TOOL, WEATHER]]
    charged = check_charged(gw, account, CLAUDE, anthropic_usage(two_searches), 2)
    if not stream:
        assert final.usage.model_extra["cost"] == nano_to_credits(charged)


@pytest.mark.parametrize("stream", [False, True])
def test_messages_web_search_on_gemini_is_google_search_grounding(gw, up, stream):
    up["google"].grounded = True
    account, secret = gw.account(START)
    client = anthropic_client(gw, secret)
    body = {"model": GEMINI, "max_tokens": 50, "tools": [SEARCH_TOOL],
            "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        with client.messages.stream(**body) as events:
            final = events.get_final_message()
            headers = events.response.headers
    else:
        raw = client.messages.with_raw_response.create(**body)
        final, headers = raw.parse(), raw.headers
    assert final.content[0].type == "text"
    assert sent_tools(up["google"]) == [[{"googleSearch": {}}]]
    assert "x-tokmodel-dropped-tools" not in headers
    (meta,) = up["google"].usages
    check_charged(gw, account, GEMINI, {"prompt": meta["promptTokenCount"],
                                        "completion": meta["candidatesTokenCount"]}, 1)


@pytest.mark.parametrize("stream", [False, True])
def test_messages_server_tools_on_openai_are_dropped_and_named(gw, up, stream):
    account, secret = gw.account(START)
    client = anthropic_client(gw, secret)
    fetch = {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2}
    body = {"model": GPT, "max_tokens": 50, "tools": [SEARCH_TOOL, fetch],
            "tool_choice": {"type": "auto"},
            "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        with client.messages.stream(**body) as events:
            final = events.get_final_message()
            headers = events.response.headers
    else:
        raw = client.messages.with_raw_response.create(**body)
        final, headers = raw.parse(), raw.headers
    assert headers["x-tokmodel-dropped-tools"] == "web_search,web_fetch"
    assert final.content[0].text.startswith("echo")
    # no usable tool left: the request went on without tools, and no search was charged
    assert sent_tools(up["openai"]) == [None]
    row = only_row(gw, account)
    assert "web_searches" not in row.details
    assert row.cost_nano == chat_cost_nano(GPT, row.prompt_tokens, row.completion_tokens)
    assert row.cost_nano == START - gw.balance(account)


def test_messages_custom_tool_without_input_schema_is_still_a_400(gw, up):
    account, secret = gw.account(START)
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client(gw, secret).messages.create(
            model=CLAUDE, max_tokens=50, tools=[SEARCH_TOOL, {"name": "get_weather"}],
            messages=[{"role": "user", "content": TEXT}])
    assert "tools[1].input_schema" in info.value.message
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert up["anthropic"].requests == []
    assert gw.balance(account) == START


def test_messages_hold_counts_the_server_tools_max_uses(gw, up):
    # 0.02 credits: enough for the tokens and one search at 0.01, not for eight
    account, secret = gw.account(20_000_000)
    client = anthropic_client(gw, secret)
    body = {"model": CLAUDE, "max_tokens": 50,
            "messages": [{"role": "user", "content": TEXT}]}
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client.messages.create(**body, tools=[SEARCH_TOOL])
    assert "Insufficient credits" in info.value.message
    assert up["anthropic"].requests == []
    client.messages.create(**body, tools=[dict(SEARCH_TOOL, max_uses=1)])
    assert len(up["anthropic"].requests) == 1
