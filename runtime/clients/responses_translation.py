"""The OpenAI Responses API spoken by clients, translated to and from OpenAI chat (the hub form)
for providers that do not serve Responses natively.

Request (`to_chat`): `instructions` becomes a leading system message; `input` (a string, or
items) becomes chat messages: message items (roles user/assistant/system/developer; parts
input_text/output_text/refusal, input_image with a URL, input_file with file_data or file_id,
input_audio), `function_call` items (joined into the preceding assistant turn as tool_calls,
keyed by `call_id`; a `namespace` on the item selects the flattened name, see below) and
`function_call_output` items (one `tool` message each). A reasoning item this gateway wrote
for the same provider (see Reasoning state below) gives its thinking state back to the next
assistant message; any other reasoning item (another provider's opaque state) is dropped. A
compaction item made by this gateway (see `compaction_item`) becomes a system message with
its summary; one made by another provider, `item_reference` and hosted-tool items are 400s
naming the item. Function tools are
flat in Responses and nested in chat. `namespace` tool groups (Codex sends MCP servers so)
become one function tool per member, named by `flat_name` (`<namespace>__<name>`, within the
64 characters and the alphabet every provider accepts); `ToolPlan.names` maps those names back
so answers and streams carry the original `name` and `namespace`. The hosted `web_search` tool
becomes chat's `web_search_options` when the provider has its own web search (the adapter maps
it: Anthropic's web_search server tool, Gemini's googleSearch grounding) and is otherwise
dropped and named in `ToolPlan.dropped`; other hosted tools are a 400. `text.format` json_schema /
json_object becomes `response_format`; `max_output_tokens`, `temperature`, `top_p`,
`reasoning.effort`, `parallel_tool_calls`, `user`, `safety_identifier`, `prompt_cache_key`
map one to one (the provider's descriptor drops what it has no use for); `store`, `include`,
`truncation`, `metadata`, `client_metadata`, `text.verbosity`, `reasoning.summary`,
`max_tool_calls` and `service_tier` are dropped (the gateway keeps no state; the rest has no
chat equivalent that changes the answer); `background`, `conversation` and `prompt` need
server-side state and are 400s.

Answer (`from_chat`): a `chat.completion` becomes a Response object: a reasoning item (from
`reasoning_content`, and carrying the provider's thinking state when asked), a message item
with `output_text` (and `refusal`) parts, and one `function_call` item per tool call;
`finish_reason` length/content_filter make the status `incomplete` with
`incomplete_details.reason` max_output_tokens/content_filter; usage is renamed (input/output
tokens, `input_tokens_details.{cached_tokens,cache_write_tokens}`,
`output_tokens_details.reasoning_tokens`).

Streams (`ResponseEvents`): an explicit state machine from chat chunks to Responses events,
each `{"type", "sequence_number", ...}` with sequence numbers from 0: response.created,
response.in_progress, then per output item output_item.added, its content events
(content_part.added / output_text.delta / output_text.done / content_part.done for text,
reasoning_text.delta/done for reasoning, function_call_arguments.delta/done for tool calls),
output_item.done; a text or reasoning item is closed when another kind of output starts, tool
calls at the end; finally response.completed (or response.incomplete) with the whole response
and usage. `fail` ends a broken stream with an `error` event (carrying both the flat fields of
the SDK type and a nested `error` object, on which the Python SDK raises) and response.failed.

Reasoning state: a client that keeps no server state asks for
`include: ["reasoning.encrypted_content"]` and sends reasoning items back (Codex does). A
translated provider's own thinking state then rides in the reasoning item's
`encrypted_content`, in the gateway's own encoding (runtime/clients/reasoning_state.py,
tagged with the provider's dialect): Anthropic's signed thinking blocks (chat's
`thinking_blocks`) and Gemini's thought signatures by call id (chat's
`tool_calls[].extra_content.google.thought_signature`). In a stream, state that arrives
while a reasoning item is open joins it; state without one (a signature on a call with no
thought before it, a redacted block) gets a reasoning item of its own just before. Sent
back to the same dialect it becomes the next assistant message's `thinking_blocks` and its
calls' signatures again; a native Responses provider never receives these items
(`own_reasoning_dropped`).

Compaction (`compact_request`, `compacted`): the conversation is rendered as a transcript and
summarised by the chat model; the answer keeps every user message verbatim, followed by one
`compaction` item whose `encrypted_content` is this gateway's own encoding of the summary
(`tmc1.` + base64url UTF-8; readable, not encrypted) that later requests turn back into context.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime import fastjson
from runtime.clients import hosted_search
from runtime.clients.reasoning_state import (
    carried_state,
    decode_carried,
    encode_carried,
    for_dialect,
    merge_carried,
    sign_call,
    signatures,
    thinking_blocks,
)
from runtime.errors import BadRequest

COMPACTION_PREFIX = "tmc1."
SUMMARY_HEADER = "Summary of the earlier part of this conversation:\n"
COMPACT_INSTRUCTIONS = (
    "You compact conversations. Write a concise but complete summary of the conversation "
    "transcript you are given, so that an assistant can continue the work from the summary "
    "alone: the user's goals and constraints, decisions made, facts learned, tool calls and "
    "their results that still matter, and open questions. Answer with the summary only.")
# The hosted web search tool under its current and earlier type names.
WEB_SEARCH_TOOLS = ("web_search", "web_search_2025_08_26", "web_search_preview",
                    "web_search_preview_2025_03_11")
# Gemini's limit (64, first character a letter or underscore) is the strictest of the
# providers' function-name rules; Anthropic allows 128, OpenAI chat 64.
NAME_LIMIT = 64
_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_STATEFUL = {"background": "runs a response in the background and stores it",
             "conversation": "reads and writes a stored conversation",
             "prompt": "reads a stored prompt template"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- compaction items ------------------------------------------------------------------------

def encode_summary(summary: str) -> str:
    return COMPACTION_PREFIX + base64.urlsafe_b64encode(summary.encode()).decode()


def decode_summary(content: Any) -> str | None:
    """The summary of a compaction item this gateway made, or None for any other."""
    if not isinstance(content, str) or not content.startswith(COMPACTION_PREFIX):
        return None
    try:
        return base64.urlsafe_b64decode(content[len(COMPACTION_PREFIX):]).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def compaction_item(summary: str) -> dict[str, Any]:
    return {"type": "compaction", "id": new_id("cmp"), "encrypted_content": encode_summary(summary),
            "created_by": "tokmodel"}


def own_compactions_to_messages(items: Any) -> Any:
    """For a native Responses provider: this gateway's compaction items (which the provider
    cannot read) become developer messages carrying their summary; all else is unchanged."""
    if not isinstance(items, list):
        return items
    out = []
    for item in items:
        summary = (decode_summary(item.get("encrypted_content"))
                   if isinstance(item, dict) and item.get("type") == "compaction" else None)
        out.append(item if summary is None else
                   {"type": "message", "role": "developer", "content": SUMMARY_HEADER + summary})
    return out


# -- reasoning items carrying a provider's own thinking state --------------------------------

def carries(body: Mapping[str, Any]) -> bool:
    """The client asked for reasoning state it keeps and sends back (stateless use)."""
    include = body.get("include")
    return isinstance(include, list) and "reasoning.encrypted_content" in include


def own_reasoning_dropped(items: Any) -> Any:
    """For a native Responses provider: reasoning items whose state this gateway wrote for
    another provider are left out (the provider could not decrypt them)."""
    if not isinstance(items, list):
        return items
    return [i for i in items if not (isinstance(i, dict) and i.get("type") == "reasoning"
                                     and decode_carried(i.get("encrypted_content")))]


# -- request ---------------------------------------------------------------------------------

def flat_name(namespace: str, name: str) -> str:
    """The function name a namespaced tool gets where tools cannot be grouped: readable when
    it fits, otherwise shortened with a hash of the whole so distinct tools stay distinct."""
    flat = f"{namespace.rstrip('_')}__{name}"
    if len(flat) <= NAME_LIMIT and _NAME_OK.match(flat):
        return flat
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:10]
    safe = _NAME_BAD_CHARS.sub("_", flat)
    if not _NAME_OK.match(safe):
        safe = "_" + safe
    return f"{safe[:NAME_LIMIT - 11]}_{digest}"


@dataclass
class ToolPlan:
    """The Responses tools as chat function tools: `names` maps a flattened name back to
    (namespace, name); `web_search` says the hosted web search was asked for; `dropped` names
    the hosted tools that were left out because the provider has no equivalent."""

    functions: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)
    web_search: dict[str, Any] | None = None
    dropped: list[str] = field(default_factory=list)


def tool_plan(body: Mapping[str, Any], web_search: bool) -> ToolPlan:
    """How the request's tools reach a chat provider; `web_search` says whether the provider
    has a web search of its own."""
    plan = ToolPlan()
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type")
        if kind == "function":
            plan.functions.append(_function(tool, f"tools[{i}]"))
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise BadRequest(f"tools[{i}].name: a namespace needs a name.",
                                 param=f"tools[{i}].name")
            for k, member in enumerate(tool.get("tools") or ()):
                where = f"tools[{i}].tools[{k}]"
                if not isinstance(member, dict) or member.get("type") != "function":
                    raise BadRequest(f"{where}: only function tools can be in a namespace for "
                                     "this model.", param=f"{where}.type")
                fn = _function(member, where)
                flat = flat_name(namespace, fn["function"]["name"])
                plan.names[flat] = (namespace, fn["function"]["name"])
                fn["function"]["name"] = flat
                plan.functions.append(fn)
        elif kind in WEB_SEARCH_TOOLS:
            options = hosted_search.web_search(tool, web_search, plan.dropped)
            if options is not None:
                plan.web_search = options
        else:
            raise BadRequest(f"tools[{i}]: the hosted tool '{kind}' is only available with "
                             "providers that serve the Responses API natively; use function "
                             "tools.", param=f"tools[{i}].type")
    return plan


def to_chat(body: dict[str, Any], plan: ToolPlan | None = None,
            dialect: str | None = None) -> dict[str, Any]:
    """The OpenAI chat request for a Responses request (see the module docstring); `plan`
    is `tool_plan(body, ...)` (by default: no provider web search); `dialect` is the
    provider's, whose own thinking state reasoning items may carry back."""
    for name, why in _STATEFUL.items():
        if body.get(name) not in (None, False):
            raise BadRequest(f"'{name}' is not supported for this model: it {why}, and this "
                             "gateway keeps no state.", param=name)
    chat: dict[str, Any] = {"model": body.get("model"),
                            "messages": chat_messages(body.get("input"), body.get("instructions"),
                                                      dialect)}
    if not chat["messages"]:
        raise BadRequest("'input' is required: a string or a non-empty list of input items.",
                         param="input")
    plan = plan if plan is not None else tool_plan(body, web_search=False)
    tools = plan.functions
    if plan.web_search is not None:
        chat["web_search_options"] = plan.web_search
    if tools:
        chat["tools"] = tools
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and (tools or choice == "none"):
        chat["tool_choice"] = choice
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key"):
        if body.get(name) is not None:
            chat[name] = body[name]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    return chat


