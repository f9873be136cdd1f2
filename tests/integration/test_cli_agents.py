"""Coding-agent CLIs at their default settings against the gateway, both pinned in
tests/node/cli/package-lock.json and run non-interactively: Claude Code
(`@anthropic-ai/claude-code`, `claude -p ... --output-format json`, with only ANTHROPIC_BASE_URL
and ANTHROPIC_AUTH_TOKEN pointing it at the gateway) in front of the strict fake Anthropic API,
and the Codex CLI (`@openai/codex`, `codex exec --json`, with a config.toml custom provider:
base_url the gateway's /v1, wire_api "responses", the key from an env variable) in front of the
strict fake Responses API. A recording proxy between the CLI and the gateway keeps what the CLI
sent; the tests check its result and the exact charge.

What Claude Code 2.1.332 sends: only `POST /v1/messages?beta=true` (no HEAD or GET first), with
`Authorization: Bearer <key>`, `anthropic-version`, `anthropic-beta: claude-code-20250219,
interleaved-thinking-..., context-management-..., advanced-tool-use-..., effort-...`, `x-app: cli`,
and a body with `model`, `system` (blocks with cache_control), `messages`, `tools` (some with
`defer_loading`), `metadata.user_id`, `max_tokens` (128000), `thinking` (adaptive),
`context_management`, `output_config.effort`, `stream: true`. A 400 naming a beta field makes it
retry without that field (and its beta header).

What Codex 0.171.0 sends: only `POST /v1/responses` (accept: text/event-stream, originator:
codex_exec, x-codex-* and session-id/thread-id headers) with `model`, `input` (developer and
user messages), `tools` (function tools and a `web_search` tool), `tool_choice` auto,
`parallel_tool_calls`, `reasoning: {"summary": "auto"}`, `store: false`,
`include: ["reasoning.encrypted_content"]`, `prompt_cache_key`, `client_metadata` (session,
turn and installation ids) and `stream: true`; with `model_reasoning_effort` set,
`reasoning.effort` too. Its shell tool is the function `exec_command` (`{"cmd": "<command>"}`);
`codex exec` runs it in its default read-only sandbox without asking, and sends the output
back as a `function_call_output` item, after the answer's reasoning item and function call.

Both CLIs' tool loops are driven by the fakes: a `run: <command>` line in the last user text
is answered with a call of the declared shell tool, a `search: <query>` line with a call of
Claude Code's WebSearch tool (tests/fakes/shell_call.py). Claude Code's
Messages requests reach OpenAI models through OpenAI chat, so that case runs on a second
gateway whose OpenAI is the strict chat fake."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.http_fake import Received, Reply
from tests.fakes.recording_proxy import RecordingProxy
from tests.fakes.responses_upstream import FakeResponses
from tests.harness import START_CREDITS, charged, usage_rows
from tests.node_install import NODE_DIR, npm_ci
from tests.pricing_oracle import chat_cost_nano

pytestmark = pytest.mark.integration

CLI_DIR = NODE_DIR / "cli"
CLAUDE = "anthropic/claude-sonnet-4-5"
GPT = "openai/gpt-4o"
UPSTREAM_KEY = "anthropic-up"
OPENAI_KEY = "sk-openai-up"
GEMINI = "google/gemini-2.0-flash"
GEMINI_KEY = "gemini-up"


class CodexUpstream(FakeResponses):
    """The strict fake Responses API; with `accept_client_metadata` it takes (and ignores) the
    `client_metadata` field Codex sends, which the strict fake does not know."""

    accept_client_metadata = False

    def create(self, req: Received) -> Reply:
        if (self.accept_client_metadata and isinstance(req.body, dict)
                and "client_metadata" in req.body):
            req = dataclasses.replace(req, body={k: v for k, v in req.body.items()
                                                 if k != "client_metadata"})
        return super().create(req)


@pytest.fixture(scope="session")
def cli_agents() -> Path:
    """tests/node/cli/node_modules installed from its package-lock.json with `npm ci`."""
    return npm_ci(CLI_DIR)


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(anthropic=FakeAnthropic(api_key=UPSTREAM_KEY),
                       openai=CodexUpstream(api_key=OPENAI_KEY),
                       gemini=FakeGemini(api_key=GEMINI_KEY),
                       openai_chat=FakeOpenAI(api_key=OPENAI_KEY))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-cli", {"ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
                                      "ANTHROPIC_API_KEY": UPSTREAM_KEY,
                                      "OPENAI_BASE_URL": fakes["openai"].base_url,
                                      "OPENAI_API_KEY": OPENAI_KEY,
                                      "GOOGLE_BASE_URL": fakes["gemini"].base_url,
                                      "GOOGLE_API_KEY": GEMINI_KEY})


@pytest.fixture(scope="module")
def gw_chat(fakes, gateway_factory):
    """A gateway whose OpenAI is the strict fake of OpenAI's chat completions (Claude Code's
    Messages requests reach OpenAI models through chat; the module's own OpenAI fake serves
    only the Responses API)."""
    return gateway_factory("gw-cli-chat", {"OPENAI_BASE_URL": fakes["openai_chat"].base_url,
                                           "OPENAI_API_KEY": OPENAI_KEY}, workers=1)


@pytest.fixture
def proxy(gw, up):
    p = RecordingProxy(gw.url).start()
    yield p
    p.stop()


@pytest.fixture
def proxy_to(request, up):
    """proxy_to(upstream) -> (gateway, recording proxy in front of it): `gw_chat` for the
    chat fake "openai_chat", else `gw`."""
    started: list[RecordingProxy] = []

    def start(upstream: str):
        gateway = request.getfixturevalue("gw_chat" if upstream == "openai_chat" else "gw")
        started.append(RecordingProxy(gateway.url).start())
        return gateway, started[-1]

    yield start
    for p in started:
        p.stop()


def run_claude(cli: Path, proxy: RecordingProxy, key: str, home: Path, *args: str,
               prompt: str = "say hi", **env: str) -> tuple[int, dict[str, Any] | None, str]:
    """`claude -p "say hi" --output-format json` against the proxy: (exit code, the JSON result
    or None, stderr)."""
    home.mkdir(parents=True, exist_ok=True)
    full_env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
                "ANTHROPIC_AUTH_TOKEN": key, "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                **env}
    done = subprocess.run([str(cli / "node_modules" / ".bin" / "claude"), "-p", prompt,
                           "--output-format", "json", *args], cwd=home, env=full_env,
                          capture_output=True, text=True, timeout=120)
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    return done.returncode, result, done.stderr


def answers(proxy: RecordingProxy) -> list[tuple[int, str]]:
    return [(status, body.decode(errors="replace")) for status, body in proxy.answers]


def test_claude_code_with_a_gateway_model_id(cli_agents, gw, up, proxy, tmp_path):
    """ANTHROPIC_MODEL=anthropic/claude-sonnet-4-5: the run succeeds and is charged exactly."""
    account, secret = gw.account(START_CREDITS)
    code, result, stderr = run_claude(cli_agents, proxy, secret, tmp_path / "home",
                                      ANTHROPIC_MODEL=CLAUDE)
    assert code == 0 and result is not None, (stderr, answers(proxy))
    assert result["is_error"] is False and result["result"].startswith("echo: ")

    assert proxy.requests, "Claude Code sent nothing"
    for sent in proxy.requests:
        assert (sent.method, sent.path, sent.query) == ("POST", "/v1/messages", "beta=true")
        assert sent.headers["Authorization"] == f"Bearer {secret}"
        assert sent.body["model"] == CLAUDE and sent.body["stream"] is True
        assert "claude-code-20250219" in sent.headers["anthropic-beta"]
    # upstream: the gateway's own key, the model id without its prefix, the betas forwarded
    for got, sent in zip(up["anthropic"].requests, proxy.requests, strict=True):
        assert got.headers["x-api-key"] == UPSTREAM_KEY and "Authorization" not in got.headers
        assert got.body == {**sent.body, "model": "claude-sonnet-4-5"}
        assert got.headers["anthropic-beta"] == sent.headers["anthropic-beta"]
    # Claude Code's beta fields the strict fake refuses (the real API takes them with their
    # beta headers): the CLI retries without them. Any other refusal is a failure.
    statuses = answers(proxy)
    assert statuses[-1][0] == 200
    for status, body in statuses:
        if status != 200:
            assert status == 400 and ("context_management" in body
                                      or "defer_loading" in body), body

    usage = result["modelUsage"][CLAUDE]
    cost = chat_cost_nano(CLAUDE, usage["inputTokens"] + usage["cacheReadInputTokens"]
                           + usage["cacheCreationInputTokens"], usage["outputTokens"],
                           cached=usage["cacheReadInputTokens"],
                           cache_write=usage["cacheCreationInputTokens"])
    assert list(result["modelUsage"]) == [CLAUDE]
    assert cost > 0 and charged(gw, account) == cost


def test_claude_code_default_settings(cli_agents, gw, up, proxy, tmp_path):
    """No ANTHROPIC_MODEL: Claude Code picks its own default model id (unprefixed)."""
    account, secret = gw.account(START_CREDITS)
    code, result, stderr = run_claude(cli_agents, proxy, secret, tmp_path / "home")
    assert code == 0 and result is not None, (stderr, answers(proxy))
    assert result["is_error"] is False and result["result"].startswith("echo: ")
    assert charged(gw, account) > 0


@pytest.mark.parametrize("model, upstream", [(GEMINI, "gemini"), (GPT, "openai_chat")])
def test_claude_code_on_other_providers(cli_agents, up, proxy_to, tmp_path, model, upstream):
    """ANTHROPIC_MODEL and the small model on Gemini or OpenAI: Claude Code's Anthropic-format
    requests (system turns, thinking, context management, cache_control, beta headers) are
    translated and answered; nothing reaches Anthropic."""
    gw, proxy = proxy_to(upstream)
    account, secret = gw.account(START_CREDITS)
    code, result, stderr = run_claude(cli_agents, proxy, secret, tmp_path / "home",
                                      ANTHROPIC_MODEL=model,
                                      ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
                                      ANTHROPIC_SMALL_FAST_MODEL=model)
    assert code == 0 and result is not None, (stderr, answers(proxy))
    assert result["is_error"] is False and result["result"].startswith("echo: ")
    assert all(status == 200 for status, _ in answers(proxy)), answers(proxy)
    assert up["anthropic"].requests == [] and up[upstream].requests
    for got in up[upstream].requests:
        assert "context_management" not in got.body and "cache_control" not in json.dumps(
            got.body)
    assert charged(gw, account) > 0


@pytest.mark.parametrize("model, upstream", [(CLAUDE, "anthropic"), (GEMINI, "gemini"),
                                             (GPT, "openai_chat")])
def test_claude_code_bash_tool_loop(cli_agents, up, proxy_to, tmp_path, model, upstream):
    """The model asks for the Bash tool, Claude Code runs the command, sends its output back,
    and the final answer carries it: a whole tool loop, on Claude and translated to Gemini
    and to OpenAI chat. Gemini issues thought signatures and refuses the second step without
    the one it issued, as Gemini 3 does: it gets it back from the thinking block Claude Code
    kept."""
    gw, proxy = proxy_to(upstream)
    up["gemini"].signatures = upstream == "gemini"
    account, secret = gw.account(START_CREDITS)
    code, result, stderr = run_claude(cli_agents, proxy, secret, tmp_path / "home",
                                      "--allowedTools", "Bash",
                                      prompt="run: printf tokmodel-%s 42",
                                      ANTHROPIC_MODEL=model,
                                      ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
                                      ANTHROPIC_SMALL_FAST_MODEL=model)
    assert code == 0 and result is not None, (stderr, answers(proxy))
    assert result["is_error"] is False, result
    assert "tokmodel-42" in result["result"]
    assert up[upstream].requests and charged(gw, account) > 0
    if upstream != "anthropic":
        assert up["anthropic"].requests == []
    if upstream == "gemini":
        # the Bash call went back with its signature, which came to Claude Code in a
        # thinking block that it sent back as it was
        sent = up[upstream].last.body["contents"]
        (step,) = [c["parts"] for c in sent if c["role"] == "model"
                   and any("functionCall" in p for p in c["parts"])]
        assert step[0]["functionCall"]["name"] == "Bash"
        assert step[0]["thoughtSignature"] in up["gemini"].issued_signatures
        assert "tokmodel-42" in json.dumps(sent[-1]["parts"])
        back = [r.body for r in proxy.requests if len(r.body["messages"]) > 1][-1]
        kept = [b for m in back["messages"] if m["role"] == "assistant"
                and isinstance(m["content"], list) for b in m["content"]]
        assert [b["type"] for b in kept][-2:] == ["thinking", "tool_use"]
    if upstream == "openai_chat":
        # the Bash call went out as a chat tool call and its output came back as a tool message
        sent = up[upstream].last.body["messages"]
        assert sent[-2]["tool_calls"][0]["function"]["name"] == "Bash"
        assert sent[-1]["role"] == "tool" and "tokmodel-42" in json.dumps(sent[-1]["content"])


# -- Codex --------------------------------------------------------------------------------------

def run_codex(cli: Path, proxy: RecordingProxy, key: str, home: Path, model: str = GPT,
              prompt: str = "say hi", settings: str = "", resume: bool = False
              ) -> tuple[int, list[dict[str, Any]], str]:
    """`codex exec --json <prompt>` with a custom provider on the proxy (`settings`: more
    top-level config.toml lines; `resume`: the next turn of the newest session, `codex exec
    resume --last`): (exit code, the JSON events it printed, stderr)."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(f"""\
