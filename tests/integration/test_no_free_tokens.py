"""No free tokens, with hostile clients, on the real gateway under gunicorn and strict fakes.

Once the provider accepted a request (a success status), its prompt is charged, even when
the client leaves before any text: from the provider's usage when it arrived (Anthropic's
message_start), else from an estimate of the whole request, tools and system prompt
included. A request the provider refused stays free. Holds count what a request pulls in:
images by URL and hosted web searches (the stored conversation of `previous_response_id`:
tests/integration/test_stored_responses.py)."""

from __future__ import annotations

import http.client
import json
import math
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import usage_rows
from tests.pricing_oracle import chat_cost_nano

pytestmark = pytest.mark.integration

GPT = "openai/gpt-4o"
CLAUDE = "anthropic/claude-sonnet-4-5"
START = 5_000_000_000
TEXT = "please tell me a long story about the sea and the ships"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(openai=FakeOpenAI(api_key="sk-up"),
                       anthropic=FakeAnthropic(api_key="anthropic-up"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-no-free-tokens", {
        "OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": "sk-up",
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": "anthropic-up"}, workers=2)


@pytest.fixture
def slow(up):
    """The fakes stream an event every 0.3 s, so a client can leave mid-stream."""
    for fake in up.values():
        fake.chunk_delay = 0.3
    yield up
    for fake in up.values():
        fake.chunk_delay = 0.0
    up["openai"].empty_deltas = 0


def auth(secret: str, anthropic: bool = False) -> dict[str, str]:
    if anthropic:
        return {"x-api-key": secret, "anthropic-version": "2023-06-01",
                "Content-Type": "application/json"}
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def leave_after_headers(gw, path: str, headers: dict[str, str], body: dict) -> None:
    """Send a request, read the status line and headers, and hang up."""
    url = urlsplit(gw.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    conn.request("POST", path, json.dumps(body).encode(), headers)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    conn.close()


def leave_after_events(gw, path: str, headers: dict[str, str], body: dict,
                       events: int = 3) -> None:
    """Send a streaming request, read `events` SSE data lines, and hang up."""
    resp = requests.post(gw.url + path, data=json.dumps(body), headers=headers, stream=True,
                         timeout=20)
    assert resp.status_code == 200
    lines = (line for line in resp.iter_lines() if line.startswith(b"data: "))
    for _ in range(events):
        next(lines)
    resp.close()


def settled_row(gw, account: int):
    """The account's one usage row, once the gateway noticed the client left."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = usage_rows(gw, account)
        if rows:
            (row,) = rows
            return row
        time.sleep(0.1)
    raise AssertionError("the abandoned request was never settled")


def estimate(chars: int) -> int:
    """The gateway's documented estimate: 4 characters a token."""
    return math.ceil(chars / 4)


# -- the client leaves before any text ---------------------------------------------------------

def test_anthropic_stream_left_after_headers_pays_message_start_input(gw, slow):
    account, secret = gw.account(START)
    words = "one two three four five six seven eight nine ten"
    leave_after_headers(gw, "/v1/messages", auth(secret, anthropic=True), {
        "model": CLAUDE, "max_tokens": 200, "stream": True, "system": "be brief",
        "messages": [{"role": "user", "content": words}]})
    row = settled_row(gw, account)
    assert row.status == 499
    # the fake's message_start: input = words of the system prompt and the messages (12),
    # output the placeholder 1; the client left before the first text delta
    assert (row.prompt_tokens, row.completion_tokens) == (12, 1)
    assert row.cost_nano == chat_cost_nano(CLAUDE, 12, 1) > 0
    assert START - gw.balance(account) == row.cost_nano


def test_openai_stream_left_after_headers_pays_the_estimated_prompt(gw, slow):
    # the upstream streams empty deltas before its text (as a thinking model does): the
    # gateway notices the client is gone while nothing has been produced
    slow["openai"].empty_deltas = 6
    account, secret = gw.account(START)
    system = "You are a careful assistant who answers in full sentences."
    leave_after_headers(gw, "/v1/chat/completions", auth(secret), {
        "model": GPT, "stream": True, "max_tokens": 100,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": TEXT}]})
    row = settled_row(gw, account)
    assert row.status == 499
    # the whole request: the keys "role" and "content" of both messages, both roles, both
    # texts; no usage ever came, nothing was produced
    prompt = estimate(2 * len("rolecontent") + len("system") + len("user") + len(system)
                      + len(TEXT))
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, 0)
    assert row.cost_nano == chat_cost_nano(GPT, prompt, 0) > 0
    assert START - gw.balance(account) == row.cost_nano


@pytest.mark.parametrize("path, model", [("/v1/chat/completions", GPT),
                                         ("/v1/messages", CLAUDE)])
def test_upstream_refusal_before_success_stays_free(gw, up, path, model):
    account, secret = gw.account(START)
    anthropic = path == "/v1/messages"
    up["anthropic" if anthropic else "openai"].fail_next(400)
    body = {"model": model, "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": TEXT}]}
    resp = requests.post(gw.url + path, json=body, headers=auth(secret, anthropic), timeout=20)
    assert resp.status_code == 400
    assert [r.cost_nano for r in usage_rows(gw, account)] == [0]
    assert gw.balance(account) == START


# -- an abandoned stream pays its whole prompt -------------------------------------------------

BIG = "lookup " * 58_000            # a 406 kB tool description
SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}},
          "required": ["query"]}