def chat_messages(items: Any, instructions: Any = None,
                  dialect: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for Responses input items. Reasoning items carrying `dialect`'s own
    thinking state (see `encode_carried`) give the next assistant message its
    `thinking_blocks` and its tool calls their Gemini thought signatures; other reasoning
    items are dropped."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    thinking: list[dict[str, Any]] = []     # for the next assistant message
    signed: dict[str, str] = {}             # call id -> thought signature
    for i, item in enumerate(items or ()):
        where = f"input[{i}]"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, where))
            if messages[-1]["role"] == "assistant" and thinking:
                messages[-1]["thinking_blocks"] = thinking
            if messages[-1]["role"] != "system":
                thinking = []
        elif kind == "function_call":
            name = _str(item, "name", where)
            if isinstance(item.get("namespace"), str) and item["namespace"]:
                name = flat_name(item["namespace"], name)
            call: dict[str, Any] = {"id": _str(item, "call_id", where), "type": "function",
                                    "function": {"name": name,
                                                 "arguments": item.get("arguments") or "{}"}}
            if call["id"] in signed:
                sign_call(call, signed[call["id"]])
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if thinking:
                messages[-1].setdefault("thinking_blocks", []).extend(thinking)
                thinking = []
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": _str(item, "call_id", where),
                             "content": _text(item.get("output"), f"{where}.output")})
        elif kind == "compaction":
            summary = decode_summary(item.get("encrypted_content"))
            if summary is None:
                raise BadRequest(f"{where}: this compaction item was made by another provider "
                                 "and only that provider can read it; compact the conversation "
                                 "again with this model.", param=where)
            messages.append({"role": "system", "content": SUMMARY_HEADER + summary})
        elif kind == "reasoning":
            state = for_dialect(item.get("encrypted_content"), dialect)
            if state is not None:
                thinking += thinking_blocks(state)
                signed.update(signatures(state))
        elif kind == "item_reference":
            raise BadRequest(f"{where}: item references need stored responses, which this "
                             "gateway does not keep for this model; send the item itself.",
                             param=where)
        else:
            raise BadRequest(f"{where}: input items of type '{kind}' are only supported by "
                             "models whose provider serves the Responses API natively.",
                             param=f"{where}.type")
    return messages


