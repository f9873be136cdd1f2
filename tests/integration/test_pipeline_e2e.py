"""The request pipeline end to end: deployments, retries, fallbacks, timeouts, metrics and the
access log, driven with the official openai SDK against the gateway under gunicorn (2 gevent
workers) and strict fake providers that fail on demand."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest
import requests
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import ROOT, free_port, openai_client, usage_rows
from tests.pricing_oracle import chat_cost_nano

pytestmark = pytest.mark.integration

OPENAI_MODEL = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "hello pipeline"}]
BALANCE = 5_000_000_000


def catalogue(path: Path, openai_deployments: list[dict], **provider_extra: object) -> str:
    """The repository's catalogue with OpenAI on the given deployments and a Claude fallback
    for OPENAI_MODEL."""
    data = yaml.safe_load((ROOT / "providers.yaml").read_text())
    data["providers"]["openai"] = {"deployments": openai_deployments, **provider_extra}
    data["models"][OPENAI_MODEL]["fallbacks"] = [CLAUDE]
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(east=FakeOpenAI(api_key="key-east"), west=FakeOpenAI(api_key="key-west"),
                       claude=FakeAnthropic(api_key="key-claude"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("gw-pipeline")
    providers = catalogue(work / "providers.yaml", [
        {"name": "east", "base_url_env": "OPENAI_EAST_BASE_URL",
         "api_key_env": "OPENAI_EAST_API_KEY", "weight": 3},
        {"name": "west", "base_url": fakes["west"].base_url,
         "api_key_env": "OPENAI_WEST_API_KEY", "weight": 1}],
        timeouts={"connect": 2, "first_byte": 1, "idle": 1},
        retry={"attempts": 3, "max_retry_after": 2})
    return gateway_factory(work, {
        "TOKMODEL_PROVIDERS": providers,
        "OPENAI_EAST_BASE_URL": fakes["east"].base_url, "OPENAI_EAST_API_KEY": "key-east",
        "OPENAI_WEST_API_KEY": "key-west",
        "ANTHROPIC_BASE_URL": fakes["claude"].base_url, "ANTHROPIC_API_KEY": "key-claude"},
        workers=2)


def client(gw, secret: str, **kw) -> OpenAI:
    """A longer timeout than the shared client's: these tests wait out retries and timeouts."""
    return openai_client(gw, secret, timeout=30, **kw)


def fail_openai(up, status: int, times: int = 1, **kw) -> None:
    """Script `times` failures on each OpenAI deployment."""
    for fake in ("east", "west"):
        for _ in range(times):
            up[fake].fail_next(status, **kw)


def openai_calls(up) -> int:
    return len(up["east"].requests) + len(up["west"].requests)


def test_503_then_200_is_answered_and_charged_once(gw, up):
    account, secret = gw.account(BALANCE)
    fail_openai(up, 503)
    reply = client(gw, secret).chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hello pipeline"
    assert reply.model == OPENAI_MODEL
    assert openai_calls(up) == 2 or openai_calls(up) == 3
    (row,) = usage_rows(gw, account)
    assert row.status == 200 and row.model == OPENAI_MODEL
    u = reply.usage
    assert BALANCE - gw.balance(account) == chat_cost_nano(
        OPENAI_MODEL, u.prompt_tokens, u.completion_tokens) == row.cost_nano


def test_weights_spread_requests_3_to_1(gw, up):
    _, secret = gw.account(BALANCE)
    c = client(gw, secret)
    n = 200
    for _ in range(n):
        c.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, max_tokens=5)
    east, west = len(up["east"].requests), len(up["west"].requests)
    assert east + west == n
    # Five standard deviations of a 3:1 draw either side of 75% (a false failure about once
    # in a million runs); tests/pipeline/test_health.py checks the ratio itself closely.
    assert 0.6 <= east / n <= 0.9, (east, west)


def test_429_retry_after_within_limit_is_waited_for(gw, up):
    account, secret = gw.account(BALANCE)
    fail_openai(up, 429, headers={"Retry-After": "1"})
    reply = client(gw, secret).chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hello pipeline"
    assert [r.status for r in usage_rows(gw, account)] == [200]


