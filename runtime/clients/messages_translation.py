"""Anthropic Messages clients reaching models of other dialects: the request, the answer and
the stream translated through the canonical OpenAI chat form (the reverse of
runtime/providers/anthropic_chat.py, which reaches Anthropic from OpenAI chat).

Request (`to_openai`, on a body already valid against `CreateMessageRequest`): `system` is the
first (system) message, and a `system` turn inside `messages` is a system message at that point
of the conversation (every chat adapter takes system messages anywhere); user turns keep their
text, images (base64 -> data URL, or the URL) and PDF documents (as `file` parts), and their
`tool_result` blocks become `tool` messages placed before the rest of the turn (`is_error`
results are prefixed `Error: `; images in results follow in the user message); assistant turns
keep their text and turn `tool_use` blocks into `tool_calls` with JSON-string arguments;
thinking blocks of earlier turns are dropped (their signatures only mean something to
Anthropic), except the provider reasoning state this gateway carried in a thinking block's
signature for the same dialect (see Reasoning state below). Tools map `input_schema` to
`parameters`; tool_choice auto/any/tool/none to auto/required/the named function/none,
`disable_parallel_tool_use` to `parallel_tool_calls: false`; `stop_sequences` -> `stop`;
`max_tokens` -> `max_completion_tokens`; temperature, top_p and top_k are kept (the provider's
mapping takes them or refuses them); `output_config.effort`, else an enabled thinking budget ->
`reasoning_effort` (adaptive thinking alone leaves the model's own default, which is what
adaptive asks for); `output_config.format` -> a json_schema `response_format`;
`metadata.user_id` -> `user`. The fields listed under `dropped_when_translated` of the messages
endpoint (specs/endpoints.yaml: service_tier, cache_control, context_management: they only tune
Anthropic's own context, cache or capacity) are dropped, as is `cache_control` on blocks and
tools; any other field, URL documents or `max_tokens: 0` are a 400 naming the field. Tools
Anthropic defines (a `type` other than custom): a `web_search_*` server tool becomes chat's
`web_search_options` where the provider has a web search of its own, else it is dropped
(runtime/clients/hosted_search.py, shared with the Responses translation); every other one
(web_fetch, code_execution, bash, text_editor, memory, ...) is dropped, and the dropped tools
are named in the answer's `x-tokmodel-dropped-tools` header; a request left with no usable tool
goes on without tools, `tool_choice` any/tool included (forcing a dropped tool forces
nothing). The caller clamps `max_completion_tokens` to the model's output limit.

Answer (`to_message`): reasoning -> a `thinking` block (its signature carrying the provider's
reasoning state, see below; without reasoning text a thinking block of its own when there is
state to carry), then the text, then one `tool_use` block per call (arguments parsed to an
object, `{}` when empty); finish reasons stop, length, tool_calls, content_filter -> end_turn,
max_tokens, tool_use, refusal. Usage (`usage_block`) splits the OpenAI prompt count back into
`input_tokens` (uncached), `cache_read_input_tokens` and `cache_creation_input_tokens`, and
carries TokModel's `cost`.

Stream (`EventWriter`): a state machine over OpenAI chunks that emits Anthropic events with
both the `event:` line and `type` in the data: `message_start` on the first chunk, one
content block at a time (thinking, text, or tool_use with `input_json_delta` fragments), each
closed by `content_block_stop` when another kind starts or the choice finishes, and at the
end `message_delta` (stop reason, the charged usage) and `message_stop`. No `[DONE]`. An
error after the start is one `event: error` with Anthropic's error type. Reasoning state
(below) is sent as Anthropic sends a signature: one `signature_delta` just before the
thinking block's `content_block_stop`; state arriving while a thinking block is open (a
thought signature on a call right after the thoughts) joins it, state without one opens a
thinking block of its own (no text) just before the tool_use block it belongs to.

Reasoning state: a translated provider's own opaque state that it wants back in a tool loop
(Gemini 3's thought signature on each function call, chat's
`tool_calls[].extra_content.google.thought_signature`; Anthropic's signed thinking blocks) is
carried in a thinking block's `signature`, in the gateway's own encoding tagged with the
provider's dialect (runtime/clients/reasoning_state.py), signatures keyed by the tool_use id
the client sees. Anthropic clients keep thinking blocks with their signatures and send them
back unchanged (Claude Code does; tool_use blocks keep only their documented fields), so on
the next request the state goes back to the same dialect: each signature onto the tool call
of that id. State written for another dialect, an Anthropic signature, or a value that does
not decode is dropped.
"""

