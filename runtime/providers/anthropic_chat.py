"""OpenAI chat to the Anthropic Messages API (`POST /v1/messages`) and back.

Request: system and developer messages become the top-level `system` blocks; user, assistant
and tool messages become alternating user/assistant turns (consecutive tool messages are one
user turn of `tool_result` blocks, results first; same-role neighbours are merged); images go
as base64 or URL sources (Anthropic fetches URLs itself); tool calls become `tool_use` blocks
with their arguments parsed to objects. Scalar parameters are mapped by the descriptor
(specs/providers/anthropic.yaml); `max_tokens`, which Anthropic requires, defaults to the
model's catalogue output limit. `reasoning_effort` becomes a thinking budget (descriptor
table), kept at least 1024 and below `max_tokens`. An assistant message's `thinking_blocks`
(Anthropic's signed thinking and redacted thinking, as the answers carry them) go back first
in its turn; a step that continues a tool loop whose assistant turn has none runs without
thinking, because Anthropic then requires the signed thinking block. `web_search_options`
adds Anthropic's web search server tool (`web_search_20250305`,
with its approximate user location). `n` above 1 is a 400: Anthropic returns one answer per
request.

JSON output: `response_format: json_schema` is sent as Anthropic structured outputs,
`output_config.format = {"type": "json_schema", "schema": ...}`: the model is constrained to
the schema and the JSON arrives as ordinary text content, streamed as text deltas, with the
normal finish reason, exactly where an OpenAI client looks for it (a forced tool would turn
it into a tool call, clash with the client's own tools and be refused with thinking).
`json_object` has no schema to constrain to, so it becomes a system instruction to answer
with one JSON object only, which is also how OpenAI's JSON mode is steered.

Response: text blocks are the content, thinking blocks `reasoning_content` and, signed as
they are (with redacted thinking), the message's `thinking_blocks` (in a stream: one
`thinking_blocks` delta when a block is complete), tool_use blocks `tool_calls` (arguments
`{}` when the input is empty); stop reasons are mapped by the
descriptor (refusal is `content_filter`, pause_turn `length`). Usage: prompt tokens are
input + cache reads + cache writes, with the cache parts in `prompt_tokens_details`, so the
catalogue's cache prices apply; the web searches Anthropic ran
(`server_tool_use.web_search_requests`) go on in the usage's `server_tool_use`, to be charged.
Streams are a state machine over the named events; `ping` is
ignored; `message_delta` usage is cumulative and replaces, never adds. message_start's usage
(the exact input count) rides on the first chunk for the meter only (`cp.EARLY_USAGE`), so a
stream the client leaves early is charged that input exactly. A mid-stream `error`
event (or a stream that ends without `message_stop`) ends the stream with an error after
reporting the usage produced so far, output estimated from the text when Anthropic had not
yet counted it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from runtime import fastjson
from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError, UpstreamError
from runtime.providers import chat_parts as cp
from runtime.providers.base import (
    SSEFraming,
    StreamBroken,
    UpstreamCall,
    credential_error,
    json_headers,
    mapped_status,
    retry_headers,
)
from runtime.sse import Event

NATIVE_FIELDS = ("model", "max_tokens", "messages", "system", "tools", "tool_choice",
                 "stop_sequences", "stream", "temperature", "top_p", "top_k", "thinking",
                 "metadata", "service_tier", "output_config")
DEFAULT_MAX_TOKENS = 4096
WEB_SEARCH_TOOL = "web_search_20250305"
WEB_SEARCH_NAME = "web_search"
MIN_THINKING = 1024
JSON_OBJECT_INSTRUCTION = ("Answer with a single valid JSON object and nothing else: no prose, "
                           "no code fences.")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_EXPLICIT_MAX = ("max_completion_tokens", "max_tokens")


class AnthropicChat(SSEFraming):
    web_search = True

    def build(self, body: Mapping[str, Any], model: Model, stream: bool) -> UpstreamCall:
        body = dict(body)  # the client's request stays as received
        shape = cp.take_structural(body)
        cp.check_modalities(shape)
        explicit_max = next((k for k in _EXPLICIT_MAX if body.get(k) is not None), None)
        search = body.pop("web_search_options", None)
        cp.prepare_scalars(body)
        native = model.provider.descriptor.translate["chat"](body)
        cp.drop_nulls(native)
        cp.check_leftovers(native, NATIVE_FIELDS, model.provider.id)

        native["model"] = model.upstream
        native.setdefault("max_tokens", model.max_output_tokens or DEFAULT_MAX_TOKENS)
        _thinking(native, explicit_max)
        system, messages = _messages(shape["messages"])
        if native.get("thinking", {}).get("type") == "enabled" and _unsigned_tool_loop(messages):
            # Anthropic refuses an ongoing tool loop whose assistant turn lost its signed
            # thinking block (chat history cannot carry it), so this step runs without thinking.
            native["thinking"] = {"type": "disabled"}
        tools = cp.function_tools(shape)
        fmt = cp.output_format(shape)
        if fmt is not None and fmt.kind == "json_object":
            system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
        elif fmt is not None:
            native.setdefault("output_config", {})["format"] = {"type": "json_schema",
                                                                "schema": fmt.schema}
        if system:
            native["system"] = system
        native["messages"] = messages
        _tools(native, shape, tools)
        _web_search(native, search, tools)
        native["stream"] = stream
        headers = json_headers(model)
        if stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamCall("POST", model.provider.url("chat", model.upstream), headers,
                            json.dumps(native, ensure_ascii=False).encode())

    def parse(self, payload: Any, model: Model) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("content"), list):
            raise UpstreamError("The upstream provider answered without content.")
        texts, thoughts, calls, signed = [], [], [], []
        for block in payload["content"]:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(block.get("text") or "")
            elif kind == "thinking":
                thoughts.append(block.get("thinking") or "")
                signed += _signed([block])
            elif kind == "redacted_thinking":
                signed += _signed([block])
            elif kind == "tool_use":
                calls.append(cp.tool_call(None, block.get("id") or cp.new_id("toolu_"),
                                          block.get("name") or "",
                                          cp.arguments_json(block.get("input"))))
        finish = _finish(payload.get("stop_reason"), model)
        content = "".join(texts) if texts or not calls else None
        message = cp.message(content, "".join(thoughts), calls)
        if signed:
            message["thinking_blocks"] = signed
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return cp.completion(f"chatcmpl-{payload.get('id') or cp.new_id('')}", model.id,
                             [choice], openai_usage(payload.get("usage") or {}))

    def chunks(self, events: Iterator[Event], model: Model) -> Iterator[dict[str, Any]]:
        return _Stream(model).run(events)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError:
        kind, message = error_of(raw)
        if status in (401, 403) or kind in ("authentication_error", "permission_error"):
            return credential_error(model)
        status = mapped_status(status, model)
        message = message or f"The upstream provider returned HTTP {status}."
        if status < 500:
            return GatewayError(message, status=status, type=kind or "invalid_request_error",
                                code=kind, headers=retry_headers(headers))
        return UpstreamError(message, status=status, code=kind, headers=retry_headers(headers))


def error_of(raw: bytes) -> tuple[str | None, str | None]:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None, None
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return None, None
    kind, message = err.get("type"), err.get("message")
    return (kind if isinstance(kind, str) else None,
            message if isinstance(message, str) else None)


def _thinking(native: dict[str, Any], explicit_max: str | None) -> None:
    thinking = native.get("thinking")
    if not isinstance(thinking, dict) or "budget_tokens" not in thinking:
        return
    budget = thinking["budget_tokens"]
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise BadRequest(f"'reasoning_effort' value '{budget}' is not supported by this model.",
                         param="reasoning_effort")
    if budget == 0:
        native["thinking"] = {"type": "disabled"}
        return
    limit = native["max_tokens"] - 1
    if limit < MIN_THINKING:
        param = explicit_max or "max_completion_tokens"
        raise BadRequest(f"'{param}' must be above {MIN_THINKING} when reasoning_effort is set: "
                         "the thinking budget is part of the output tokens.", param=param)
    native["thinking"] = {"type": "enabled", "budget_tokens": min(budget, limit)}


def _messages(messages: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    calls: dict[str, str] = {}          # tool call id -> name, for tool messages

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, msg in enumerate(messages):
        role = msg["role"]
        if role in ("system", "developer"):
            text = cp.text_of(msg.get("content"))
            if text:
                system.append({"type": "text", "text": text})
        elif role == "user":
            blocks = _user_blocks(msg.get("content"), f"messages[{i}].content")
            if blocks:
                add("user", blocks)
        elif role == "assistant":
            # Signed thinking of this turn goes back first, as Anthropic wants it.
            blocks = _signed(msg.get("thinking_blocks") or ())
            text = cp.text_of(msg.get("content")) or msg.get("refusal") or ""
            if text:
                blocks.append({"type": "text", "text": text})
            for j, call in enumerate(msg.get("tool_calls") or ()):
                param = f"messages[{i}].tool_calls[{j}]"
                fn = call.get("function")
                if call.get("type") != "function" or not isinstance(fn, dict):
                    raise BadRequest(f"'{param}': only function tool calls can be sent to this "
                                     "model.", param=param)
                calls[call["id"]] = fn["name"]
                blocks.append({"type": "tool_use", "id": cp.safe_id(call["id"]),
                               "name": fn["name"],
                               "input": cp.tool_input(fn.get("arguments"),
                                                      f"{param}.function.arguments")})
            if blocks:
                add("assistant", blocks)
        elif role == "tool":
            if msg["tool_call_id"] not in calls:
                raise BadRequest(f"'messages[{i}].tool_call_id' answers no earlier tool call.",
                                 param=f"messages[{i}].tool_call_id")
            add("user", [{"type": "tool_result", "tool_use_id": cp.safe_id(msg["tool_call_id"]),
                          "content": cp.text_of(msg.get("content"))}])
        else:
            raise BadRequest(f"'messages[{i}].role' '{role}' cannot be sent to this model; "
                             "use tool messages.", param=f"messages[{i}].role")
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic wants a turn's tool results before anything else in it.
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if not turns:
        raise BadRequest("'messages' needs at least one user or assistant message with "
                         "content.", param="messages")
    return system, turns


def _signed(blocks: Any) -> list[dict[str, Any]]:
    """The thinking blocks Anthropic takes back: thinking with its signature, redacted
    thinking with its data; only their own fields."""
    out = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if (block.get("type") == "thinking" and isinstance(block.get("thinking"), str)
                and isinstance(block.get("signature"), str) and block["signature"]):
            out.append({"type": "thinking", "thinking": block["thinking"],
                        "signature": block["signature"]})
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            out.append({"type": "redacted_thinking", "data": block["data"]})
    return out


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content or ()):
        where = f"{param}[{j}]"
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part["image_url"]["url"]
            data = cp.parse_data_url(url, f"{where}.image_url.url")
            if data is not None:
                if data.mime not in _IMAGE_TYPES:
                    raise BadRequest(f"'{where}.image_url.url': image type '{data.mime}' is not "
                                     f"supported (use {', '.join(_IMAGE_TYPES)}).",
                                     param=f"{where}.image_url.url")
                blocks.append({"type": "image", "source": {
                    "type": "base64", "media_type": data.mime, "data": data.data}})
            elif cp.is_http_url(url):
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
            else:
                raise BadRequest(f"'{where}.image_url.url' must be an http(s) or data URL.",
                                 param=f"{where}.image_url.url")
        elif kind == "file" and (part.get("file") or {}).get("file_data"):
            blocks.append(_document(part["file"]["file_data"], f"{where}.file.file_data"))
        else:
            raise BadRequest(f"'{where}': content of type '{kind}' cannot be sent to this "
                             "model.", param=where)
    return blocks


def _document(file_data: str, param: str) -> dict[str, Any]:
    data = cp.parse_data_url(file_data, param) or cp.DataUrl("application/pdf", file_data)
    if data.mime != "application/pdf":
        raise BadRequest(f"'{param}': only PDF files can be sent to this model.", param=param)
    return {"type": "document", "source": {"type": "base64", "media_type": data.mime,
                                           "data": data.data}}


def _tools(native: dict[str, Any], shape: dict[str, Any], tools: list[cp.FunctionTool]) -> None:
    choice = cp.tool_choice(shape, tools)
    if choice is not None and choice.names is not None and choice.mode == "auto":
        tools = [t for t in tools if t.name in choice.names]
    if tools:
        native["tools"] = [
            {"name": t.name, **({"description": t.description} if t.description else {}),
             "input_schema": t.parameters or {"type": "object", "properties": {}}}
            for t in tools]
    spec: dict[str, Any] | None = None
    if choice is not None:
        if choice.mode == "none":
            spec = {"type": "none"} if tools else None
        elif choice.mode == "auto":
            spec = {"type": "auto"}
        elif choice.names is not None and len(choice.names) == 1:
            spec = {"type": "tool", "name": choice.names[0]}
        else:
            spec = {"type": "any"}
            if choice.names is not None:
                native["tools"] = [t for t in native["tools"] if t["name"] in choice.names]
    if shape.get("parallel_tool_calls") is False and tools:
        spec = spec or {"type": "auto"}
        if spec["type"] != "none":
            spec["disable_parallel_tool_use"] = True
    if spec is not None:
        native["tool_choice"] = spec


def _unsigned_tool_loop(messages: list[dict[str, Any]]) -> bool:
    """The last turn answers tool uses of an assistant turn that does not begin with thinking."""
    if len(messages) < 2 or not any(b.get("type") == "tool_result"
                                    for b in messages[-1]["content"]):
        return False
    first = messages[-2]["content"][0] if messages[-2]["content"] else {}
    return first.get("type") not in ("thinking", "redacted_thinking")


def _web_search(native: dict[str, Any], search: Any, tools: list[cp.FunctionTool]) -> None:
    """Chat's `web_search_options` as Anthropic's web search server tool, unless tools are
    turned off or a client function already has its name."""
    if not isinstance(search, dict) or (native.get("tool_choice") or {}).get("type") == "none":
        return
    if any(t.name == WEB_SEARCH_NAME for t in tools):
        return
    tool: dict[str, Any] = {"type": WEB_SEARCH_TOOL, "name": WEB_SEARCH_NAME}
    approx = (search.get("user_location") or {}).get("approximate")
    if not isinstance(approx, dict):  # the Responses form has the fields at the top level
        approx = search.get("user_location")
    if isinstance(approx, dict):
        where = {k: approx[k] for k in ("city", "region", "country", "timezone")
                 if isinstance(approx.get(k), str)}
        if where:
            tool["user_location"] = {"type": "approximate", **where}
    native.setdefault("tools", []).append(tool)


def _finish(stop_reason: Any, model: Model) -> str:
    return model.provider.descriptor.finish_reasons.get(stop_reason, "stop")


def openai_usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    def n(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    read, write = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    tools = raw.get("server_tool_use")
    searches = tools.get("web_search_requests") if isinstance(tools, dict) else None
    return cp.usage(n("input_tokens") + read + write, n("output_tokens"), cached=read,
                    cache_write=write,
                    web_searches=searches if isinstance(searches, int) and searches > 0 else 0)


class _Stream:
    """Anthropic events in, OpenAI chunks out; one instance per stream."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.out = cp.ChunkWriter(cp.new_id("chatcmpl-"), model.id)
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}   # index -> {kind, tool, args}
        self.tools = 0
        self.started = False
        self.stop_reason: Any = None
        self.produced = 0

    def run(self, events: Iterator[Event]) -> Iterator[dict[str, Any]]:
        for event in events:
            try:
                data = fastjson.loads(event.data)
            except ValueError:
                yield from self._broken("The upstream provider sent an invalid stream event.")
            if not isinstance(data, dict):
                continue
            kind = event.event or data.get("type")
            if kind == "ping":
                continue
            if kind == "error":
                err = data.get("error") if isinstance(data.get("error"), dict) else {}
                yield from self._broken(err.get("message") or "The upstream provider failed "
                                        "mid-stream.", err.get("type") or "upstream_error")
            if kind == "message_start":
                message = data.get("message") or {}
                self.out.id = f"chatcmpl-{message.get('id') or cp.new_id('')}"
                self.usage.update(message.get("usage") or {})
                self.started = True
                # Anthropic's exact input count, known now: for the meter, not the client
                yield dict(self.out.delta({"role": "assistant", "content": ""}),
                           **{cp.EARLY_USAGE: openai_usage(self.usage)})
            elif kind == "content_block_start":
                yield from self._block_start(data.get("index"), data.get("content_block") or {})
            elif kind == "content_block_delta":
                yield from self._block_delta(data.get("index"), data.get("delta") or {})
            elif kind == "content_block_stop":
                block = self.blocks.get(data.get("index"))
                if block and block["kind"] == "tool_use" and not block["args"]:
                    yield self._args(block["tool"], "{}")
                elif block and block["kind"] == "thinking":
                    signed = _signed([{"type": "thinking", "thinking": block["thinking"],
                                       "signature": block["signature"]}])
                    if signed:
                        yield self.out.delta({"thinking_blocks": signed})
            elif kind == "message_delta":
                delta = data.get("delta") or {}
                if delta.get("stop_reason"):
                    self.stop_reason = delta["stop_reason"]
                # Cumulative totals: the newest value replaces the earlier one.
                self.usage.update({k: v for k, v in (data.get("usage") or {}).items()
                                   if v is not None})
            elif kind == "message_stop":
                yield self.out.delta({}, finish=_finish(self.stop_reason, self.model))
                yield self.out.usage(openai_usage(self.usage))
                return
        yield from self._broken("The upstream provider ended the stream early.")

    def _block_start(self, index: Any, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = block.get("type")
        state = {"kind": kind, "tool": None, "args": False, "thinking": "", "signature": ""}
        self.blocks[index] = state
        if kind == "tool_use":
            state["tool"] = self.tools
            self.tools += 1
            name = block.get("name") or ""
            self.produced += len(name)
            yield self.out.delta({"tool_calls": [cp.tool_call(
                state["tool"], block.get("id") or cp.new_id("toolu_"), name, "")]})
        elif kind == "text" and block.get("text"):
            yield self._text("content", block["text"])
        elif kind == "redacted_thinking":
            signed = _signed([block])
            if signed:
                yield self.out.delta({"thinking_blocks": signed})

    def _block_delta(self, index: Any, delta: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            yield self._text("content", delta["text"])
        elif kind == "thinking_delta" and delta.get("thinking"):
            block = self.blocks.get(index)
            if block:
                block["thinking"] += delta["thinking"]
            yield self._text("reasoning_content", delta["thinking"])
        elif kind == "signature_delta" and isinstance(delta.get("signature"), str):
            block = self.blocks.get(index)
            if block:
                block["signature"] += delta["signature"]
        elif kind == "input_json_delta" and delta.get("partial_json"):
            block = self.blocks.get(index)
            if block and block["kind"] == "tool_use":
                block["args"] = True
                yield self._args(block["tool"], delta["partial_json"])

    def _text(self, key: str, text: str) -> dict[str, Any]:
        self.produced += len(text)
        return self.out.delta({key: text})

    def _args(self, tool: int, fragment: str) -> dict[str, Any]:
        self.produced += len(fragment)
        return self.out.delta({"tool_calls": [{"index": tool, "function": {
            "arguments": fragment}}]})

    def _broken(self, message: str, type: str = "upstream_error") -> Iterator[dict[str, Any]]:
        """Report what was produced, then end the stream with the error."""
        if self.started:
            counted = self.usage.get("output_tokens")
            estimate = math.ceil(self.produced / 4)
            usage = dict(self.usage, output_tokens=max(
                counted if isinstance(counted, int) else 0, estimate))
            yield self.out.usage(openai_usage(usage))
        raise StreamBroken(message, type)