def _str(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where}.{key}: a non-empty string is required.", param=f"{where}.{key}")
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise BadRequest(f"{where}.role: expected user, assistant, system or developer.",
                         param=f"{where}.role")
    content = item.get("content")
    if role != "user":
        # chat takes text only from these roles; developer is system for non-OpenAI providers
        return {"role": "system" if role == "developer" else role,
                "content": _text(content, f"{where}.content")}
    if isinstance(content, str):
        return {"role": "user", "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: a string or a list of content parts is required.",
                         param=f"{where}.content")
    return {"role": "user", "content": [_part(p, f"{where}.content[{k}]")
                                        for k, p in enumerate(content)]}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text") or ""}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise BadRequest(f"{where}: images by file_id need OpenAI's file storage; send an "
                             "image_url (https or data URL).", param=f"{where}.image_url")
        image = {"url": url}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}
        if not ("file_data" in file or "file_id" in file):
            raise BadRequest(f"{where}: a file needs file_data (or file_id); file_url is only "
                             "supported by providers that serve the Responses API natively.",
                             param=where)
        return {"type": "file", "file": file}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    raise BadRequest(f"{where}.type: unsupported content part '{kind}'.", param=f"{where}.type")


def _text(content: Any, where: str) -> str:
    """Text of a string or a list of text-bearing parts (input_text, output_text, refusal)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict):
                value = part.get("text", part.get("refusal"))
                if isinstance(value, str):
                    texts.append(value)
        return "".join(texts)
    raise BadRequest(f"{where}: a string or a list of text parts is required.", param=where)


def _function(tool: dict[str, Any], where: str) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.get("name")}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            fn[key] = tool[key]
    if not isinstance(fn["name"], str) or not fn["name"]:
        raise BadRequest(f"{where}.name: a function tool needs a name.", param=f"{where}.name")
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        name = choice["name"]
        if isinstance(choice.get("namespace"), str) and choice["namespace"]:
            name = flat_name(choice["namespace"], name)
        return {"type": "function", "function": {"name": name}}
    raise BadRequest(f"tool_choice: '{choice.get('type')}' is only supported by providers "
                     "that serve the Responses API natively.", param="tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description")
                  if fmt.get(k) is not None}
        if "name" not in schema or "schema" not in schema:
            raise BadRequest("text.format: json_schema needs 'name' and 'schema'.",
                             param="text.format")
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest(f"text.format.type: unsupported format '{fmt['type']}'.",
                     param="text.format.type")


# -- answer ----------------------------------------------------------------------------------

def response_usage(chat_usage: Any) -> dict[str, Any]:
    """Chat usage (prompt/completion tokens) in the Responses API's names."""
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    prompt = _n(usage.get("prompt_tokens"))
    completion = _n(usage.get("completion_tokens"))
    pdet = usage.get("prompt_tokens_details") or {}
    cdet = usage.get("completion_tokens_details") or {}
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": _n(pdet.get("cached_tokens")),
                                     "cache_write_tokens": _n(pdet.get("cache_write_tokens"))},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": _n(cdet.get("reasoning_tokens"))},
            "total_tokens": prompt + completion}


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def skeleton(body: dict[str, Any], client_model: str, response_id: str) -> dict[str, Any]:
    """The Response object's fields that echo the request, status in_progress."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return {"id": response_id, "object": "response", "created_at": int(time.time()),
            "status": "in_progress", "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "max_output_tokens":
            body.get("max_output_tokens"), "model": client_model, "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {},
            "store": body.get("store") is not False, "temperature": body.get("temperature"),
            "text": {"format": {"type": "text"}, **text},
            "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
            "top_p": body.get("top_p"), "truncation": "disabled", "usage": None,
            "user": body.get("user"), "metadata": body.get("metadata") or {}}


def _status(finish: Any) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _original_name(item: dict[str, Any], names: Mapping[str, tuple[str, str]]) -> None:
    """A function_call item named by `flat_name` gets back the client's namespace and name."""
    original = names.get(item["name"])
    if original is not None:
        item["namespace"], item["name"] = original


