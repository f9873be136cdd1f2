"""A strict fake Anthropic Messages API (`POST /v1/messages`) for tests.

Contract
--------
``FakeAnthropic`` (built on ``tests.fakes.http_fake.FakeServer``) serves 127.0.0.1;
``base_url`` is the origin (Anthropic's base has no ``/v1``). Every request is recorded in
``requests`` before it is judged. It rejects what the real API rejects, with Anthropic's
envelope ``{"type":"error","error":{"type","message"},"request_id"}``:

* 401 ``authentication_error`` without ``x-api-key`` (or ``Authorization: Bearer``) equal to
  ``api_key``; 400 without an ``anthropic-version`` header;
* 400 ``invalid_request_error`` for: a top-level field the API does not know, missing
  ``model``/``max_tokens``/``messages``, a role other than user/assistant (so a ``system``
  message), roles not alternating or a first turn that is not the user's, empty text blocks,
  images that are not base64 (valid data, jpeg/png/gif/webp) or http(s) URLs, ``tool_use``
  outside assistant turns, ``tool_result`` blocks that answer no ``tool_use`` of the previous
  assistant turn or do not come first, tool uses left unanswered, malformed tools (the
  tools Anthropic defines are accepted by type with the name each requires, the
  ``web_search_*`` server tool with its documented fields; an unknown type is refused) or
  tool_choice,
  temperature/top_p outside 0..1, thinking enabled in an ongoing tool loop whose assistant
  turn does not begin with a thinking block, a thinking budget below 1024 or not below
  max_tokens (or any budget with adaptive thinking), unknown metadata keys, a bad
  service_tier or output_config (keys format and effort; effort low/medium/high/max),
  ``context_management`` without an ``anthropic-beta`` header naming a context-management
  beta or without an ``edits`` list;
* 404 ``not_found_error`` for a model outside ``models`` (None accepts any).

``POST /v1/messages/count_tokens`` (``count_tokens``) validates the same way, except that it
takes only model, messages, system, tools, tool_choice, thinking, output_config and
mcp_servers (``max_tokens``, ``stream`` and sampling fields are "Extra inputs are not
permitted", as on the real API), and answers ``{"input_tokens": N}`` with N = words of the
prompt (as ``input_tokens`` below) + words of the tool definitions' JSON, at least 1.

Deterministic answers: ``"echo: " + <last user text>`` (plus ``[image <type> <n> bytes]`` or
``[image <url>]`` per image of that turn); after tool results, ``"echo: " + <result text>``;
with ``output_config.format`` the text is ``{"echo": <that text>}``. A ``tool_use``
(``get_weather``-style, input ``{"city": "Oslo"}``) is answered when tool_choice forces a tool
(any/tool) or, with auto, when the last user text mentions "weather" (then preceded by the
text "Let me check."); a line ``run: C`` in the last user text, with a coding agent's shell tool
declared (``Bash``, ``exec_command``, ...), is answered with that tool running C (see
``tests.fakes.shell_call``). Thinking enabled or adaptive adds a thinking block
``"Thinking about <text>"`` with a signature; a thinking block sent back must carry a signature
this fake issued (400 ``Invalid `signature` in `thinking` block`` otherwise, as Anthropic
checks them). ``stop_sequences`` cut the text (stop_reason
``stop_sequence``); ``max_tokens`` below the word count truncates (``max_tokens``).
Usage: ``input_tokens`` = words of system and all message texts, tool inputs and results,
and of the tool definitions (as count_tokens counts, and as Anthropic bills them); with the
web search server tool, ``server_tool_use.web_search_requests`` = the ``web_searches``
attribute (default 0: the model chose not to search) capped by its ``max_uses`` (in
message_delta's usage when streamed);
``cache_read_input_tokens``/``cache_creation_input_tokens`` = the ``cache_read_tokens`` /
``cache_write_tokens`` attributes; ``output_tokens`` = words of text, thinking and tool input.

Streams: real framing (``event:`` + ``data:``) in the real order — message_start (usage with
placeholder output 1), ping, per block content_block_start / deltas (a word per text delta,
thinking deltas then one signature_delta, ``input_json_delta`` fragments starting with an
empty one) / content_block_stop, message_delta (stop reason, cumulative usage), message_stop.
``error_in_stream_after(n, type, message)`` makes the next stream send an ``error`` event
after ``n`` deltas and end. ``fail_next(status, body, headers)`` answers the next
authenticated request with a failure (default body: Anthropic's envelope for the status).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

from requests.structures import CaseInsensitiveDict

from .http_fake import FakeServer, Received, Reject, Reply
from .shell_call import shell_call
from .sse import encode_event

FIELDS = frozenset({"model", "max_tokens", "messages", "system", "tools", "tool_choice",
                    "stop_sequences", "stream", "temperature", "top_p", "top_k", "thinking",
                    "metadata", "service_tier", "output_config", "container", "mcp_servers",
                    "context_management"})
EFFORTS = ("low", "medium", "high", "max")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
               529: "overloaded_error"}
COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking",
                          "output_config", "mcp_servers"})
_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_WORDS = re.compile(r"\S+\s*")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)


WEB_SEARCH = "web_search_20250305"
# Tools Anthropic defines, by type, with the name each requires (the anthropic SDK's
# ToolUnionParam types)
DEFINED_TOOLS = {WEB_SEARCH: "web_search", "web_search_20260209": "web_search",
                 "web_fetch_20250910": "web_fetch", "code_execution_20250825": "code_execution",
                 "bash_20250124": "bash", "text_editor_20250728": "str_replace_based_edit_tool",
                 "memory_20250818": "memory"}


def _bad(message: str) -> Reject:
    return Reject(400, message)


def words(text: str) -> int:
    return len(text.split())


class FakeAnthropic(FakeServer):
    routes = {("POST", "/v1/messages"): "messages",
              ("POST", "/v1/messages/count_tokens"): "count_tokens"}

    def __init__(self, api_key: str | None = "anthropic-upstream-key", *,
                 models: tuple[str, ...] | None = None, chunk_delay: float = 0.0) -> None:
        super().__init__(api_key, chunk_delay=chunk_delay)
        self.models = models
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.web_searches = 0
        self.issued_signatures: set[str] = set()
        self._stream_errors: list[tuple[int, str, str]] = []

    def check_auth(self, headers: CaseInsensitiveDict[str], query: str) -> None:
        if self.api_key is not None:
            auth = headers.get("Authorization", "")
            key = headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else "")
            if not key:
                raise Reject(401, "x-api-key header is required")
            if key != self.api_key:
                raise Reject(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            raise _bad("anthropic-version: header is required")

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                           "message": message},
                "request_id": "req_" + secrets.token_hex(12)}

    def error_in_stream_after(self, n: int, type: str = "overloaded_error",
                              message: str = "Overloaded") -> None:
        with self.lock:
            self._stream_errors.append((n, type, message))

    def reset(self) -> None:
        super().reset()
        self.cache_read_tokens = self.cache_write_tokens = 0
        self.web_searches = 0
        with self.lock:
            self._stream_errors.clear()

    # -- the endpoint -------------------------------------------------------------------------

    def messages(self, req: Received) -> Reply:
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            raise _bad("Content-Type must be application/json")
        if not isinstance(req.body, dict):
            raise _bad("The request body is not valid JSON.")
        body = req.body
        validate(body)
        if "context_management" in body:
            beta = req.headers.get("anthropic-beta", "")
            if "context-management-" not in beta:
                raise _bad("context_management: Extra inputs are not permitted")
            edits = body["context_management"].get("edits") if isinstance(
                body["context_management"], dict) else None
            if not isinstance(edits, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("type"), str) for e in edits):
                raise _bad("context_management.edits: Input should be a valid list")
        if self.models is not None and body["model"] not in self.models:
            raise Reject(404, f"model: {body['model']}")
        for i, msg in enumerate(body["messages"]):
            for j, block in enumerate(_blocks(msg["content"])):
                if block.get("type") == "thinking" and (
                        block.get("signature") not in self.issued_signatures):
                    raise _bad(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` "
                               "block")
        answer = compose(body)
        with self.lock:
            self.issued_signatures.update(b["signature"] for b in answer["content"]
                                          if b["type"] == "thinking")
        usage = {"input_tokens": count_words(body),
                 "cache_creation_input_tokens": self.cache_write_tokens,
                 "cache_read_input_tokens": self.cache_read_tokens,
                 "output_tokens": answer["output_tokens"]}
        searches = web_searches_run(body, self.web_searches)
        if searches:
            usage["server_tool_use"] = {"web_search_requests": searches}
        message = {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
                   "model": body["model"], "content": answer["content"],
                   "stop_reason": answer["stop_reason"],
                   "stop_sequence": answer["stop_sequence"], "usage": usage}
        with self.lock:
            self.usages.append(usage)
        if body.get("stream"):
            with self.lock:
                failure = self._stream_errors.pop(0) if self._stream_errors else None
            return Reply(200, _stream(message, failure), "text/event-stream")
        return Reply.json(message)


    def count_tokens(self, req: Received) -> Reply:
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            raise _bad("Content-Type must be application/json")
        if not isinstance(req.body, dict):
            raise _bad("The request body is not valid JSON.")
        body = req.body
        validate(body, COUNT_FIELDS, ("model", "messages"))
        if self.models is not None and body["model"] not in self.models:
            raise Reject(404, f"model: {body['model']}")
        return Reply.json({"input_tokens": count_words(body)})


def web_searches_run(body: dict[str, Any], wanted: int) -> int:
    """The searches the web search server tool runs: `wanted`, at most its max_uses."""
    for tool in body.get("tools") or ():
        if str(tool.get("type", "")).startswith("web_search_"):
            limit = tool.get("max_uses")
            return min(wanted, limit) if isinstance(limit, int) else wanted
    return 0


def count_words(body: dict[str, Any]) -> int:
    """The fake's token count of a count_tokens request: prompt words + tool definition words."""
    tools = body.get("tools") or []
    return max(1, prompt_words(body) + sum(words(json.dumps(t)) for t in tools))