model = "{model}"
model_provider = "tokmodel"
{settings}

[model_providers.tokmodel]
name = "TokModel"
base_url = "{proxy.url}/v1"
env_key = "TOKMODEL_API_KEY"
wire_api = "responses"
""")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(codex_home),
           "TOKMODEL_API_KEY": key}
    command = ["exec", "resume", "--last"] if resume else ["exec"]
    done = subprocess.run([str(cli / "node_modules" / ".bin" / "codex"), *command,
                           "--skip-git-repo-check", "--json", prompt], cwd=home, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    events = []
    for line in done.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return done.returncode, events, done.stderr


def check_codex_run(gw, up, proxy: RecordingProxy, account: int, secret: str, code: int,
                    events: list[dict[str, Any]], stderr: str) -> None:
    assert code == 0, (stderr, events, answers(proxy))
    messages = [e["item"]["text"] for e in events if e.get("type") == "item.completed"
                and e["item"].get("type") == "agent_message"]
    assert messages == ["echo: say hi"]
    for sent in proxy.requests:
        assert (sent.method, sent.path) == ("POST", "/v1/responses")
        assert sent.headers["Authorization"] == f"Bearer {secret}"
        assert sent.body["model"] == GPT and sent.body["stream"] is True
    for got, sent in zip(up["openai"].requests, proxy.requests, strict=True):
        assert got.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
        # client_metadata only tunes Codex's own telemetry: OpenAI refuses it, never forwarded
        assert "client_metadata" in sent.body and "client_metadata" not in got.body
        assert got.body == {k: v for k, v in {**sent.body, "model": "gpt-4o"}.items()
                            if k != "client_metadata"}
    usages = [e["usage"] for e in events if e.get("type") == "turn.completed"]
    assert len(usages) == 1
    usage = usages[0]
    cost = chat_cost_nano(GPT, usage["input_tokens"], usage["output_tokens"],
                           cached=usage["cached_input_tokens"])
    assert cost > 0 and charged(gw, account) == cost


def test_codex_exec_default_settings(cli_agents, gw, up, proxy, tmp_path):
    up["openai"].accept_client_metadata = False
    account, secret = gw.account(START_CREDITS)
    code, events, stderr = run_codex(cli_agents, proxy, secret, tmp_path / "home")
    check_codex_run(gw, up, proxy, account, secret, code, events, stderr)


def test_codex_exec_with_an_upstream_taking_client_metadata(cli_agents, gw, up, proxy,
                                                             tmp_path):
    up["openai"].accept_client_metadata = True
    try:
        account, secret = gw.account(START_CREDITS)
        code, events, stderr = run_codex(cli_agents, proxy, secret, tmp_path / "home")
        check_codex_run(gw, up, proxy, account, secret, code, events, stderr)
    finally:
        up["openai"].accept_client_metadata = False


@pytest.mark.parametrize("model, upstream", [(CLAUDE, "anthropic"), (GEMINI, "gemini")])
def test_codex_exec_on_other_providers(cli_agents, gw, up, proxy, tmp_path, model, upstream):
    """Codex's default request (namespace and web_search tools, reasoning, include, store,
    client_metadata, prompt_cache_key) translated for Claude and Gemini models."""
    account, secret = gw.account(START_CREDITS)
    code, events, stderr = run_codex(cli_agents, proxy, secret, tmp_path / "home", model)
    assert code == 0, (stderr, events, answers(proxy))
    messages = [e["item"]["text"] for e in events if e.get("type") == "item.completed"
                and e["item"].get("type") == "agent_message"]
    assert messages and messages[-1].startswith("echo: ")
    assert all(status == 200 for status, _ in answers(proxy)), answers(proxy)
    assert up[upstream].requests and up["openai"].requests == []
    assert charged(gw, account) > 0


# What the upstream's own usage of one answer costs on `model` (prompt, completion, cached,
# cache writes in each provider's names).
def upstream_cost(model: str, upstream: str, usage: dict[str, Any]) -> int:
    if upstream == "openai":
        return chat_cost_nano(model, usage["input_tokens"], usage["output_tokens"],
                               cached=usage["input_tokens_details"]["cached_tokens"])
    if upstream == "anthropic":
        read, write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
        return chat_cost_nano(model, usage["input_tokens"] + read + write,
                               usage["output_tokens"], cached=read, cache_write=write)
    return chat_cost_nano(model, usage["promptTokenCount"],
                           usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0),
                           cached=usage.get("cachedContentTokenCount", 0))


def tool_output_sent(upstream: str, body: dict[str, Any]) -> str:
    """The latest shell command's output as an upstream request carries it, in that
    provider's own format: a function_call_output item, a tool_result block, a
    functionResponse part."""
    if upstream == "openai":
        assert body["input"][-1]["type"] == "function_call_output"
        return body["input"][-1]["output"]
    if upstream == "anthropic":
        last = body["messages"][-1]["content"]
        assert last[0]["type"] == "tool_result"
        return json.dumps(last[0]["content"])
    (part,) = body["contents"][-1]["parts"]
    return json.dumps(part["functionResponse"]["response"])


def codex_turn(cli: Path, proxy: RecordingProxy, secret: str, home: Path, model: str,
               number: int, resume: bool) -> list[dict[str, Any]]:
    """One `codex exec` turn asking to run `echo tokmodel-<number>` with a reasoning effort;
    checks that Codex ran it once and answered with its output; returns the items it
    printed."""
    code, events, stderr = run_codex(cli, proxy, secret, home, model,
                                     prompt=f"run: echo tokmodel-{number}",
                                     settings='model_reasoning_effort = "medium"',
                                     resume=resume)
    assert code == 0, (stderr, events, answers(proxy))
    done = [e["item"] for e in events if e.get("type") == "item.completed"]
    commands = [i for i in done if i["type"] == "command_execution"]
    assert len(commands) == 1 and f"echo tokmodel-{number}" in commands[0]["command"]
    assert (commands[0]["exit_code"], commands[0]["aggregated_output"]) == (
        0, f"tokmodel-{number}\n")
    messages = [i["text"] for i in done if i["type"] == "agent_message"]
    assert len(messages) == 1 and messages[0].startswith("echo: ")
    assert f"tokmodel-{number}" in messages[0]
    return done


@pytest.mark.parametrize("model, upstream", [(GPT, "openai"), (CLAUDE, "anthropic"),
                                             (GEMINI, "gemini")])
def test_codex_shell_tool_loop_with_reasoning(cli_agents, gw, up, proxy, tmp_path, model,
                                              upstream):
    """Codex at its defaults (read-only sandbox, no approvals in `exec`) plus a reasoning
    effort, two turns (`codex exec`, then `codex exec resume --last`): each time the model
    calls Codex's shell tool (`exec_command`), Codex runs the command and sends its output
    back with the reasoning items so far, and the answer carries the output. The reasoning
    items come back as the provider's own: OpenAI's encrypted content unchanged, Claude's
    signed thinking blocks, Gemini's thought signatures, each checked by its strict fake."""
    up["openai"].accept_client_metadata = True
    up["gemini"].signatures = True
    home = tmp_path / "home"
    try:
        account, secret = gw.account(START_CREDITS)
        codex_turn(cli_agents, proxy, secret, home, model, 42, resume=False)
        codex_turn(cli_agents, proxy, secret, home, model, 43, resume=True)
    finally:
        up["openai"].accept_client_metadata = False

    # per turn two requests, all answered: the call, then the answer to its output
    assert [status for status, _ in answers(proxy)] == [200] * 4, answers(proxy)
    sent = [r.body for r in proxy.requests]
    assert sent[0]["include"] == ["reasoning.encrypted_content"] and sent[0]["store"] is False
    assert sent[0]["reasoning"]["effort"] == "medium"
    assert [t["name"] for t in sent[0]["tools"] if t["type"] == "function"][0] == "exec_command"
    last = sent[-1]["input"]
    calls = [i for i in last if i.get("type") == "function_call"]
    outputs = [i for i in last if i.get("type") == "function_call_output"]
    assert [json.loads(c["arguments"])["cmd"] for c in calls] == ["echo tokmodel-42",
                                                                  "echo tokmodel-43"]
    assert [o["call_id"] for o in outputs] == [c["call_id"] for c in calls]
    # one reasoning item per earlier answer, each with the state Codex keeps for the provider
    sent_back = [i for i in last if i.get("type") == "reasoning"]
    assert len(sent_back) == 3

    others = {"openai", "anthropic", "gemini"} - {upstream}
    assert all(up[name].requests == [] for name in others)
    got = [r.body for r in up[upstream].requests]
    assert len(got) == 4
    assert "tokmodel-42" in tool_output_sent(upstream, got[1])
    assert "tokmodel-43" in tool_output_sent(upstream, got[3])
    if upstream == "openai":
        # OpenAI's own reasoning items went back to it as they came
        assert [i["encrypted_content"] for i in sent_back] == up["openai"].issued_reasoning[:3]
        assert [i for i in got[3]["input"] if i.get("type") == "reasoning"] == sent_back
    elif upstream == "anthropic":
        # thinking stays on: every assistant turn opens with its signed thinking block
        assert all(r["thinking"]["type"] == "enabled" for r in got)
        turns = [m["content"] for m in got[3]["messages"] if m["role"] == "assistant"]
        assert [[b["type"] for b in t] for t in turns] == [
            ["thinking", "tool_use"], ["thinking", "text"], ["thinking", "tool_use"]]
        assert all(t[0]["signature"] in up["anthropic"].issued_signatures for t in turns)
    else:
        steps = [c["parts"] for c in got[3]["contents"] if c["role"] == "model"
                 and "functionCall" in c["parts"][0]]
        assert [p[0]["functionCall"]["args"]["cmd"] for p in steps] == ["echo tokmodel-42",
                                                                        "echo tokmodel-43"]
        assert all(p[0]["thoughtSignature"] in up["gemini"].issued_signatures for p in steps)

    usages = up[upstream].usages
    assert len(usages) == 4
    cost = sum(upstream_cost(model, upstream, usage) for usage in usages)
    assert cost > 0 and charged(gw, account) == cost