def from_chat(completion: dict[str, Any], response: dict[str, Any],
              names: Mapping[str, tuple[str, str]] | None = None,
              carry: str | None = None) -> dict[str, Any]:
    """Fill `response` (from `skeleton`) with the output and usage of a chat.completion;
    `names` is `ToolPlan.names`; with `carry` (the provider's dialect, when the client asked
    for `reasoning.encrypted_content`) the reasoning item carries the provider's own thinking
    state (see `encode_carried`)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    state = carried_state(message) if carry else {}
    if message.get("reasoning_content") or state:
        reasoning: dict[str, Any] = {"type": "reasoning", "id": new_id("rs"), "summary": []}
        if message.get("reasoning_content"):
            reasoning["content"] = [{"type": "reasoning_text",
                                     "text": message["reasoning_content"]}]
        if state and carry:
            reasoning["encrypted_content"] = encode_carried(carry, state)
        output.append(reasoning)
    parts = []
    if message.get("content"):
        parts.append(_text_part(message["content"]))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append({"type": "message", "id": new_id("msg"), "role": "assistant",
                       "status": "completed", "content": parts})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        item = {"type": "function_call", "id": new_id("fc"),
                "call_id": call.get("id") or new_id("call"), "name": fn.get("name"),
                "arguments": fn.get("arguments") or "{}", "status": "completed"}
        _original_name(item, names or {})
        output.append(item)
    status, details = _status(choice.get("finish_reason"))
    response.update(output=output, status=status, incomplete_details=details,
                    usage=response_usage(completion.get("usage")))
    return response


# -- streams ---------------------------------------------------------------------------------

class ResponseEvents:
    """Chat chunks in, Responses stream events out (see the module docstring). Each call
    returns the events to send now, in order."""

    def __init__(self, response: dict[str, Any],
                 names: Mapping[str, tuple[str, str]] | None = None,
                 carry: str | None = None) -> None:
        self.response = response
        self._names = names or {}                     # ToolPlan.names
        self._carry = carry                           # as in `from_chat`
        self._state: dict[int, dict[str, Any]] = {}   # reasoning output_index -> its state
        self._seq = 0
        self._items: dict[int, dict[str, Any]] = {}   # output_index -> item (all, in order)
        self._open: int | None = None                 # the open text or reasoning item
        self._calls: dict[int, int] = {}              # chat tool index -> output_index
        self._finish: Any = None

    def _event(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.response))

    def start(self) -> list[dict[str, Any]]:
        return [self._event("response.created", response=self._snapshot()),
                self._event("response.in_progress", response=self._snapshot())]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._reasoning(delta["reasoning_content"])
            if self._carry and delta.get("thinking_blocks"):
                out += self._carried(carried_state({"thinking_blocks":
                                                    delta["thinking_blocks"]}))
            if delta.get("content"):
                out += self._text("output_text", delta["content"])
            if delta.get("refusal"):
                out += self._text("refusal", delta["refusal"])
            for call in delta.get("tool_calls") or ():
                out += self._call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self, usage: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_open()
        for index in sorted(self._calls.values()):
            out += self._close_call(index)
        status, details = _status(self._finish)
        self.response.update(status=status, incomplete_details=details, usage=usage,
                             output=[self._items[i] for i in sorted(self._items)])
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + [self._event(kind, response=self._snapshot())]

    def fail(self, message: str, code: str, usage: dict[str, Any] | None) -> list[dict[str, Any]]:
        error = {"code": code, "message": message}
        self.response.update(status="failed", error=error, usage=usage,
                             output=[self._items[i] for i in sorted(self._items)])
        return [self._event("error", code=code, message=message, param=None,
                            error={**error, "type": code, "param": None}),
                self._event("response.failed", response=self._snapshot())]

    # -- items --

    def _add(self, item: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        index = len(self._items)
        self._items[index] = item
        return index, [self._event("response.output_item.added", output_index=index,
                                   item=json.loads(json.dumps(item)))]

    def _reasoning(self, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._open is None or self._items[self._open]["type"] != "reasoning":
            out += self._close_open()
            self._open, added = self._add({"type": "reasoning", "id": new_id("rs"),
                                           "summary": [], "content": [], "status": "in_progress"})
            out += added
            self._items[self._open]["content"].append({"type": "reasoning_text", "text": ""})
        item = self._items[self._open]
        item["content"][0]["text"] += text
        return out + [self._event("response.reasoning_text.delta", item_id=item["id"],
                                  output_index=self._open, content_index=0, delta=text)]

    def _carried(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """Provider thinking state for the open reasoning item, or for a reasoning item of its
        own (summary and content empty) when none is open."""
        if not state:
            return []
        if self._open is not None and self._items[self._open]["type"] == "reasoning":
            merge_carried(self._state.setdefault(self._open, {}), state)
            return []
        out = self._close_open()
        self._open, added = self._add({"type": "reasoning", "id": new_id("rs"),
                                       "summary": [], "status": "in_progress"})
        self._state[self._open] = state
        return out + added + self._close_open()

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._open is None or self._items[self._open]["type"] != "message":
            out += self._close_open()
            self._open, added = self._add({"type": "message", "id": new_id("msg"),
                                           "role": "assistant", "status": "in_progress",
                                           "content": []})
            out += added
        index = self._open
        item = self._items[index]
        parts = item["content"]
        if not parts or parts[-1]["type"] != kind:
            part = _text_part("") if kind == "output_text" else {"type": "refusal",
                                                                  "refusal": ""}
            if parts:
                out += self._close_part(index, len(parts) - 1)
            parts.append(part)
            out.append(self._event("response.content_part.added", item_id=item["id"],
                                   output_index=index, content_index=len(parts) - 1,
                                   part=dict(part)))
        key = "text" if kind == "output_text" else "refusal"
        parts[-1][key] += text
        name = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        extra = {"logprobs": []} if kind == "output_text" else {}
        return out + [self._event(name, item_id=item["id"], output_index=index,
                                  content_index=len(parts) - 1, delta=text, **extra)]

    def _close_part(self, index: int, k: int) -> list[dict[str, Any]]:
        item = self._items[index]
        part = item["content"][k]
        common = {"item_id": item["id"], "output_index": index, "content_index": k}
        if part["type"] == "output_text":
            done = self._event("response.output_text.done", text=part["text"], logprobs=[],
                               **common)
        else:
            done = self._event("response.refusal.done", refusal=part["refusal"], **common)
        return [done, self._event("response.content_part.done", part=dict(part), **common)]

    def _close_open(self) -> list[dict[str, Any]]:
        index, self._open = self._open, None
        if index is None:
            return []
        item = self._items[index]
        out: list[dict[str, Any]] = []
        if item["type"] == "message":
            out += self._close_part(index, len(item["content"]) - 1)
        elif item.get("content"):
            out.append(self._event("response.reasoning_text.done", item_id=item["id"],
                                   output_index=index, content_index=0,
                                   text=item["content"][0]["text"]))
        if item["type"] == "reasoning" and self._carry and self._state.get(index):
            item["encrypted_content"] = encode_carried(self._carry, self._state[index])
        item["status"] = "completed"
        return out + [self._event("response.output_item.done", output_index=index,
                                  item=json.loads(json.dumps(item)))]

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        tool_index = call.get("index", 0)
        fn = call.get("function") or {}
        out: list[dict[str, Any]] = []
        index = self._calls.get(tool_index)
        if index is None:
            if self._carry:
                # a signature arrives with its call: the reasoning before the call keeps it
                out += self._carried(carried_state({"tool_calls": [call]}))
            out += self._close_open()
            item = {"type": "function_call", "id": new_id("fc"),
                    "call_id": call.get("id") or new_id("call"), "name": fn.get("name") or "",
                    "arguments": "", "status": "in_progress"}
            _original_name(item, self._names)
            index, added = self._add(item)
            self._calls[tool_index] = index
            out += added
        item = self._items[index]
        fragment = fn.get("arguments") or ""
        if fragment:
            item["arguments"] += fragment
            out.append(self._event("response.function_call_arguments.delta",
                                   item_id=item["id"], output_index=index, delta=fragment))
        return out

    def _close_call(self, index: int) -> list[dict[str, Any]]:
        item = self._items[index]
        item["arguments"] = item["arguments"] or "{}"
        item["status"] = "completed"
        return [self._event("response.function_call_arguments.done", item_id=item["id"],
                            output_index=index, name=item["name"],
                            arguments=item["arguments"]),
                self._event("response.output_item.done", output_index=index,
                            item=dict(item))]


def sse(event: dict[str, Any], name: str | None = None) -> bytes:
    """One Responses SSE frame: `event: <type>` and the JSON data."""
    return (f"event: {name or event['type']}\ndata: ".encode()
            + fastjson.dumps(event) + b"\n\n")


# -- compaction ------------------------------------------------------------------------------

def compact_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request that summarises the conversation of a compact request."""
    messages = chat_messages(body.get("input"), body.get("instructions"))
    if not messages:
        raise BadRequest("'input' is required: the conversation to compact.", param="input")
    return {"model": body.get("model"),
            "messages": [{"role": "system", "content": COMPACT_INSTRUCTIONS},
                         {"role": "user", "content": transcript(messages)}]}


