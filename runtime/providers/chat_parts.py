"""Pieces every translating chat adapter shares: reading an OpenAI chat request, and writing
OpenAI chat answers, chunks and usage.

Reading: the request was validated against the generated OpenAI model, so shapes are known;
what a provider cannot express raises `BadRequest` naming the field (`messages[2].content[1]`),
never a 500. Writing: `completion`, `chunk` and `usage` build the exact OpenAI shapes,
usage in OpenAI's sense (prompt includes cache reads and writes, completion includes
reasoning), which is what pricing reads.
"""

from __future__ import annotations

import binascii
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runtime.errors import BadRequest

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),(?P<data>.*)$",
                       re.DOTALL)
# Anthropic tool ids must match this; other ids are made to fit, the same way on both sides.
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

# A chunk may carry, under this key, usage the provider reported before its end (Anthropic's
# input count in message_start): for the meter only, removed before the client sees the chunk
# (runtime/billing/metered_stream.py), so a stream the client leaves is charged from it.
EARLY_USAGE = "_early_usage"

STRUCTURAL = ("messages", "tools", "tool_choice", "parallel_tool_calls", "response_format",
              "stream", "stream_options", "modalities", "model")


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + secrets.token_hex(length // 2)


def safe_id(value: str) -> str:
    return _ID_UNSAFE.sub("_", value) or "id"


def text_of(content: Any) -> str:
    """The text of a string content or of a list of text (and refusal) parts, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") if part.get("type") == "text" else part.get("refusal")
                if isinstance(text, str):
                    out.append(text)
        return "\n".join(t for t in out if t)
    return ""


@dataclass(frozen=True, slots=True)
class DataUrl:
    mime: str
    data: str   # base64, as received


def parse_data_url(url: str, param: str) -> DataUrl | None:
    """A `data:` URL split into MIME type and base64 payload; None for other URLs."""
    if not url.startswith("data:"):
        return None
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in (match.group("params") or ""):
        raise BadRequest(f"'{param}' must be a base64 data URL (data:<mime>;base64,...) "
                         "or an http(s) URL.", param=param)
    data = re.sub(r"\s+", "", match.group("data"))
    try:
        binascii.a2b_base64(data[:4096] + "=" * (-len(data[:4096]) % 4))
    except binascii.Error:
        raise BadRequest(f"'{param}' holds invalid base64 data.", param=param) from None
    return DataUrl(mime=(match.group("mime") or "application/octet-stream").lower(), data=data)


def is_http_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def tool_input(arguments: Any, param: str) -> dict[str, Any]:
    """OpenAI tool-call arguments (a JSON string) as the object native APIs want."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments, parse_constant=_no_constant)
    except (TypeError, ValueError):
        raise BadRequest(f"'{param}' must be a JSON-encoded object; got invalid JSON.",
                         param=param) from None
    if not isinstance(value, dict):
        raise BadRequest(f"'{param}' must encode a JSON object.", param=param)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def arguments_json(value: Any) -> str:
    """Native tool input as OpenAI's arguments string; `{}` when there is none."""
    if value is None or value == {}:
        return "{}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any] | None


def function_tools(body: dict[str, Any]) -> list[FunctionTool]:
    """The function tools of the request; other tool kinds cannot be translated."""
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise BadRequest(f"'tools[{i}]': only function tools can be sent to this model.",
                             param=f"tools[{i}]")
        params = fn.get("parameters")
        tools.append(FunctionTool(fn["name"], fn.get("description"),
                                  params if isinstance(params, dict) else None))
    return tools


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: str                        # auto | none | required
    names: tuple[str, ...] | None    # restricts callable functions; None = all


def tool_choice(body: dict[str, Any], tools: list[FunctionTool]) -> ToolChoice | None:
    """OpenAI tool_choice normalised; None when absent. Names must be declared tools."""
    choice = body.get("tool_choice")
    if choice is None:
        return None
    known = {t.name for t in tools}
    if isinstance(choice, str):
        if choice != "none" and not tools:
            raise BadRequest(f"'tool_choice' is '{choice}' but no tools were given.",
                             param="tool_choice")
        return ToolChoice(choice, None)
    kind = choice.get("type")
    if kind == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in known:
            raise BadRequest(f"'tool_choice.function.name': '{name}' is not one of the tools.",
                             param="tool_choice.function.name")
        return ToolChoice("required", (name,))
    if kind == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        mode = allowed.get("mode", "auto")
        names = []
        for i, tool in enumerate(allowed.get("tools") or ()):
            name = ((tool or {}).get("function") or {}).get("name") or (tool or {}).get("name")
            if name not in known:
                raise BadRequest(f"'tool_choice.allowed_tools.tools[{i}]' names no declared "
                                 "tool.", param=f"tool_choice.allowed_tools.tools[{i}]")
            names.append(name)
        if mode not in ("auto", "required") or not names:
            raise BadRequest("'tool_choice.allowed_tools' needs mode auto or required and at "
                             "least one tool.", param="tool_choice.allowed_tools")
        return ToolChoice(mode, tuple(names))
    raise BadRequest(f"'tool_choice.type' '{kind}' cannot be sent to this model.",
                     param="tool_choice.type")


@dataclass(frozen=True, slots=True)
class OutputFormat:
    kind: str                              # json_object | json_schema
    schema: dict[str, Any] | None = None
    name: str | None = None


def output_format(body: dict[str, Any]) -> OutputFormat | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return OutputFormat("json_object")
    spec = fmt.get("json_schema") or {}
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise BadRequest("'response_format.json_schema.schema' is required for this model.",
                         param="response_format.json_schema.schema")
    return OutputFormat("json_schema", schema, spec.get("name"))


def check_modalities(body: dict[str, Any]) -> None:
    modalities = body.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        raise BadRequest("'modalities': this model answers with text only.",
                         param="modalities")


def take_structural(body: dict[str, Any]) -> dict[str, Any]:
    """Remove and return the fields an adapter shapes by hand, so the descriptor's mapping
    sees only scalar parameters."""
    return {key: body.pop(key) for key in STRUCTURAL if key in body}


def drop_nulls(body: dict[str, Any]) -> None:
    """An explicit null means "not sent" (also the result of mapping a neutral value away)."""
    for key in [k for k, v in body.items() if v is None]:
        del body[key]
    for value in body.values():
        if isinstance(value, dict):
            drop_nulls(value)


def check_leftovers(body: dict[str, Any], native: Iterable[str], provider: str) -> None:
    """Every field left after the mapping must be one the provider knows; a field nobody
    mapped would otherwise be lost silently or rejected upstream with a worse message."""
    allowed = set(native)
    for key in body:
        if key not in allowed:
            raise BadRequest(f"'{key}' is not supported by provider '{provider}'.", param=key)


def prepare_scalars(body: dict[str, Any]) -> None:
    """Before the descriptor's mapping: a single stop string becomes a list."""
    if isinstance(body.get("stop"), str):
        body["stop"] = [body["stop"]]


def usage(prompt: int, completion: int, *, cached: int = 0, cache_write: int = 0,
          reasoning: int = 0, web_searches: int = 0) -> dict[str, Any]:
    """OpenAI's usage; hosted web searches the provider ran go in `server_tool_use` (as
    Anthropic reports them), present only when there were some."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write,
                                  "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0}}
    if web_searches:
        out["server_tool_use"] = {"web_search_requests": web_searches}
    return out


def message(content: str | None, reasoning: str | None, tool_calls: list[dict[str, Any]],
            refusal: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal,
                           "annotations": []}
    if reasoning:
        msg["reasoning_content"] = reasoning
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def completion(id: str, model: str, choices: list[dict[str, Any]],
               usage_: dict[str, Any]) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage_, "system_fingerprint": None}


class ChunkWriter:
    """OpenAI chunks of one stream: same id and created on each."""

    def __init__(self, id: str, model: str) -> None:
        self.id = id
        self.model = model
        self.created = int(time.time())

    def delta(self, delta: dict[str, Any], index: int = 0,
              finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": index, "delta": delta, "logprobs": None,
                             "finish_reason": finish}], "usage": None}

    def usage(self, usage_: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": [],
                "usage": usage_}


def tool_call(index: int | None, id: str, name: str, arguments: str) -> dict[str, Any]:
    call: dict[str, Any] = {"id": id, "type": "function",
                            "function": {"name": name, "arguments": arguments}}
    if index is not None:
        call = {"index": index, **call}
    return call