from __future__ import annotations

import json
from typing import Any

from generated.registry import ENDPOINTS
from runtime import fastjson
from runtime.billing.pricing import Usage
from runtime.clients import hosted_search
from runtime.clients.reasoning_state import (
    carried_state,
    encode_carried,
    for_dialect,
    merge_carried,
    sign_call,
    signatures,
    thinking_blocks,
)
from runtime.errors import BadRequest
from runtime.providers import chat_parts as cp
from runtime.sse import encode

HANDLED = frozenset({"model", "max_tokens", "messages", "system", "tools", "tool_choice",
                     "stop_sequences", "stream", "temperature", "top_p", "top_k", "thinking",
                     "metadata", "output_config"})
DROPPED = frozenset(ENDPOINTS["messages"].dropped_when_translated)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
ERROR_TYPES = frozenset({"invalid_request_error", "authentication_error", "billing_error",
                         "permission_error", "not_found_error", "request_too_large",
                         "rate_limit_error", "api_error", "timeout_error", "overloaded_error"})
_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error",
                 529: "overloaded_error"}


# -- request ----------------------------------------------------------------------------------

def to_openai(body: dict[str, Any], dialect: str | None = None, can_search: bool = False,
              dropped: list[str] | None = None) -> dict[str, Any]:
    """The OpenAI chat request for a valid Anthropic Messages request; BadRequest names what
    cannot be expressed. `dialect` is the provider's: reasoning state this gateway carried for
    it in thinking blocks goes back to it (see the module docstring). `can_search`: the
    provider has a web search of its own; the tools left out are named in `dropped`."""
    for key in body:
        if key not in HANDLED and key not in DROPPED:
            raise BadRequest(f"'{key}' is only supported with Anthropic models.", param=key)
    if body["max_tokens"] < 1:
        raise BadRequest("'max_tokens' must be at least 1 with this model.", param="max_tokens")
    out: dict[str, Any] = {"model": body["model"]}
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    held: list[dict[str, Any]] = []             # system turns waiting for their place
    for i, turn in enumerate(body["messages"]):
        converted = _turn(turn, i, dialect)
        if turn["role"] == "system":
            held.extend(converted)
            continue
        if held:
            # Tool messages must directly follow the assistant's tool calls: an instruction
            # given between the call and its result goes after the results.
            k = 0
            while k < len(converted) and converted[k]["role"] == "tool":
                k += 1
            converted[k:k] = held
            held = []
        messages.extend(converted)
    messages.extend(held)
    out["messages"] = messages
    out["max_completion_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream") is True:
        out["stream"] = True
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    _tools(body, out, can_search, dropped if dropped is not None else [])
    effort = _effort(body)
    if effort is not None:
        out["reasoning_effort"] = effort
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": fmt["schema"]}}
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(b["text"] for b in system or () if b.get("text"))


def _turn(turn: dict[str, Any], i: int, dialect: str | None) -> list[dict[str, Any]]:
    role, content = turn["role"], turn["content"]
    if role == "system":
        text = _system_turn_text(content, f"messages[{i}].content")
        return [{"role": "system", "content": text}] if text else []
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "user":
        return _user_turn(content, f"messages[{i}].content")
    return _assistant_turn(content, f"messages[{i}].content", dialect)