def test_claude_code_web_search(cli_agents, gw, up, proxy, tmp_path):
    """Claude Code's WebSearch tool: the model asks for it, Claude Code asks the model for the
    search with Anthropic's web search server tool (`web_search_20250305`, max_uses 8, forced
    by tool_choice), and the summary goes back to the model as the tool's result. The server
    tool passes through to Anthropic and the searches it reports are charged. (Claude Code
    2.1.332 declares WebSearch only on Claude models: with a Gemini or OpenAI model the tool
    is not offered, so the translated mapping is tested with the SDK in
    test_web_search_fees.py.)"""
    up["anthropic"].web_searches = 2
    account, secret = gw.account(START_CREDITS)
    code, result, stderr = run_claude(cli_agents, proxy, secret, tmp_path / "home",
                                      "--allowedTools", "WebSearch",
                                      prompt="search: tokmodel gateway news",
                                      ANTHROPIC_MODEL=CLAUDE,
                                      ANTHROPIC_DEFAULT_HAIKU_MODEL=CLAUDE,
                                      ANTHROPIC_SMALL_FAST_MODEL=CLAUDE)
    assert code == 0 and result is not None, (stderr, answers(proxy))
    assert result["is_error"] is False, result
    assert 'Web search results for query: "tokmodel gateway news"' in result["result"]
    (asked,) = [r.body for r in proxy.requests
                if any(t.get("type") == "web_search_20250305" for t in r.body.get("tools", ()))]
    assert asked["tools"] == [{"type": "web_search_20250305", "name": "web_search",
                               "max_uses": 8}]
    assert asked["tool_choice"] == {"type": "tool", "name": "web_search"}
    assert [r for r in up["anthropic"].requests if r.body.get("tools") == asked["tools"]]
    rows = usage_rows(gw, account)
    assert sum(row.details.get("web_searches", 0) for row in rows) == 2
    assert sum(row.cost_nano for row in rows) == charged(gw, account)