def big_tool_request(path: str) -> tuple[dict, dict]:
    """(body, the tool definition as sent) for each client format."""
    if path == "/v1/chat/completions":
        tool = {"type": "function", "function": {"name": "lookup", "description": BIG,
                                                 "parameters": SCHEMA}}
        return {"model": GPT, "stream": True, "max_tokens": 100, "tools": [tool],
                "messages": [{"role": "user", "content": TEXT}]}, tool
    if path == "/v1/messages":
        tool = {"name": "lookup", "description": BIG, "input_schema": SCHEMA}
        return {"model": GPT, "stream": True, "max_tokens": 100, "tools": [tool],
                "messages": [{"role": "user", "content": TEXT}]}, tool
    tool = {"type": "function", "name": "lookup", "description": BIG, "parameters": SCHEMA}
    return {"model": CLAUDE, "stream": True, "max_output_tokens": 100, "tools": [tool],
            "input": TEXT}, tool


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_stream_abandoned_with_a_400_kb_tool_pays_the_tool(gw, slow, path):
    account, secret = gw.account(START)
    body, tool = big_tool_request(path)
    assert len(json.dumps(tool)) > 400_000
    leave_after_events(gw, path, auth(secret, anthropic=path == "/v1/messages"), body)
    row = settled_row(gw, account)
    assert row.status == 499
    model = body["model"]
    if model == CLAUDE:
        # Anthropic's own input count from message_start, which includes the tool (the
        # fake's: a token per word, 58,000 for the description)
        (counted,) = [u["input_tokens"] for u in slow["anthropic"].usages]
        assert row.prompt_tokens == counted > len(BIG.split())
        tool_tokens = len(BIG.split())
    else:
        # at least the tool's description at 4 characters a token (the old estimate, from
        # the message text alone, was 14 tokens)
        tool_tokens = estimate(len(BIG))
        assert row.prompt_tokens >= tool_tokens
    assert row.cost_nano >= chat_cost_nano(model, tool_tokens, 0)
    assert START - gw.balance(account) == row.cost_nano


# -- holds count what the request pulls in ------------------------------------------------------

IMAGE = "https://example.com/photo-{}.png"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_images_by_url_raise_the_hold(gw, up, path):
    # 40,000,000 nano-credits cover the text and its 16 output tokens many times over, but not
    # four images at the per-image estimate (at least 6,000 tokens each)
    account, secret = gw.account(40_000_000)
    anthropic = path == "/v1/messages"
    model = CLAUDE if anthropic else GPT
    if anthropic:
        images = [{"type": "image", "source": {"type": "url", "url": IMAGE.format(i)}}
                  for i in range(4)]
    else:
        images = [{"type": "image_url", "image_url": {"url": IMAGE.format(i)}}
                  for i in range(4)]
    fake = up["anthropic" if anthropic else "openai"]
    text_only = {"model": model, "max_tokens": 16,
                 "messages": [{"role": "user", "content": [{"type": "text", "text": TEXT}]}]}
    with_images = {**text_only, "messages": [
        {"role": "user", "content": [{"type": "text", "text": TEXT}, *images]}]}
    refused = requests.post(gw.url + path, json=with_images, headers=auth(secret, anthropic),
                            timeout=20)
    assert refused.status_code == 403, refused.text
    assert fake.requests == []
    assert gw.balance(account) == 40_000_000
    answered = requests.post(gw.url + path, json=text_only, headers=auth(secret, anthropic),
                             timeout=20)
    assert answered.status_code == 200, answered.text


def test_hosted_web_searches_raise_the_hold(gw, up):
    # Claude's web search costs $10 per 1,000 searches (the catalogue's per_web_search); a
    # request that allows it without a limit is held for 5: 50,000,000 nano-credits, more
    # than this account has, although it covers the text many times over
    account, secret = gw.account(40_000_000)
    body = {"model": CLAUDE, "max_tokens": 16,
            "messages": [{"role": "user", "content": TEXT}]}
    refused = requests.post(gw.url + "/v1/chat/completions",
                            json={**body, "web_search_options": {}}, headers=auth(secret),
                            timeout=20)
    assert refused.status_code == 403, refused.text
    assert up["anthropic"].requests == []
    answered = requests.post(gw.url + "/v1/chat/completions", json=body, headers=auth(secret),
                             timeout=20)
    assert answered.status_code == 200, answered.text


# -- answers without usage ------------------------------------------------------------------

@pytest.fixture
def no_usage(up):
    up["openai"].omit_usage = True
    yield up
    up["openai"].omit_usage = False


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_upstream_that_never_reports_usage_is_charged_the_estimate(gw, no_usage, path,
                                                                      stream):
    account, secret = gw.account(START)
    anthropic = path == "/v1/messages"
    system = "s" * 4_000
    body = {"model": GPT, "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": TEXT}]}
    if anthropic:
        body["system"] = system
    else:
        body["messages"].insert(0, {"role": "system", "content": system})
    resp = requests.post(gw.url + path, json=body, headers=auth(secret, anthropic),
                         timeout=20)
    assert resp.status_code == 200, resp.text
    assert "please" in resp.text
    (row,) = usage_rows(gw, account)
    # the system prompt alone is 1,000 tokens at 4 characters a token; the answer's words
    # are estimated from their text
    assert row.status == 200
    assert 1_000 < row.prompt_tokens < 1_100
    assert row.completion_tokens == estimate(len("echo: " + TEXT))
    assert row.cost_nano == chat_cost_nano(GPT, row.prompt_tokens, row.completion_tokens)
    assert START - gw.balance(account) == row.cost_nano