# -- validation -------------------------------------------------------------------------------

def validate(body: dict[str, Any], fields: frozenset[str] = FIELDS,
             required: tuple[str, ...] = ("model", "max_tokens", "messages")) -> None:
    for key in body:
        if key not in fields:
            raise _bad(f"{key}: Extra inputs are not permitted")
    for key in required:
        if key not in body:
            raise _bad(f"{key}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _bad("model: Input should be a valid string")
    max_tokens = body.get("max_tokens", 1)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens: Input should be a valid integer greater than 0")
    _check_system(body.get("system"))
    tool_names = _check_tools(body)
    _check_messages(body["messages"], tool_names)
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= 1):
            raise _bad(f"{key}: Input should be less than or equal to 1")
    top_k = body.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
        raise _bad("top_k: Input should be a non-negative integer")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(
            isinstance(s, str) and s.strip() for s in stops)):
        raise _bad("stop_sequences: each stop sequence must contain non-whitespace")
    _check_thinking(body)
    _check_thinking_in_tool_loop(body)
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict)
                                 or set(metadata) - {"user_id"}):
        raise _bad("metadata: Extra inputs are not permitted")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _bad("service_tier: Input should be 'auto' or 'standard_only'")
    output = body.get("output_config")
    if output is not None:
        if not isinstance(output, dict) or set(output) - {"format", "effort"}:
            raise _bad("output_config: Extra inputs are not permitted")
        fmt = output.get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
                                or not isinstance(fmt.get("schema"), dict)):
            raise _bad("output_config.format: a json_schema format with a schema is required")
        if "effort" in output and output["effort"] not in EFFORTS:
            raise _bad("output_config.effort: Input should be 'low', 'medium', 'high' or "
                       "'max'")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream: Input should be a valid boolean")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _bad("system: Input should be a valid string or list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"system.{i}: Input should be a text block")
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise _bad("system: text content blocks must be non-empty")