def _system_turn_text(content: Any, param: str) -> str:
    """The text of a `system` turn inside `messages`: a string or text blocks only."""
    if isinstance(content, str):
        return content
    for j, block in enumerate(content):
        if block["type"] != "text":
            raise BadRequest(f"'{param}[{j}]': a system turn can hold text blocks only.",
                             param=f"{param}[{j}]")
    return "\n".join(b["text"] for b in content if b["text"])


def _user_turn(blocks: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{param}[{j}]"
        kind = block["type"]
        if kind == "tool_result":
            text, images = _result_content(block.get("content"), f"{where}.content")
            if block.get("is_error"):
                text = f"Error: {text}" if text else "Error"
            tools.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                          "content": text})
            parts.extend(images)
        elif kind == "text":
            if block["text"]:
                parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(block["source"], f"{where}.source"))
        elif kind == "document":
            parts.append(_document(block["source"], f"{where}.source"))
        else:
            raise BadRequest(f"'{where}': a '{kind}' block cannot be in a user turn.",
                             param=where)
    out = list(tools)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _result_content(content: Any, param: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts, images = [], []
    for k, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "image" and isinstance(block.get("source"), dict):
            images.append(_image(block["source"], f"{param}[{k}].source"))
        else:
            raise BadRequest(f"'{param}[{k}]': tool results can hold text and images only.",
                             param=f"{param}[{k}]")
    return "\n".join(texts), images


def _image(source: dict[str, Any], param: str) -> dict[str, Any]:
    if source["type"] == "url":
        url = source.get("url")
        if not isinstance(url, str) or not cp.is_http_url(url):
            raise BadRequest(f"'{param}.url' must be an http(s) URL.", param=f"{param}.url")
        return {"type": "image_url", "image_url": {"url": url}}
    media, data = source.get("media_type"), source.get("data")
    if not isinstance(media, str) or not media or not isinstance(data, str) or not data:
        raise BadRequest(f"'{param}': a base64 image needs 'media_type' and 'data'.",
                         param=param)
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}


def _document(source: dict[str, Any], param: str) -> dict[str, Any]:
    media, data = source.get("media_type"), source.get("data")
    if source["type"] != "base64" or media != "application/pdf" or not data:
        raise BadRequest(f"'{param}': only base64 PDF documents can be sent to this model.",
                         param=param)
    return {"type": "file", "file": {"filename": "document.pdf",
                                     "file_data": f"data:application/pdf;base64,{data}"}}


