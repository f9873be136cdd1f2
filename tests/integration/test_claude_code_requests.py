"""Claude Code's requests through `POST /v1/messages?beta=true`, with its default settings,
to Claude, OpenAI and Gemini models: the official anthropic SDK -> the gateway under
gunicorn -> strict fake upstreams on 127.0.0.1. The catalogue is the repository's plus an
OpenAI and a Gemini model with a reasoning setting (`reasoning: true`).

The request is shaped like Claude Code's: `max_tokens: 64000`, adaptive thinking with
`output_config.effort`, `context_management`, `cache_control` on system blocks, message
blocks and tools, `anthropic-beta` headers, a Bash tool, and a `role: "system"` turn inside
`messages`. Checks that every model answers, what reached each upstream (Anthropic: the body
with the system turn folded into a user-side note; others: no Anthropic-only tuning fields,
the effort as the model's reasoning setting where it has one and dropped where not,
`max_tokens` clamped to the model's limit), the
charge, a tool loop on the OpenAI model, and that a field changing the answer's meaning is
still a 400 naming it.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import START_CREDITS, anthropic_client, charged
from tests.pricing_oracle import chat_cost_nano, per_munit

CLAUDE = "anthropic/claude-sonnet-4-5"
GPT = "openai/gpt-4o"
GEMINI = "google/gemini-2.0-flash"
O4 = "openai/o4-mini"                      # added below, with a reasoning setting
GEMINI_25 = "google/gemini-2.5-flash"      # likewise
MODELS = [CLAUDE, GPT, GEMINI, O4, GEMINI_25]
LIMITS = {CLAUDE: 64000, GPT: 16384, GEMINI: 8192, O4: 32000,
          GEMINI_25: 16000}                # catalogue max_output_tokens
ADDED = {
    O4: {"provider": "openai", "created": 1744761600, "endpoints": ["chat"],
         "context_window": 200000, "max_output_tokens": LIMITS[O4], "reasoning": True,
         "pricing": {"input_per_mtok": 1.10, "cached_input_per_mtok": 0.275,
                     "output_per_mtok": 4.40}},
    GEMINI_25: {"provider": "google", "created": 1750118400, "endpoints": ["chat"],
                "context_window": 1048576, "max_output_tokens": LIMITS[GEMINI_25],
                "reasoning": True,
                "pricing": {"input_per_mtok": 0.30, "cached_input_per_mtok": 0.075,
                            "output_per_mtok": 2.50}}}
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"anthropic": "anthropic-up", "openai": "sk-openai-up", "gemini": "gemini-up"}
BETA = ("claude-code-20250219,interleaved-thinking-2025-05-14,"
        "context-management-2025-06-27,fine-grained-tool-streaming-2025-05-14")
EPHEMERAL = {"type": "ephemeral"}
SYSTEM = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
           "cache_control": EPHEMERAL},
          {"type": "text", "text": "You are an interactive CLI tool that helps users with "
                                   "software engineering tasks.", "cache_control": EPHEMERAL}]
BASH = {"name": "Bash",
        "description": "Executes a given bash command in a persistent shell session.",
        "input_schema": {"type": "object", "additionalProperties": False,
                         "$schema": "http://json-schema.org/draft-07/schema#",
                         "properties": {"command": {"type": "string",
                                                    "description": "The command to execute"},
                                        "timeout": {"type": "number"},
                                        "description": {"type": "string"}},
                         "required": ["command"]},
        "cache_control": EPHEMERAL}
NOTE = "The user switched to plan mode: do not change any file."
CONTEXT_MANAGEMENT = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
TUNING = {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
          "context_management": CONTEXT_MANAGEMENT}


def conversation(last: str = "please list the files here") -> list[dict[str, Any]]:
    """Claude Code's turns: a reminder block, a system turn at messages[1], the cache
    breakpoint on the newest user block."""
    return [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>Today is Thursday.</system-reminder>"},
            {"type": "text", "text": "hello"}]},
        {"role": "system", "content": NOTE},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}]},
        {"role": "user", "content": [{"type": "text", "text": last,
                                      "cache_control": EPHEMERAL}]}]


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(anthropic=FakeAnthropic(api_key=KEYS["anthropic"],
                                               models=("claude-sonnet-4-5",)),
                       openai=FakeOpenAI(api_key=KEYS["openai"],
                                         models=("gpt-4o", "o4-mini")),
                       gemini=FakeGemini(api_key=KEYS["gemini"],
                                         models=("gemini-2.0-flash", "gemini-2.5-flash")))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("gw-claude-code")
    data = yaml.safe_load((ROOT / "providers.yaml").read_text())
    data["models"].update(ADDED)
    (work / "providers.yaml").write_text(yaml.safe_dump(data))
    return gateway_factory(work, {
        "TOKMODEL_PROVIDERS": str(work / "providers.yaml"),
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "ANTHROPIC_API_KEY": KEYS["anthropic"],
        "OPENAI_BASE_URL": fakes["openai"].base_url, "OPENAI_API_KEY": KEYS["openai"],
        "GOOGLE_BASE_URL": fakes["gemini"].base_url, "GOOGLE_API_KEY": KEYS["gemini"]})


@pytest.fixture
def acct(gw):
    account, secret = gw.account(START_CREDITS)
    return account, anthropic_client(gw, secret)


def price(model: str, name: str) -> Decimal:
    table = ADDED[model]["pricing"]
    return Decimal(str(table.get(name, table["input_per_mtok"])))


def cost_nano(model: str, usage: Any) -> int:
    """The charge for `usage`: the shared oracle for catalogue models, the same formula on
    this module's prices for the added ones (nano-credits, rounded up once)."""
    prompt = (usage.input_tokens + (usage.cache_read_input_tokens or 0)
              + (usage.cache_creation_input_tokens or 0))
    cached, written = usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0
    if model not in ADDED:
        return chat_cost_nano(model, prompt, usage.output_tokens, cached, written)
    exact = (price(model, "input_per_mtok") * (prompt - cached - written)
             + price(model, "cached_input_per_mtok") * cached
             + price(model, "cache_write_per_mtok") * written
             + price(model, "output_per_mtok") * usage.output_tokens)
    return per_munit(exact)