def _check_tools(body: dict[str, Any]) -> set[str]:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                if kind not in DEFINED_TOOLS:
                    raise _bad(f"tools.{i}: Input tag '{kind}' found using 'type' does not "
                               "match any of the expected tags")
                if kind.startswith("web_search_"):
                    _check_web_search(tool, i)
                elif tool.get("name") != DEFINED_TOOLS[kind]:
                    raise _bad(f"tools.{i}.{kind}.name: Input should be "
                               f"'{DEFINED_TOOLS[kind]}'")
                if tool["name"] in names:
                    raise _bad("tools: Tool names must be unique.")
                names.add(tool["name"])
                continue
            if not isinstance(tool, dict) or not _TOOL_NAME.match(str(tool.get("name", ""))):
                raise _bad(f"tools.{i}.name: String should match pattern "
                           "'^[a-zA-Z0-9_-]{1,128}$'")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _bad(f"tools.{i}.input_schema: input_schema must be a JSON Schema "
                           "object with type 'object'")
            unknown = set(tool) - {"name", "description", "input_schema", "cache_control",
                                   "type", "strict"}
            if unknown:
                raise _bad(f"tools.{i}.{sorted(unknown)[0]}: Extra inputs are not permitted")
            if tool["name"] in names:
                raise _bad("tools: Tool names must be unique.")
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool",
                                                                         "none"):
            raise _bad("tool_choice: Input tag does not match any of the expected tags: "
                       "'auto', 'any', 'tool', 'none'")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise _bad(f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")
        if choice["type"] in ("any", "tool") and not names:
            raise _bad("tool_choice: tool_choice may only be specified while providing tools")
    return names


def _check_web_search(tool: dict[str, Any], i: int) -> None:
    """The web search server tool: named web_search, only its documented fields."""
    if tool.get("name") != "web_search":
        raise _bad(f"tools.{i}.{tool['type']}.name: Input should be 'web_search'")
    unknown = set(tool) - {"type", "name", "max_uses", "allowed_domains", "blocked_domains",
                           "user_location", "cache_control"}
    if unknown:
        raise _bad(f"tools.{i}.{tool['type']}.{sorted(unknown)[0]}: Extra inputs are not "
                   "permitted")
    where = tool.get("user_location")
    if where is not None and (not isinstance(where, dict) or where.get("type") != "approximate"
                              or set(where) - {"type", "city", "region", "country",
                                               "timezone"}):
        raise _bad(f"tools.{i}.{tool['type']}.user_location: invalid location")


def _check_messages(messages: Any, tool_names: set[str]) -> None:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required")
    pending: set[str] = set()
    previous = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _bad(f"messages.{i}: Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _bad("messages: first message must use the \"user\" role")
        if role == previous:
            raise _bad(f"messages: roles must alternate between \"user\" and \"assistant\", "
                       f"but found multiple \"{role}\" roles in a row")
        previous = role
        content = msg.get("content")
        if isinstance(content, str):
            if not content:
                raise _bad(f"messages.{i}: text content blocks must be non-empty")
            blocks: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list) and content:
            blocks = content
        else:
            raise _bad(f"messages.{i}.content: Input should be a non-empty string or list")
        answered: set[str] = set()
        seen_other = False
        uses: set[str] = set()
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    raise _bad("messages: text content blocks must be non-empty")
                seen_other = True
            elif kind == "image" and role == "user":
                _check_image(block.get("source"), where)
                seen_other = True
            elif kind == "document" and role == "user":
                seen_other = True
            elif kind == "tool_use" and role == "assistant":
                if not _ID.match(str(block.get("id", ""))) or not isinstance(
                        block.get("input"), dict) or block.get("name") not in tool_names:
                    raise _bad(f"{where}: tool_use needs an id, a declared tool name and an "
                               "object input")
                uses.add(block["id"])
            elif kind == "tool_result" and role == "user":
                tid = block.get("tool_use_id")
                if tid not in pending:
                    raise _bad(f"{where}: unexpected `tool_use_id` found in `tool_result` "
                               f"blocks: {tid}. Each `tool_result` block must have a "
                               "corresponding `tool_use` block in the previous message.")
                if seen_other:
                    raise _bad(f"{where}: tool_result blocks must come first in the content")
                answered.add(tid)
            elif kind in ("thinking", "redacted_thinking") and role == "assistant":
                pass
            else:
                raise _bad(f"{where}: block type '{kind}' is not allowed in a {role} message")
        if role == "user":
            if pending - answered:
                raise _bad(f"messages.{i}: `tool_use` ids were found without `tool_result` "
                           f"blocks immediately after: {', '.join(sorted(pending - answered))}")
            pending = set()
        else:
            pending = uses