def _assistant_turn(blocks: list[dict[str, Any]], param: str,
                    dialect: str | None) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []          # thinking blocks to give back to the provider
    signed: dict[str, str] = {}                 # tool_use id -> thought signature
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(cp.tool_call(None, block["id"], block["name"],
                                      cp.arguments_json(block.get("input"))))
        elif kind == "thinking":
            state = for_dialect(block.get("signature"), dialect)
            if state is not None:
                carried += thinking_blocks(state)
                signed.update(signatures(state))
        elif kind == "redacted_thinking":
            continue
        else:
            where = f"{param}[{j}]"
            raise BadRequest(f"'{where}': a '{kind}' block cannot be in an assistant turn.",
                             param=where)
    text = "".join(texts)
    if not text and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if carried:
        message["thinking_blocks"] = carried
    for call in calls:
        if call["id"] in signed:
            sign_call(call, signed[call["id"]])
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tools(body: dict[str, Any], out: dict[str, Any], can_search: bool,
           dropped: list[str]) -> None:
    tools = body.get("tools") or []
    declared = []
    defined: set[str] = set()                  # names of the tools Anthropic defines
    for tool in tools:
        kind = tool.get("type")
        if kind not in (None, "custom"):
            defined.add(str(tool.get("name") or kind))
            if str(kind).startswith("web_search_"):
                options = hosted_search.web_search(tool, can_search, dropped)
                if options is not None:
                    out["web_search_options"] = options
            else:
                # run by Anthropic, or shaped by Anthropic for its own models: this provider
                # has no equivalent
                dropped.append(str(tool.get("name") or kind))
            continue
        fn: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            fn["description"] = tool["description"]
        declared.append({"type": "function", "function": fn})
    if declared:
        out["tools"] = declared
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice["type"]
    if kind == "none":
        out.pop("web_search_options", None)
    if kind == "tool" and choice.get("name") in defined:
        return          # forcing a defined tool: the provider decides (search) or lacks it
    if not declared:
        if kind in ("any", "tool") and not defined:
            raise BadRequest(f"'tool_choice' is '{kind}' but no tools were given.",
                             param="tool_choice")
        return
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    else:
        name = choice.get("name")
        if name not in {t["function"]["name"] for t in declared}:
            raise BadRequest(f"'tool_choice.name': '{name}' is not one of the tools.",
                             param="tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _effort(body: dict[str, Any]) -> str | None:
    effort = (body.get("output_config") or {}).get("effort")
    if isinstance(effort, str):
        if effort not in EFFORTS:
            raise BadRequest(f"'output_config.effort' value '{effort}' is not supported.",
                             param="output_config.effort")
        return EFFORTS[effort]
    thinking = body.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens") or 0
    if budget >= body["max_tokens"]:
        raise BadRequest("'max_tokens' must be greater than 'thinking.budget_tokens'.",
                         param="max_tokens")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


# -- answer -----------------------------------------------------------------------------------

def stop_reason(finish: Any, has_tools: bool = False) -> str:
    reason = STOP_REASONS.get(finish, "end_turn")
    return "tool_use" if has_tools and reason == "end_turn" else reason


def tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI arguments (a JSON string) as Anthropic's input object; `{}` when empty. Text
    that is not a JSON object is kept under `_raw_arguments` rather than lost."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def usage_block(usage: Usage, cost: float | None = None) -> dict[str, Any]:
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    out: dict[str, Any] = {"input_tokens": usage.prompt_tokens - cached - written,
                           "cache_creation_input_tokens": written,
                           "cache_read_input_tokens": cached,
                           "output_tokens": usage.completion_tokens}
    if cost is not None:
        out["cost"] = cost
    return out


def to_message(completion: dict[str, Any], model_id: str, usage: Usage,
               cost: float, carry: str | None = None) -> dict[str, Any]:
    """The Anthropic message for a chat.completion; with `carry` (the provider's dialect) the
    provider's own reasoning state rides in the leading thinking block's signature."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    calls = [_with_block_id(c) for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    state = carried_state({**msg, "tool_calls": calls}) if carry else {}
    signature = encode_carried(carry, state) if carry and state else ""
    reasoning = msg.get("reasoning_content")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    if reasoning or signature:
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    text = cp.text_of(msg.get("content")) or msg.get("refusal") or ""
    if text:
        content.append({"type": "text", "text": text})
    for call in calls:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call["id"], "name": fn.get("name") or "",
                        "input": tool_input(fn.get("arguments"))})
    return {"id": "msg_" + cp.new_id(""), "type": "message", "role": "assistant",
            "model": model_id, "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason"), bool(calls)),
            "stop_sequence": None, "usage": usage_block(usage, cost)}


def _with_block_id(call: dict[str, Any]) -> dict[str, Any]:
    """A chat tool call with the id its tool_use block shows (and the client sends back)."""
    return dict(call, id=cp.safe_id(call.get("id") or cp.new_id("toolu_")))


# -- stream -----------------------------------------------------------------------------------

def event(data: dict[str, Any]) -> bytes:
    return encode(fastjson.dumps(data), data["type"])


def error_type(status: int, type: str | None = None) -> str:
    """Anthropic's error type for a failure: its own type when it already is one, else by
    HTTP status."""
    if type in ERROR_TYPES:
        return type
    return _STATUS_TYPES.get(status, "invalid_request_error" if 400 <= status < 500
                             else "api_error")


def error_event(status: int, message: str, type: str | None = None) -> bytes:
    return event({"type": "error", "error": {"type": error_type(status, type),
                                             "message": message}})


class EventWriter:
    """OpenAI chunks in, Anthropic stream events out (as SSE bytes); one per stream.
    Only the first choice is translated (Anthropic answers once per request). With `carry`
    (the provider's dialect) its reasoning state rides in a thinking block's signature."""

    def __init__(self, model_id: str, carry: str | None = None) -> None:
        self.model_id = model_id
        self.carry = carry
        self.pending: dict[str, Any] = {}       # state for the open thinking block
        self.started = False
        self.index = -1                         # index of the newest content block
        self.open: str | None = None            # kind of the open block
        self.tool_blocks: dict[int, int] = {}   # OpenAI tool-call index -> block index
        self.finish: Any = None
        self.has_tools = False

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            out.append(self._start(chunk.get("usage")))
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""},
                           out)
                out.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
            if self.carry and delta.get("thinking_blocks"):
                self._carried(carried_state({"thinking_blocks": delta["thinking_blocks"]}),
                              out)
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._open("text", {"type": "text", "text": ""}, out)
                    out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool(call, out)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self._close(out)
        return out

    def end(self, usage: Usage, cost: float) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            out.append(self._start(None))
        self._close(out)
        out.append(event({"type": "message_delta",
                          "delta": {"stop_reason": stop_reason(self.finish, self.has_tools),
                                    "stop_sequence": None},
                          "usage": usage_block(usage, cost)}))
        out.append(event({"type": "message_stop"}))
        return out

    def _start(self, usage: Any) -> bytes:
        self.started = True
        known = usage_block(Usage.from_openai(usage)) if isinstance(usage, dict) else \
            usage_block(Usage())
        known["output_tokens"] = 0
        return event({"type": "message_start", "message": {
            "id": "msg_" + cp.new_id(""), "type": "message", "role": "assistant",
            "model": self.model_id, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": known}})

    def _open(self, kind: str, skeleton: dict[str, Any], out: list[bytes]) -> None:
        if self.open == kind and kind != "tool_use":
            return
        self._close(out)
        self.index += 1
        self.open = kind
        out.append(event({"type": "content_block_start", "index": self.index,
                          "content_block": skeleton}))

    def _close(self, out: list[bytes]) -> None:
        if self.open is not None:
            if self.open == "thinking" and self.pending and self.carry:
                # as Anthropic streams it: the signature last, just before the block stops
                out.append(self._delta({"type": "signature_delta",
                                        "signature": encode_carried(self.carry,
                                                                    self.pending)}))
                self.pending = {}
            out.append(event({"type": "content_block_stop", "index": self.index}))
            self.open = None

    def _carried(self, state: dict[str, Any], out: list[bytes]) -> None:
        """Provider state for the open thinking block, or for a thinking block of its own
        (no text) when none is open."""
        if not state:
            return
        if self.open != "thinking":
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        merge_carried(self.pending, state)

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        return event({"type": "content_block_delta",
                      "index": self.index if index is None else index, "delta": delta})

    def _tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index", 0)
        fn = call.get("function") or {}
        block = self.tool_blocks.get(position)
        if block is None:
            self.has_tools = True
            call = _with_block_id(call)
            if self.carry:
                # a signature arrives with its call: the thinking block before the call keeps it
                self._carried(carried_state({"tool_calls": [call]}), out)
            self._open("tool_use", {"type": "tool_use", "id": call["id"],
                                    "name": fn.get("name") or "", "input": {}}, out)
            block = self.tool_blocks[position] = self.index
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A fragment of a call whose block was closed still goes to that block's index.
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments},
                                   block))
