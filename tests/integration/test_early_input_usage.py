"""A chat or Responses client streaming from Claude that leaves early pays Anthropic's exact
input count from message_start, not an estimate, on the real gateway under gunicorn with the
strict Anthropic fake; what the client sees of the stream is unchanged."""

from __future__ import annotations

import json

import pytest
import requests

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.integration.test_no_free_tokens import leave_after_events, settled_row
from tests.pricing_oracle import chat_cost_nano

pytestmark = pytest.mark.integration

CLAUDE = "anthropic/claude-sonnet-4-5"
START = 5_000_000_000
SYSTEM = "be brief"
WORDS = "one two three four five six seven eight nine ten"
# the fake's message_start input: the words of the system prompt and the messages
INPUT = 12


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(anthropic=FakeAnthropic(api_key="anthropic-up"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-early-input", {
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": "anthropic-up"})


@pytest.fixture
def slow(up):
    up["anthropic"].chunk_delay = 0.3
    yield up
    up["anthropic"].chunk_delay = 0.0


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


BODIES = {
    "/v1/chat/completions": {"model": CLAUDE, "stream": True, "max_tokens": 200,
                             "messages": [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": WORDS}]},
    "/v1/responses": {"model": CLAUDE, "stream": True, "max_output_tokens": 200,
                      "instructions": SYSTEM, "input": WORDS},
}


@pytest.mark.parametrize("path", list(BODIES))
def test_left_after_the_first_chunk_pays_message_start_input_exactly(gw, slow, path):
    account, secret = gw.account(START)
    leave_after_events(gw, path, auth(secret), BODIES[path], events=1)
    row = settled_row(gw, account)
    assert row.status == 499
    # message_start's input exactly (an estimate from the request's JSON would be larger);
    # the output is what was counted (the fake's placeholder 1) or produced, if more
    assert row.prompt_tokens == INPUT
    assert row.completion_tokens >= 1
    assert row.cost_nano == chat_cost_nano(CLAUDE, INPUT, row.completion_tokens)
    assert START - gw.balance(account) == row.cost_nano


def test_chat_chunks_carry_nothing_for_the_meter(gw, up):
    account, secret = gw.account(START)
    resp = requests.post(gw.url + "/v1/chat/completions", headers=auth(secret), timeout=20,
                         json={**BODIES["/v1/chat/completions"],
                               "stream_options": {"include_usage": True}})
    assert resp.status_code == 200
    chunks = [json.loads(line[6:]) for line in resp.text.splitlines()
              if line.startswith("data: {")]
    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert set(first) == {"id", "object", "created", "model", "system_fingerprint",
                          "choices", "usage"}
    assert first["usage"] is None
    assert all(set(c) <= set(first) | {"service_tier"} for c in chunks)
    assert chunks[-1]["usage"]["prompt_tokens"] == INPUT