def _check_image(source: Any, where: str) -> None:
    if not isinstance(source, dict):
        raise _bad(f"{where}.source: Field required")
    if source.get("type") == "url":
        if not str(source.get("url", "")).startswith(("http://", "https://")):
            raise _bad(f"{where}.source.url: must be an http(s) URL")
        return
    if source.get("type") != "base64":
        raise _bad(f"{where}.source.type: Input should be 'base64' or 'url'")
    if source.get("media_type") not in IMAGE_TYPES:
        raise _bad(f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', "
                   "'image/gif' or 'image/webp'")
    if not isinstance(source.get("data"), str):
        raise _bad(f"{where}.source.data: Field required")
    try:
        base64.b64decode(source["data"], validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.source.data: invalid base64 data") from None


def _check_thinking_in_tool_loop(body: dict[str, Any]) -> None:
    """With thinking enabled, an ongoing tool loop (the last turn answers the assistant's
    tool uses) needs that assistant turn to begin with its thinking block."""
    if (body.get("thinking") or {}).get("type") != "enabled" or len(body["messages"]) < 2:
        return
    last, prev = body["messages"][-1], body["messages"][-2]
    if not isinstance(last.get("content"), list) or not any(
            b.get("type") == "tool_result" for b in last["content"]):
        return
    first = prev["content"][0] if isinstance(prev.get("content"), list) else {}
    if first.get("type") not in ("thinking", "redacted_thinking"):
        raise _bad(f"messages.{len(body['messages']) - 2}.content.0.type: Expected `thinking` "
                   "or `redacted_thinking`, but found `" + str(first.get("type")) + "`. When "
                   "`thinking` is enabled, a final `assistant` message must start with a "
                   "thinking block.")


def _check_thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled",
                                                                      "adaptive"):
        raise _bad("thinking: Input tag does not match 'enabled', 'disabled' or 'adaptive'")
    if thinking["type"] == "adaptive" and set(thinking) != {"type"}:
        raise _bad("thinking.adaptive: Extra inputs are not permitted")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise _bad("thinking.enabled.budget_tokens: Input should be greater than or "
                       "equal to 1024")
        if "max_tokens" in body and budget >= body["max_tokens"]:
            raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`")


# -- answers ----------------------------------------------------------------------------------

def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text(blocks: list[dict[str, Any]]) -> str:
    return " ".join(b["text"] for b in blocks if b.get("type") == "text")


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content or ""


def prompt_words(body: dict[str, Any]) -> int:
    system = body.get("system")
    total = words(system) if isinstance(system, str) else sum(
        words(b["text"]) for b in system or ())
    for msg in body["messages"]:
        for block in _blocks(msg["content"]):
            if block.get("type") == "text":
                total += words(block["text"])
            elif block.get("type") == "tool_use":
                total += words(json.dumps(block["input"]))
            elif block.get("type") == "tool_result":
                total += words(_result_text(block))
    return total


def compose(body: dict[str, Any]) -> dict[str, Any]:
    last = _blocks(body["messages"][-1]["content"])
    results = [b for b in last if b.get("type") == "tool_result"]
    user_text = _text(last)
    choice = body.get("tool_choice") or {"type": "auto"}
    tools = body.get("tools") or []
    content: list[dict[str, Any]] = []
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        content.append({"type": "thinking", "thinking": f"Thinking about {user_text or 'it'}",
                        "signature": "sig_" + secrets.token_hex(8)})
    forced = choice["type"] in ("any", "tool")
    shell = shell_call("\n".join(b["text"] for b in last if b.get("type") == "text"),
                       [str(t.get("name")) for t in tools])
    if shell and not results:
        content.append({"type": "tool_use", "id": "toolu_" + secrets.token_hex(10),
                        "name": shell[0], "input": shell[1]})
        return _finish(content, "tool_use", None)
    if tools and not results and (forced or (choice["type"] == "auto"
                                             and _WEATHER.search(user_text))):
        name = choice.get("name") or tools[0]["name"]
        if not forced:
            content.append({"type": "text", "text": "Let me check."})
        content.append({"type": "tool_use", "id": "toolu_" + secrets.token_hex(10),
                        "name": name, "input": {"city": "Oslo"}})
        return _finish(content, "tool_use", None)
    if results:
        text = "echo: " + " ".join(_result_text(b) for b in results)
    else:
        text = "echo: " + user_text
        for block in last:
            if block.get("type") == "image":
                source = block["source"]
                if source["type"] == "base64":
                    size = len(base64.b64decode(source["data"]))
                    text += f" [image {source['media_type']} {size} bytes]"
                else:
                    text += f" [image {source['url']}]"
    if (body.get("output_config") or {}).get("format"):
        text = json.dumps({"echo": text})
    stop_reason, stop_sequence = "end_turn", None
    for stop in body.get("stop_sequences") or ():
        if stop in text:
            text, stop_reason, stop_sequence = text.split(stop)[0], "stop_sequence", stop
            break
    pieces = _WORDS.findall(text)
    if len(pieces) > body["max_tokens"]:
        text, stop_reason, stop_sequence = "".join(pieces[:body["max_tokens"]]), "max_tokens", None
    content.append({"type": "text", "text": text})
    return _finish(content, stop_reason, stop_sequence)


def _finish(content: list[dict[str, Any]], stop_reason: str,
            stop_sequence: str | None) -> dict[str, Any]:
    out = 0
    for block in content:
        if block["type"] == "text":
            out += words(block["text"])
        elif block["type"] == "thinking":
            out += words(block["thinking"])
        else:
            out += words(json.dumps(block["input"]))
    return {"content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "output_tokens": out}


def _stream(message: dict[str, Any], failure: tuple[int, str, str] | None) -> Iterator[bytes]:
    def event(data: dict[str, Any]) -> bytes:
        return encode_event(data, data["type"])

    usage = message["usage"]
    # the searches run while the answer is written: counted in message_delta's usage
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**{k: v for k, v in usage.items() if k != "server_tool_use"},
                       "output_tokens": 1}}
    yield event({"type": "message_start", "message": start})
    yield event({"type": "ping"})
    deltas = 0
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            skeleton, fragments = {"type": "text", "text": ""}, [
                {"type": "text_delta", "text": w} for w in _WORDS.findall(block["text"])]
        elif kind == "thinking":
            skeleton = {"type": "thinking", "thinking": "", "signature": ""}
            fragments = [{"type": "thinking_delta", "thinking": w}
                         for w in _WORDS.findall(block["thinking"])]
            fragments.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            skeleton = {**block, "input": {}}
            raw = json.dumps(block["input"])
            third = max(1, len(raw) // 3)
            parts = [raw[:third], raw[third:2 * third], raw[2 * third:]]
            fragments = [{"type": "input_json_delta", "partial_json": p}
                         for p in ["", *(p for p in parts if p)]]
        yield event({"type": "content_block_start", "index": index, "content_block": skeleton})
        for fragment in fragments:
            if failure is not None and deltas >= failure[0]:
                yield event({"type": "error", "error": {"type": failure[1],
                                                        "message": failure[2]}})
                return
            yield event({"type": "content_block_delta", "index": index, "delta": fragment})
            deltas += 1
        yield event({"type": "content_block_stop", "index": index})
        yield event({"type": "ping"})
    yield event({"type": "message_delta",
                 "delta": {"stop_reason": message["stop_reason"],
                           "stop_sequence": message["stop_sequence"]},
                 "usage": usage})
    yield event({"type": "message_stop"})