def transcript(messages: list[dict[str, Any]]) -> str:
    lines = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text") or f"[{p.get('type')}]" for p in content)
        if m["role"] == "tool":
            lines.append(f"tool result ({m.get('tool_call_id')}): {content}")
            continue
        if content:
            lines.append(f"{m['role']}: {content}")
        for call in m.get("tool_calls") or ():
            fn = call["function"]
            lines.append(f"assistant called {fn['name']}({fn['arguments']}) "
                         f"[{call['id']}]")
    return "\n".join(lines)


def kept_user_messages(items: Any) -> Iterator[dict[str, Any]]:
    """The user messages of a compact request's input, verbatim, as output message items."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items or ():
        if item.get("role") != "user" or item.get("type") not in (None, "message"):
            continue
        content = item.get("content")
        parts = ([{"type": "input_text", "text": content}] if isinstance(content, str)
                 else content)
        yield {"type": "message", "id": item.get("id") or new_id("msg"), "role": "user",
               "status": "completed", "content": parts}


def compacted(body: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """The `response.compaction` object for a compact request and the summary's completion."""
    choices = completion.get("choices") or [{}]
    summary = ((choices[0] or {}).get("message") or {}).get("content") or ""
    return {"id": new_id("cmp"), "object": "response.compaction",
            "created_at": int(time.time()),
            "output": [*kept_user_messages(body.get("input")), compaction_item(summary)],
            "usage": response_usage(completion.get("usage"))}
