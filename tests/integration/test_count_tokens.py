"""`POST /v1/messages/count_tokens` end to end: the official anthropic SDK's
`client.messages.count_tokens(...)` -> the gateway under gunicorn -> strict fake Anthropic
and Gemini counters (deterministic counts, see tests/fakes/) or, for an OpenAI model, the
gateway's documented estimate (4 characters a token, 1,600 per image) flagged by
`x-tokmodel-estimate: true`. Counting is free: the balance never moves and no usage row is
written. Errors come in Anthropic's envelope."""

from __future__ import annotations

import base64
import json
import math

import anthropic
import pytest
import requests

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import START_CREDITS, anthropic_client, usage_rows

CLAUDE = "anthropic/claude-sonnet-4-5"
GPT = "openai/gpt-4o"
GEMINI = "google/gemini-2.0-flash"
MISTRAL = "mistral/mistral-large-latest"
KEYS = {"anthropic": "anthropic-up", "openai": "sk-openai-up", "gemini": "gemini-up",
        "mistral": "mistral-up"}
SYSTEM = "Be brief."
QUESTION = "What is the weather in Oslo today?"
TOOL = {"name": "get_weather", "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(anthropic=FakeAnthropic(api_key=KEYS["anthropic"],
                                               models=("claude-sonnet-4-5",)),
                       openai=FakeResponses(api_key=KEYS["openai"]),
                       mistral=FakeOpenAI(api_key=KEYS["mistral"],
                                          models=["mistral-large-latest"]),
                       gemini=FakeGemini(api_key=KEYS["gemini"], models=("gemini-2.0-flash",)))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-count-tokens", {
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": KEYS["anthropic"],
        "OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": KEYS["openai"],
        "MISTRAL_BASE_URL": fakes["mistral"].base_url, "MISTRAL_API_KEY": KEYS["mistral"],
        "GOOGLE_BASE_URL": fakes["gemini"].base_url, "GOOGLE_API_KEY": KEYS["gemini"]})


@pytest.fixture
def acct(gw):
    account, secret = gw.account(START_CREDITS)
    return account, anthropic_client(gw, secret), secret


def words(text: str) -> int:
    return len(text.split())


def assert_free(gw, account: int) -> None:
    assert gw.balance(account) == START_CREDITS
    assert usage_rows(gw, account) == []


def test_claude_count_is_anthropics_own(gw, up, acct):
    account, client, _ = acct
    raw = client.messages.with_raw_response.count_tokens(
        model=CLAUDE, system=SYSTEM, tools=[TOOL],
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"})
    counted = raw.parse()
    # The fake counts words of the prompt and of each tool definition's JSON.
    assert counted.input_tokens == words(SYSTEM) + words(QUESTION) + words(json.dumps(TOOL))
    assert raw.headers.get("x-tokmodel-estimate") is None
    [sent] = up["anthropic"].requests
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.body == {"model": "claude-sonnet-4-5", "system": SYSTEM, "tools": [TOOL],
                         "messages": [{"role": "user", "content": QUESTION}]}
    assert sent.headers["x-api-key"] == KEYS["anthropic"]
    assert sent.headers["anthropic-beta"] == "token-counting-2024-11-01"
    assert_free(gw, account)


def test_gemini_count_is_geminis_own_for_the_translated_request(gw, up, acct):
    account, client, _ = acct
    counted = client.messages.count_tokens(
        model=GEMINI, system=SYSTEM, tools=[TOOL],
        messages=[{"role": "user", "content": QUESTION}])
    [sent] = up["gemini"].requests
    assert sent.path == "/v1beta/models/gemini-2.0-flash:countTokens"
    assert sent.headers["x-goog-api-key"] == KEYS["gemini"]
    request = sent.body["generateContentRequest"]
    assert request["model"] == "models/gemini-2.0-flash"
    assert request["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
    assert request["contents"] == [{"role": "user", "parts": [{"text": QUESTION}]}]
    [declaration] = request["tools"][0]["functionDeclarations"]
    assert declaration["name"] == "get_weather"
    assert "maxOutputTokens" not in request.get("generationConfig", {})
    assert counted.input_tokens == (words(SYSTEM) + words(QUESTION)
                                    + words(json.dumps(declaration)))
    assert up["anthropic"].requests == []
    assert_free(gw, account)


def test_openai_model_is_counted_by_openai(gw, up, acct):
    account, client, _ = acct
    raw = client.messages.with_raw_response.count_tokens(
        model=GPT, system=SYSTEM, tools=[TOOL],
        messages=[{"role": "user", "content": QUESTION},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                     "name": "get_weather",
                                                     "input": {"city": "Oslo"}}]},
                  {"role": "user", "content": [{"type": "tool_result",
                                                "tool_use_id": "toolu_1",
                                                "content": "sunny"}]}])
    assert raw.headers.get("x-tokmodel-estimate") is None
    sent = up["openai"].last
    assert sent.path == "/v1/responses/input_tokens" and sent.body["model"] == "gpt-4o"
    kinds = [i.get("type") or i.get("role") for i in sent.body["input"]]
    assert kinds == ["system", "user", "function_call", "function_call_output"]
    assert sent.body["tools"][0]["name"] == "get_weather"
    tools = json.dumps(sent.body["tools"])
    arguments = sent.body["input"][2]["arguments"]
    assert json.loads(arguments) == {"city": "Oslo"}
    assert raw.parse().input_tokens == (words(SYSTEM) + words(QUESTION) + words("sunny")
                                        + words(arguments) + len(tools.split()))
    assert_free(gw, account)