def upstream_of(up: dict[str, Any], model: str):
    return up[{"anthropic": "anthropic", "openai": "openai", "google": "gemini"}[
        model.split("/")[0]]]


def ask(client: anthropic.Anthropic, stream: bool, **kwargs: Any) -> Any:
    """One request as Claude Code sends it: beta query, beta header, tuning fields."""
    kwargs = {"max_tokens": 64000, "system": SYSTEM, "tools": [BASH],
              "metadata": {"user_id": "user_0a1b_account__session_42"}, **kwargs}
    extra = {"extra_body": copy.deepcopy(TUNING), "extra_headers": {"anthropic-beta": BETA},
             "extra_query": {"beta": "true"}}
    if not stream:
        return client.messages.create(**kwargs, **extra)
    with client.messages.stream(**kwargs, **extra) as s:
        return s.get_final_message()


def prompt_of(usage: Any) -> int:
    return (usage.input_tokens + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_claude_code_request_is_answered(gw, up, acct, model, stream):
    account, client = acct
    reply = ask(client, stream, model=model, messages=conversation())
    assert reply.model == model and reply.stop_reason == "end_turn"
    assert reply.content[-1].type == "text"
    assert reply.content[-1].text.startswith("echo: please list the files here")

    fake = upstream_of(up, model)
    assert len(fake.requests) == 1
    got = fake.last
    sent = json.dumps(got.body)
    if model == CLAUDE:
        assert got.headers["anthropic-beta"] == BETA
        body = got.body
        assert body["max_tokens"] == 64000
        assert body["thinking"] == {"type": "adaptive"}
        assert body["output_config"] == {"effort": "high"}
        assert body["context_management"] == CONTEXT_MANAGEMENT
        assert body["system"] == SYSTEM and body["tools"] == [BASH]
        # The system turn is a note at the end of the user turn before it; nothing else moved.
        turns = conversation()
        assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][0]["content"] == [
            *turns[0]["content"], {"type": "text", "text": f"<system>\n{NOTE}\n</system>"}]
        assert body["messages"][1:] == turns[2:]
        assert [b.type for b in reply.content] == ["thinking", "text"]
    else:
        assert "anthropic-beta" not in got.headers
        assert "cache_control" not in sent and "context_management" not in sent
        assert "output_config" not in sent and "adaptive" not in sent
    if model in (GPT, O4):
        body = got.body
        if model == O4:
            assert body["reasoning_effort"] == "high"
        else:                                   # gpt-4o has no reasoning setting
            assert "reasoning_effort" not in body
        assert body["max_completion_tokens"] == LIMITS[model]
        assert body["user"] == "user_0a1b_account__session_42"
        assert [m["role"] for m in body["messages"]] == [
            "system", "user", "system", "assistant", "user"]
        assert body["messages"][2] == {"role": "system", "content": NOTE}
        assert body["tools"][0]["function"]["name"] == "Bash"
        assert body["tools"][0]["function"]["parameters"] == BASH["input_schema"]
    if model in (GEMINI, GEMINI_25):
        config = got.body["generationConfig"]
        assert config["maxOutputTokens"] == LIMITS[model]
        if model == GEMINI_25:
            assert config["thinkingConfig"]["thinkingBudget"] == 24576   # effort high
        else:                                   # gemini-2.0-flash cannot think
            assert "thinkingConfig" not in config
        system = " ".join(p["text"] for p in got.body["systemInstruction"]["parts"])
        assert system.startswith("You are Claude Code") and system.endswith(NOTE)
        assert [c["role"] for c in got.body["contents"]] == ["user", "model", "user"]
        assert got.body["tools"][0]["functionDeclarations"][0]["name"] == "Bash"

    cost = cost_nano(model, reply.usage)
    assert cost > 0 and charged(gw, account) == cost
    assert gw.balance(account) == START_CREDITS - cost


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_loop_on_openai_model(gw, up, acct, stream):
    account, client = acct
    question = "what is the weather in Oslo? use Bash"
    first = ask(client, stream, model=GPT, messages=conversation(question))
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "Bash"
    history = [*conversation(question),
               {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                 for b in first.content]},
               # Claude Code may put a system turn between a tool call and its result.
               {"role": "system", "content": "Command output is trusted."},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                             "content": "4 degrees and snow",
                                             "cache_control": EPHEMERAL}]}]
    final = ask(client, stream, model=GPT, messages=history)
    assert final.stop_reason == "end_turn"
    assert final.content[-1].text == "echo: 4 degrees and snow"

    got = up["openai"].last.body
    roles = [m["role"] for m in got["messages"]]
    assert roles == ["system", "user", "system", "assistant", "user", "assistant", "tool",
                     "system"]
    assert got["messages"][5]["tool_calls"][0]["id"] == uses[0].id
    assert got["messages"][6] == {"role": "tool", "tool_call_id": uses[0].id,
                                  "content": "4 degrees and snow"}
    assert got["messages"][7] == {"role": "system", "content": "Command output is trusted."}
    assert got["max_completion_tokens"] == LIMITS[GPT]
    assert charged(gw, account) == sum(
        chat_cost_nano(GPT, prompt_of(m.usage), m.usage.output_tokens) for m in (first, final))


@pytest.mark.parametrize("model", [GPT, GEMINI])
@pytest.mark.parametrize("field", ["mcp_servers", "container"])
def test_field_changing_the_answer_is_still_refused(gw, up, acct, model, field):
    account, client = acct
    value = ([{"type": "url", "url": "https://mcp.example.com/sse", "name": "docs"}]
             if field == "mcp_servers" else "container_abc")
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=model, max_tokens=64000, messages=conversation(),
                               extra_body={**TUNING, field: value},
                               extra_headers={"anthropic-beta": BETA},
                               extra_query={"beta": "true"})
    assert err.value.status_code == 400
    assert field in err.value.body["error"]["message"]
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert upstream_of(up, model).requests == []
    assert charged(gw, account) == 0


def test_system_turn_with_a_non_text_block_is_a_400_for_claude(gw, up, acct):
    _, client = acct
    turns = conversation()
    turns[1] = {"role": "system", "content": [{"type": "image", "source": {
        "type": "url", "url": "https://example.com/a.png"}}]}
    with pytest.raises(anthropic.BadRequestError) as err:
        ask(client, False, model=CLAUDE, messages=turns)
    assert "system turn" in err.value.body["error"]["message"]
    assert up["anthropic"].requests == []