def test_fallback_to_claude_when_openai_keeps_failing(gw, up):
    account, secret = gw.account(BALANCE)
    fail_openai(up, 503, times=3)
    reply = client(gw, secret).chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert reply.model == CLAUDE
    assert reply.choices[0].message.content
    assert up["claude"].last.body["model"] == "claude-haiku-4-5"
    assert openai_calls(up) == 3            # three attempts, then the fallback
    (row,) = usage_rows(gw, account)
    assert row.model == CLAUDE and row.provider == "anthropic"
    u = reply.usage
    assert row.cost_nano == chat_cost_nano(CLAUDE, u.prompt_tokens, u.completion_tokens)
    assert BALANCE - gw.balance(account) == row.cost_nano


def test_fallback_streamed_is_priced_as_the_fallback(gw, up):
    account, secret = gw.account(BALANCE)
    fail_openai(up, 500, times=3)
    chunks = list(client(gw, secret).chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    assert {c.model for c in chunks} == {CLAUDE}
    usage = chunks[-1].usage
    (row,) = usage_rows(gw, account)
    assert row.model == CLAUDE
    assert row.cost_nano == chat_cost_nano(CLAUDE, usage.prompt_tokens,
                                             usage.completion_tokens)
    assert BALANCE - gw.balance(account) == row.cost_nano


def test_request_models_field_overrides_and_is_never_forwarded(gw, up):
    _, secret = gw.account(BALANCE)
    fail_openai(up, 502, times=3)
    reply = client(gw, secret).chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES,
        extra_body={"models": ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"]})
    assert reply.model == "anthropic/claude-sonnet-4-5"
    assert all("models" not in r.body for r in up["east"].requests + up["west"].requests)
    assert "models" not in up["claude"].last.body


def test_client_errors_are_never_retried_nor_fall_back(gw, up):
    account, secret = gw.account(BALANCE)
    fail_openai(up, 400)
    with pytest.raises(openai.BadRequestError):
        client(gw, secret).chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert openai_calls(up) == 1 and up["claude"].requests == []
    assert BALANCE == gw.balance(account)


def test_stalled_upstream_is_cut_by_first_byte_and_retried(gw, up):
    account, secret = gw.account(BALANCE)
    for fake in ("east", "west"):
        up[fake].hang_next(5)
    reply = client(gw, secret).chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hello pipeline"
    assert [r.status for r in usage_rows(gw, account)] == [200]


def test_an_answer_broken_off_mid_body_is_retried_and_charged_once(gw, up):
    account, secret = gw.account(BALANCE)
    for fake in ("east", "west"):
        up[fake].cut_body_next()
    reply = client(gw, secret).chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    # nothing had reached the client: the third attempt's answer is the one it gets
    assert reply.choices[0].message.content == "echo: hello pipeline"
    assert openai_calls(up) == 3
    (row,) = usage_rows(gw, account)
    assert row.status == 200
    u = reply.usage
    assert BALANCE - gw.balance(account) == chat_cost_nano(
        OPENAI_MODEL, u.prompt_tokens, u.completion_tokens) == row.cost_nano


def test_drop_mid_stream_is_not_retried_and_charged_for_what_was_produced(gw, up):
    account, secret = gw.account(BALANCE)
    for fake in ("east", "west"):
        up[fake].cut_stream_after(2)
    r = requests.post(f"{gw.base_url}/chat/completions", stream=True, timeout=30,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": OPENAI_MODEL, "stream": True, "messages": [
                          {"role": "user", "content": "one two three four five six"}]})
    text = r.text
    assert r.status_code == 200
    assert '"error"' in text and "[DONE]" not in text
    assert openai_calls(up) == 1
    (row,) = usage_rows(gw, account)
    assert row.status == 502 and row.cost_nano > 0
    assert BALANCE - gw.balance(account) == row.cost_nano


