"""Unprefixed model names, as real clients send them, end to end: the official openai and
anthropic SDKs -> the gateway under gunicorn -> strict fake OpenAI and Anthropic APIs. The
answer names the model the client sent, the upstream gets its own model name, the charge is
the aliased model's list price (computed independently), and usage rows, the access log and
metrics carry the catalogue id, never the client's text."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import START_CREDITS, anthropic_client, charged, openai_client, usage_rows
from tests.pricing_oracle import chat_cost_nano, credits

pytestmark = pytest.mark.integration

KEYS = {"openai": "sk-openai-up", "anthropic": "anthropic-up"}
MESSAGES = [{"role": "user", "content": "hello there gateway"}]


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(
        openai=FakeOpenAI(api_key=KEYS["openai"], models=["gpt-4o-mini"]),
        anthropic=FakeAnthropic(api_key=KEYS["anthropic"],
                                models=("claude-sonnet-4-5", "claude-opus-4-8")))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-aliases", {
        "OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": KEYS["openai"],
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": KEYS["anthropic"]})


def metric_labels(gw, name: str) -> list[dict[str, str]]:
    text = requests.get(f"{gw.url}/metrics", timeout=10).text
    return [sample.labels for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def test_openai_sdk_with_a_bare_openai_name(gw, up):
    account, secret = gw.account(START_CREDITS)
    raw = openai_client(gw, secret).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES)
    reply = raw.parse()
    assert reply.model == "gpt-4o-mini"
    assert reply.choices[0].message.content == "echo: hello there gateway"
    assert up["openai"].last.body["model"] == "gpt-4o-mini"
    cost = chat_cost_nano("openai/gpt-4o-mini", reply.usage.prompt_tokens,
                           reply.usage.completion_tokens)
    assert cost > 0 and charged(gw, account) == cost
    assert reply.usage.model_extra["cost"] == credits(cost)
    (row,) = usage_rows(gw, account)
    assert row.model == "openai/gpt-4o-mini" and row.cost_nano == cost
    request_id = raw.headers["x-request-id"]
    (line,) = gw.access_lines(request_id)
    assert line["model"] == "openai/gpt-4o-mini"
    models = {labels.get("model") for labels in metric_labels(gw, "tokmodel_requests_total")}
    assert "openai/gpt-4o-mini" in models and "gpt-4o-mini" not in models


def test_openai_sdk_stream_with_a_dated_openai_name(gw, up):
    account, secret = gw.account(START_CREDITS)
    stream = openai_client(gw, secret).chat.completions.create(
        model="gpt-4o-mini-2024-07-18", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.model for c in chunks} == {"gpt-4o-mini-2024-07-18"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "echo: hello there gateway"
    assert up["openai"].last.body["model"] == "gpt-4o-mini"
    usage = chunks[-1].usage
    cost = chat_cost_nano("openai/gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)
    assert charged(gw, account) == cost
    (row,) = usage_rows(gw, account)
    assert row.model == "openai/gpt-4o-mini"


def test_anthropic_sdk_with_a_dated_claude_id(gw, up):
    account, secret = gw.account(START_CREDITS)
    client = anthropic_client(gw, secret)
    reply = client.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=200,
                                   messages=MESSAGES)
    assert reply.model == "claude-sonnet-4-5-20250929"
    assert reply.content[0].text == "echo: hello there gateway"
    assert up["anthropic"].last.body["model"] == "claude-sonnet-4-5"
    cost = chat_cost_nano("anthropic/claude-sonnet-4-5", reply.usage.input_tokens,
                           reply.usage.output_tokens)
    assert cost > 0 and charged(gw, account) == cost
    (row,) = usage_rows(gw, account)
    assert row.model == "anthropic/claude-sonnet-4-5"


def test_anthropic_sdk_stream_with_claude_codes_opus(gw, up):
    account, secret = gw.account(START_CREDITS)
    client = anthropic_client(gw, secret)
    with client.messages.stream(model="claude-opus-4-8", max_tokens=200,
                                messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-opus-4-8"
    assert up["anthropic"].last.body["model"] == "claude-opus-4-8"
    cost = chat_cost_nano("anthropic/claude-opus-4-8", final.usage.input_tokens,
                           final.usage.output_tokens)
    assert cost > 0 and charged(gw, account) == cost
    (row,) = usage_rows(gw, account)
    assert row.model == "anthropic/claude-opus-4-8"


def test_models_endpoint_resolves_an_alias_and_lists_ids_only(gw, up):
    _, secret = gw.account(START_CREDITS)
    client = openai_client(gw, secret)
    assert client.models.retrieve("gpt-4o-mini").id == "openai/gpt-4o-mini"
    assert client.models.retrieve("claude-sonnet-4-5-20250929").id == \
        "anthropic/claude-sonnet-4-5"
    ids = {m.id for m in client.models.list()}
    assert "openai/gpt-4o-mini" in ids and "gpt-4o-mini" not in ids
    missing = requests.get(f"{gw.base_url}/models/gpt-9",
                           headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert missing.status_code == 404


def test_an_unknown_bare_name_is_still_a_404(gw, up):
    _, secret = gw.account(START_CREDITS)
    reply = requests.post(f"{gw.base_url}/chat/completions",
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "gpt-9", "messages": MESSAGES}, timeout=10)
    assert reply.status_code == 404
    assert "'gpt-9' does not exist" in reply.json()["error"]["message"]
    assert up["openai"].requests == []