def test_openai_format_model_without_a_counter_gets_the_documented_estimate(gw, up, acct):
    account, client, _ = acct
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}
    raw = client.messages.with_raw_response.count_tokens(
        model=MISTRAL, system=SYSTEM, tools=[TOOL],
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}, image]}])
    chars = len(SYSTEM) + len(QUESTION) + len(json.dumps(TOOL))
    assert raw.parse().input_tokens == math.ceil(chars / 4) + 1600
    assert raw.headers["x-tokmodel-estimate"] == "true"
    assert up["mistral"].requests == []
    assert_free(gw, account)


def test_upstream_errors_keep_anthropics_status_and_type(gw, up, acct):
    account, client, _ = acct
    up["anthropic"].fail_next(529)
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.count_tokens(model=CLAUDE,
                                     messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 529
    assert exc.value.body["error"]["type"] == "overloaded_error"
    up["gemini"].fail_next(429)
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.count_tokens(model=GEMINI,
                                     messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    assert_free(gw, account)


def test_a_bad_key_is_401(gw, up):
    client = anthropic_client(gw, "tok-not-a-key")
    with pytest.raises(anthropic.AuthenticationError) as exc:
        client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["error"]["type"] == "authentication_error"
    assert up["anthropic"].requests == []


def test_an_unknown_model_is_404(gw, up, acct):
    _, client, _ = acct
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.count_tokens(model="acme/nothing",
                                     messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["error"]["type"] == "not_found_error"
    assert "acme/nothing" in exc.value.body["error"]["message"]


def test_a_bad_body_is_400_naming_the_field(gw, up, acct):
    account, client, secret = acct
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.count_tokens(model=CLAUDE, messages=[])
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "messages" in exc.value.body["error"]["message"]
    answer = requests.post(f"{gw.url}/v1/messages/count_tokens", timeout=10,
                           headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
                           json={"model": GEMINI})
    assert answer.status_code == 400
    assert answer.json()["type"] == "error"
    assert "messages" in answer.json()["error"]["message"]
    # A field only Anthropic takes is refused for other models, as on /v1/messages.
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.count_tokens(model=GPT, messages=[{"role": "user", "content": "hi"}],
                                     extra_body={"mcp_servers": []})
    assert "mcp_servers" in exc.value.body["error"]["message"]
    assert up["anthropic"].requests == [] and up["gemini"].requests == []
    assert_free(gw, account)