def metric(gw, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these, as /metrics shows them."""
    text = requests.get(f"{gw.url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def test_metrics_count_across_both_workers(gw, up):
    _, secret = gw.account(BALANCE)

    def served() -> float:
        return metric(gw, "tokmodel_requests_total", endpoint="chat", model=OPENAI_MODEL,
                      status="200")

    before = served()
    c = client(gw, secret)
    for _ in range(12):
        c.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, max_tokens=3)
    # a worker counts a request just after its answer has gone (runtime/after_answer.py)
    deadline = time.monotonic() + 5
    while served() != before + 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    readings = {served() for _ in range(6)}     # whichever worker answers
    assert readings == {before + 12}
    text = requests.get(f"{gw.url}/metrics", timeout=10).text
    for name in ("tokmodel_request_duration_seconds_bucket", "tokmodel_upstream_attempts_total",
                 "tokmodel_tokens_total", "tokmodel_cost_credits_total", "tokmodel_open_streams"):
        assert name in text


def test_access_log_line(gw, up):
    _, secret = gw.account(BALANCE)
    raw = client(gw, secret, default_headers={"X-Request-Id": "client-abc"}) \
        .chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=MESSAGES)
    request_id = raw.headers["x-request-id"]
    reply = raw.parse()
    lines = gw.access_lines(request_id)
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == request_id and line["client_request_id"] == "client-abc"
    assert line["endpoint"] == "chat" and line["model"] == OPENAI_MODEL
    assert line["provider"] == "openai" and line["deployment"] in ("east", "west")
    assert line["status"] == 200 and line["attempts"] == 1
    assert line["prompt_tokens"] == reply.usage.prompt_tokens
    assert float(line["cost"]) == reply.usage.model_extra["cost"]
    log = gw.log()
    assert secret not in log and "key-east" not in log and "hello pipeline" not in log


@pytest.fixture(scope="module")
def gw_broken(fakes, gateway_factory, tmp_path_factory):
    """OpenAI with one good deployment and one whose host refuses connections; Mistral
    with a key the provider refuses."""
    work = tmp_path_factory.mktemp("gw-broken")
    providers = catalogue(work / "providers.yaml", [
        {"name": "good", "base_url": fakes["east"].base_url, "api_key_env": "OPENAI_GOOD_KEY"},
        {"name": "gone", "base_url": f"http://127.0.0.1:{free_port()}/v1",
         "api_key_env": "OPENAI_GONE_KEY"},
        {"name": "refused", "base_url": fakes["west"].base_url,
         "api_key_env": "OPENAI_REFUSED_KEY"}],
        cooldown={"failures": 2, "seconds": 600})
    return gateway_factory(work, {
        "TOKMODEL_PROVIDERS": providers, "OPENAI_GOOD_KEY": "key-east",
        "OPENAI_GONE_KEY": "whatever", "OPENAI_REFUSED_KEY": "not-the-key",
        "ANTHROPIC_BASE_URL": fakes["claude"].base_url, "ANTHROPIC_API_KEY": "wrong"},
        workers=2)


def test_failing_deployments_are_cooled_down_and_every_request_answered(gw_broken, up):
    _, secret = gw_broken.account(BALANCE)
    c = client(gw_broken, secret)
    for _ in range(30):
        reply = c.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES,
                                          max_tokens=5)
        assert reply.choices[0].message.content
    # each worker tries the refused deployment until it is cooled down (2 failures)
    assert len(up["west"].requests) <= 4
    assert len(up["east"].requests) == 30
    assert metric(gw_broken, "tokmodel_deployment_up", provider="openai",
                  deployment="gone") == 0
    assert metric(gw_broken, "tokmodel_deployment_up", provider="openai",
                  deployment="good") >= 1
    assert metric(gw_broken, "tokmodel_upstream_attempts_total", provider="openai",
                  deployment="refused", outcome="credentials") >= 1


def test_refused_credentials_everywhere_is_a_502_naming_the_variable(gw_broken, up):
    account, secret = gw_broken.account(BALANCE)
    with pytest.raises(openai.APIStatusError) as err:
        client(gw_broken, secret).chat.completions.create(model=CLAUDE, messages=MESSAGES)
    assert err.value.status_code == 502
    assert "ANTHROPIC_API_KEY" in err.value.body["message"]
    assert "wrong" not in json.dumps(err.value.body)
    assert gw_broken.balance(account) == BALANCE
