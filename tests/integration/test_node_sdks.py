"""The official Node SDKs (`openai`, `@anthropic-ai/sdk`, versions pinned in tests/node/package.json
and package-lock.json) against the gateway under gunicorn and the strict fakes, at their default
settings: only the base URL and the key change. Each script in tests/node/ runs its steps with
one account and prints one JSON object; the tests check the answers, what reached the
upstream, and the exact charge (tests/pricing_oracle.py).

`npm ci` runs once per session into tests/node/node_modules (again only when package-lock.json
changed); without node/npm, or when `npm ci` fails (no registry), the module is skipped with
the reason."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.media_stack import media_stack
from tests.fakes.media_upstream import TRANSCRIPT, make_wav, vector_value
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import START_CREDITS, charged, reset_fakes
from tests.node_install import NODE_DIR, npm_ci
from tests.pricing_oracle import chat_cost_nano, credits, per_munit, price, usd

pytestmark = pytest.mark.integration

GPT = "openai/gpt-4o"
CLAUDE = "anthropic/claude-sonnet-4-5"
KEYS = {"openai": "sk-openai-up", "anthropic": "anthropic-up", "responses": "sk-responses-up"}


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """tests/node/node_modules installed from package-lock.json with `npm ci`."""
    return npm_ci(NODE_DIR)


def run_node(script: str, origin: str, key: str, **env: str) -> dict[str, Any]:
    """Runs tests/node/<script> against the gateway; its JSON result."""
    full_env = {**os.environ, "TOKMODEL_URL": origin, "TOKMODEL_KEY": key, **env}
    done = subprocess.run(["node", script], cwd=NODE_DIR, env=full_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"node {script} exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def ok(result: dict[str, Any], step: str) -> dict[str, Any]:
    out = result[step]
    assert "error" not in out, f"{step}: {out['error']}"
    return out


def chat_cost(model: str, usage: dict[str, Any]) -> int:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return chat_cost_nano(model, usage["prompt_tokens"], usage["completion_tokens"],
                           cached=cached)


def responses_cost(usage: dict[str, Any]) -> int:
    return chat_cost_nano(GPT, usage["input_tokens"], usage["output_tokens"],
                           cached=usage["input_tokens_details"]["cached_tokens"])


def messages_cost(usage: dict[str, Any]) -> int:
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    return chat_cost_nano(CLAUDE, usage["input_tokens"] + read + write, usage["output_tokens"],
                           cached=read, cache_write=write)


# -- gateways -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(openai=FakeOpenAI(api_key=KEYS["openai"]),
                       anthropic=FakeAnthropic(api_key=KEYS["anthropic"],
                                               models=("claude-sonnet-4-5",)),
                       responses=FakeResponses(api_key=KEYS["responses"]))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    """Chat completions on the fake OpenAI chat API, Messages on the fake Anthropic API."""
    return gateway_factory("gw-node", {
        "OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": KEYS["openai"],
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": KEYS["anthropic"]})


@pytest.fixture(scope="module")
def gw_responses(fakes, gateway_factory):
    """openai/* on the fake native Responses API."""
    return gateway_factory("gw-node-responses", {
        "OPENAI_BASE_URL": fakes["responses"].base_url, "OPENAI_API_KEY": KEYS["responses"]})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("node-media"))
    yield s
    s.stop()


@pytest.fixture
def up(fakes):
    """The fakes, reset; afterwards no fake saw a request it had to refuse."""
    yield reset_fakes(fakes)
    for fake in fakes.values():
        assert not fake.errors, fake.errors


# -- openai -------------------------------------------------------------------------------------

def test_openai_chat_plain_stream_and_tools(node_sdks, gw, up):
    account, secret = gw.account(START_CREDITS)
    result = run_node("openai_chat.mjs", gw.url, secret)

    plain = ok(result, "plain")
    assert plain["content"] == "echo: hello from node" and plain["model"] == GPT
    assert plain["finish_reason"] == "stop"
    assert plain["usage"]["cost"] == pytest.approx(credits(chat_cost(GPT, plain["usage"])))

    stream = ok(result, "stream")
    assert stream["text"] == "echo: stream these words please"
    assert stream["chunks"] > 2 and stream["finish_reasons"] == ["stop"]
    assert stream["usage"]["prompt_tokens"] == 4 and stream["usage"]["completion_tokens"] == 5
    assert stream["usage"]["cost"] == pytest.approx(credits(chat_cost(GPT, stream["usage"])))

    tools = ok(result, "tools")
    assert tools["finish_reason"] == "tool_calls"
    assert tools["call"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert tools["answer"] == "echo: sunny and 21 degrees"
    # the assistant turn went back upstream as the SDK returned it, answered by the tool message
    sent = up["openai"].last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert len(up["openai"].requests) == 4  # one request per call: no retries

    usages = [plain["usage"], stream["usage"], *tools["usages"]]
    assert charged(gw, account) == sum(chat_cost(GPT, u) for u in usages)


def test_openai_responses_create_and_stream(node_sdks, gw_responses, up):
    account, secret = gw_responses.account(START_CREDITS)
    result = run_node("openai_responses.mjs", gw_responses.url, secret)

    create = ok(result, "create")
    assert create["text"] == "echo: hello from node"
    assert create["model"] == GPT and create["status"] == "completed"
    first = up["responses"].requests[0].body
    assert first["model"] == "gpt-4o" and first["instructions"] == "Be brief."

    stream = ok(result, "stream")
    assert stream["types"][0] == "response.created"
    assert stream["types"][-1] == "response.completed"
    assert stream["deltas"] == stream["text"] == "echo: stream these words please"

    helper = ok(result, "helper")
    assert helper["text"] == "echo: helper check"

    usages = [create["usage"], stream["usage"], helper["usage"]]
    for usage in usages:
        assert usage["cost"] == pytest.approx(credits(responses_cost(usage)))
    assert charged(gw_responses, account) == sum(responses_cost(u) for u in usages)


def test_openai_embeddings_default_base64(node_sdks, stack):
    stack.reset()
    account, secret = stack.gateway.account(START_CREDITS)
    out = ok(run_node("openai_embeddings.mjs", stack.gateway.url, secret), "embeddings")
    embeddings = [r for r in stack.openai.requests if r.path == "/v1/embeddings"]
    assert len(embeddings) == 1
    assert embeddings[0].body == {"model": "text-embedding-3-small",
                                  "input": ["first text", "second one here"],
                                  "encoding_format": "base64"}
    assert out["model"] == "openai/text-embedding-3-small"
    assert out["count"] == 2 and out["dims"] == [1536, 1536]
    for i in range(2):
        assert out["head"][i] == pytest.approx([vector_value(i, j) for j in range(3)],
                                               rel=1e-6)
    cost = per_munit(out["usage"]["prompt_tokens"]
                     * price("openai/text-embedding-3-small", "input_per_mtok"))
    assert out["usage"]["prompt_tokens"] == 5
    assert out["usage"]["cost"] == cost / 1_000_000_000
    assert charged(stack.gateway, account) == cost


def test_openai_transcription_from_read_stream(node_sdks, stack, tmp_path):
    stack.reset()
    account, secret = stack.gateway.account(START_CREDITS)
    wav = tmp_path / "clip.wav"
    wav.write_bytes(make_wav(3.5))
    result = run_node("openai_transcription.mjs", stack.gateway.url, secret,
                      AUDIO_FILE=str(wav))
    out = result["transcription"]
    # the SDK streams the multipart body: Transfer-Encoding: chunked, no Content-Length
    assert "error" not in out, f"transcription: {out['error']}"
    assert out["text"] == TRANSCRIPT
    sent = [r for r in stack.openai.requests if r.path == "/v1/audio/transcriptions"]
    assert len(sent) == 1
    assert [(f.name, f.filename, f.data) for f in sent[0].files()] == [
        ("file", "clip.wav", wav.read_bytes())]
    cost = usd(Decimal("3.5") * price("openai/whisper-1", "per_audio_second"))
    assert out["usage"]["cost"] == cost / 1_000_000_000
    assert charged(stack.gateway, account) == cost


# -- anthropic ----------------------------------------------------------------------------------

def test_anthropic_messages_plain_stream_and_tools(node_sdks, gw, up):
    account, secret = gw.account(START_CREDITS)
    result = run_node("anthropic_messages.mjs", gw.url, secret)

    plain = ok(result, "plain")
    assert [(b["type"], b["text"]) for b in plain["content"]] == [
        ("text", "echo: hello from node")]
    assert plain["model"] == CLAUDE and plain["stop_reason"] == "end_turn"
    first = up["anthropic"].requests[0]
    assert first.body["model"] == "claude-sonnet-4-5" and first.body["system"] == "Be brief."
    assert first.headers["x-api-key"] == KEYS["anthropic"]

    stream = ok(result, "stream")
    assert len(stream["pieces"]) > 1
    assert "".join(stream["pieces"]) == stream["text"] == "echo: stream these five words"
    assert stream["stop_reason"] == "end_turn"

    tools = ok(result, "tools")
    assert tools["stop_reason"] == "tool_use"
    assert tools["call"] == {"name": "get_weather", "input": {"city": "Oslo"}}
    assert tools["answer"] == "echo: sunny and 21 degrees"
    assert len(up["anthropic"].requests) == 4

    usages = [plain["usage"], stream["usage"], *tools["usages"]]
    for usage in (plain["usage"], *tools["usages"]):
        assert usage["cost"] == credits(messages_cost(usage))
    assert charged(gw, account) == sum(messages_cost(u) for u in usages)
