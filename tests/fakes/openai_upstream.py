"""A strict fake OpenAI-compatible Chat Completions server for tests.

Contract
--------
``FakeOpenAI`` serves HTTP/1.1 (keep-alive, ``Content-Length`` or chunked bodies) on
127.0.0.1 from daemon threads of the test process, one thread per connection, so a few hundred
concurrent connections are fine. ``base_url`` is ``http://127.0.0.1:PORT/v1`` (the OpenAI SDK
convention: the base includes ``/v1``; ``base_path`` changes it, e.g. Groq's ``/openai/v1``).

Endpoints (relative to ``base_path``): ``POST /chat/completions``, ``GET /models``,
``GET /models/{id}``. Anything else: 404 ``Invalid URL (METHOD /path)``.

Every request is recorded in ``requests`` (``Received``) before it is judged. Then, in order:

1. ``Authorization: Bearer <api_key>`` or 401 ``invalid_api_key`` (``api_key=None``: no check).
2. The next pending scripted failure for this request, if any (see below).
3. ``Content-Type: application/json`` and a JSON object body, or 400.
4. Field checks as the real API does them, each a 400 ``invalid_request_error`` whose ``param``
   names the field: fields outside ``known_fields`` ("Unrecognized request argument supplied: X",
   default vocabulary ``DEFAULT_KNOWN_FIELDS``), fields in ``rejected_fields`` (a provider that
   refuses them, e.g. Groq and ``logprobs``; ``"messages[].name"`` refuses message names),
   ``max_tokens`` when ``max_tokens_field == "max_completion_tokens"`` (reasoning models),
   ``model``/``messages`` required, message roles and content parts, tool-call pairing (each
   ``tool`` message answers an id of the assistant ``tool_calls`` right before it, and every
   such id is answered before the conversation moves on), tool-call ``arguments`` must be a
   string, ``tools`` names and non-empty list, ``tool_choice``/``parallel_tool_calls`` only with
   ``tools``, ``stream_options`` only with ``stream: true``, ranges (``n`` 1..128,
   ``temperature`` 0..2, ``top_p`` 0..1, penalties -2..2, ``top_logprobs`` 0..20, token caps
   >= 1), ``stop`` at most 4, ``json_object`` needs the word "json" in the messages.
   With ``extra_forbidden`` a field outside ``known_fields`` is Mistral's answer instead: 422
   with ``{"object": "error", "message": {"detail": [{"type": "extra_forbidden", ...}]}}``.
   Explicit ``null`` is accepted for optional fields, as the real API does.
5. ``model`` must be in ``models`` (``models=None`` accepts any) or 404 ``model_not_found``.

Deterministic answers
---------------------
* Text: ``"echo: " + <text of the last user message>`` (string content, or text parts joined
  with a space); after a ``tool`` message, ``"echo: " + <tool message content>`` (system and
  developer messages after the last turn aside). With
  ``response_format`` of type ``json_object``/``json_schema`` the content is
  ``{"echo": "<that text>"}`` instead.
* Tool call (``content: null``, ``finish_reason: "tool_calls"``, arguments
  ``{"city": "Oslo"}``, id ``call_<random>``): when ``tools`` has a function tool and
  ``tool_choice`` is absent/``"auto"`` and the last message is a user message containing the
  word "weather" (first function tool), or ``tool_choice`` is ``"required"`` (first function
  tool) or names a function (that function). With ``tool_choice`` absent/``"auto"``, a line
  ``run: C`` in the last user message and a coding agent's shell tool declared (``Bash``,
  ``exec_command``, ...) is answered with a call of that tool running C instead (arguments in
  that tool's shape, see ``tests.fakes.shell_call``).
* ``stop`` cuts the text before the first stop string; ``max_tokens``/``max_completion_tokens``
  smaller than the reply's word count keeps that many words, ``finish_reason: "length"``.
* ``n`` choices with the same content (each tool call its own id).
* Usage: ``prompt_tokens`` = whitespace-separated words in all message texts (min 1),
  ``completion_tokens`` = words of the reply (of the arguments for a tool call) times ``n``,
  ``prompt_tokens_details.cached_tokens`` = the ``cached_tokens`` attribute.
* ``model`` in the answer is the model name received; shape as protocols.md §1.2.

Streaming (``stream: true``)
----------------------------
``text/event-stream`` with chunked transfer encoding, one ``data: <json>\\n\\n`` event per HTTP
chunk, written one at a time, ``chunk_delay`` seconds apart: a role chunk (``role:
"assistant"``, ``content: ""``; for tool calls the first tool-call delta with index, id, type,
name and ``arguments: ""``), one content chunk per word (word plus following whitespace; for
tool calls 3 argument fragments), a finish chunk (empty delta, ``finish_reason``), then, only
with ``stream_options.include_usage``, a usage chunk with ``choices: []``; earlier chunks carry
``usage: null``; then ``data: [DONE]``. With ``usage_in_last_chunk`` (Mistral) the usage is on
the (last) finish chunk instead, whether asked or not, and there is no usage chunk.
``keepalive_comments`` adds ``: keep-alive`` comments before and between events.
``omit_usage`` answers without any usage, whole (no ``usage`` field) or streamed (no usage
chunk, whatever ``stream_options`` asked), as some OpenAI-compatible servers do.
``empty_deltas`` (default 0) sends that many chunks with an empty ``content`` delta per choice
right after the role chunk, before any text (as servers do while a model thinks). With ``n`` > 1
each step has one chunk per choice.

Scripted behaviour
------------------
Scripts queue up and are used in order; each applies once. ``path`` (the full request path,
e.g. ``"/v1/models"``) limits a script to that path; by default it applies to any path.

* ``fail_next(status, body=None, headers=None)``: answer the next request with ``status``
  (default body: an OpenAI error envelope fitting the status; dicts are sent as JSON, str/bytes
  verbatim).
* ``invalid_json_next(body=...)``: 200 ``application/json`` whose body is not JSON.
* ``hang_next(seconds)``: wait before handling the next request (for client timeouts).
* ``cut_stream_after(n_chunks)``: the next valid streaming answer stops after ``n_chunks``
  content chunks by closing the connection mid-body (no finish chunk, usage or ``[DONE]``).
* ``error_in_stream_after(n, message=...)``: the next valid streaming answer sends ``n``
  content chunks, then ``data: {"error": {...,"type": "server_error"}}`` and ends the body.

The first three are taken by the next request that passes the auth check (any endpoint, before
body validation); the stream scripts by the next streaming chat request that passes validation.
``pending_scripts`` counts scripts not used yet. ``disconnects`` counts streams the client
abandoned before the end. ``errors`` collects exceptions raised by the fake itself (answered
with a 500); a fixture should assert it stays empty.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import string
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Self

from requests.structures import CaseInsensitiveDict

from .http_fake import read_body
from .shell_call import shell_call
from .sse import DONE, encode_comment, encode_event

OPENAI_CHAT_FIELDS: frozenset[str] = frozenset(
    {
        "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "stream", "stream_options", "n", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "reasoning_effort", "verbosity", "temperature", "top_p",
        "frequency_penalty", "presence_penalty", "logit_bias", "seed", "stop", "modalities",
        "audio", "prediction", "web_search_options", "store", "metadata", "service_tier",
        "user", "safety_identifier", "prompt_cache_key", "functions", "function_call",
    }
)  # fmt: skip
"""The chat request fields listed in protocols.md §1.1."""

OPENAI_SDK_EXTRA_FIELDS: frozenset[str] = frozenset(
    {"moderation", "prompt_cache_options", "prompt_cache_retention"}
)
"""Chat request fields the installed openai SDK (3.57) can send beyond protocols.md §1.1."""

DEFAULT_KNOWN_FIELDS: frozenset[str] = OPENAI_CHAT_FIELDS | OPENAI_SDK_EXTRA_FIELDS
"""Default vocabulary of ``FakeOpenAI``: what api.openai.com accepts."""

MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini")
TOOL_ARGUMENTS = json.dumps({"city": "Oslo"})
SYSTEM_FINGERPRINT = "fp_fake0001"

_PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_WORD_PIECE = re.compile(r"\S+\s*")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_BOOL_FIELDS = ("stream", "logprobs", "parallel_tool_calls", "store")
_STRING_FIELDS = ("user", "safety_identifier", "prompt_cache_key")
_OBJECT_FIELDS = ("logit_bias", "metadata", "audio", "prediction", "web_search_options")
# field: (integer only, minimum, maximum)
_RANGES: dict[str, tuple[bool, float | None, float | None]] = {
    "n": (True, 1, 128),
    "top_logprobs": (True, 0, 20),
    "max_tokens": (True, 1, None),
    "max_completion_tokens": (True, 1, None),
    "seed": (True, None, None),
    "temperature": (False, 0, 2),
    "top_p": (False, 0, 1),
    "frequency_penalty": (False, -2, 2),
    "presence_penalty": (False, -2, 2),
}
_ENUMS = {
    "reasoning_effort": ("none", "minimal", "low", "medium", "high", "xhigh"),
    "verbosity": ("low", "medium", "high"),
    "service_tier": ("auto", "default", "flex", "scale", "priority", "fast"),
}
_INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
_PRE_SCRIPTS = ("fail", "invalid_json", "hang", "cut_body")
_STREAM_SCRIPTS = ("cut", "stream_error")
_SOCKET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class Received:
    """One request as the fake received it."""

    method: str
    path: str
    """Request path without the query string."""
    headers: CaseInsensitiveDict[str]
    body: Any
    """The body parsed as JSON, or None when it is empty or not JSON."""
    raw: bytes
    query: str = ""


@dataclass
class _Script:
    kind: str
    path: str | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    n: int = 0
    message: str = ""


class _Reject(Exception):
    """An OpenAI API error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.envelope = {"error": {"message": message, "type": type, "param": param, "code": code}}


def _extra_forbidden(name: str, value: Any) -> _Reject:
    """Mistral's answer to a field it does not know: 422, its own error body (no `error`)."""
    err = _Reject(422, "Extra inputs are not permitted", param=name)
    err.envelope = {"object": "error", "message": {"detail": [
        {"type": "extra_forbidden", "loc": ["body", name], "msg": "Extra inputs are not permitted",
         "input": value}]}, "type": "invalid_request_error", "param": None, "code": None}
    return err


def error_envelope(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def default_error_body(status: int) -> dict[str, Any]:
    """The OpenAI error envelope a real upstream typically sends with ``status``."""
    if status == 401:
        return error_envelope("Incorrect API key provided.", code="invalid_api_key")
    if status == 403:
        return error_envelope(
            "You are not allowed to access this resource.", code="permission_denied"
        )
    if status == 404:
        return error_envelope("The requested resource was not found.", code="not_found")
    if status == 429:
        return error_envelope(
            "Rate limit reached for requests. Please try again later.",
            type="requests",
            code="rate_limit_exceeded",
        )
    if status == 503:
        return error_envelope(
            "The server is overloaded or not ready yet.", type="server_error", code="overloaded"
        )
    if status >= 500:
        return error_envelope(
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )
    return error_envelope(f"Request failed with status {status}.")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> _Reject:
    return _Reject(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_describe(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> _Reject:
    return _Reject(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid_value(param: str, value: Any, allowed: Iterable[str]) -> _Reject:
    options = ", ".join(f"'{a}'" for a in allowed)
    return _Reject(
        400,
        f"Invalid value: '{value}'. Supported values are: {options}.",
        param=param,
        code="invalid_value",
    )


def _empty_array(param: str) -> _Reject:
    return _Reject(
        400,
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
        "but got an empty array instead.",
        param=param,
        code="empty_array",
    )


def _text_of(content: Any, sep: str = " ") -> str:
    """Text of a message content: the string, or its text parts joined with `sep`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return sep.join(texts)
    return ""


def _check_content(param: str, role: str, content: Any, *, required: bool) -> None:
    if content is None:
        if required:
            raise _invalid_type(param, "a string or array of content parts", content)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid_type(param, "a string or array of content parts", content)
    if not content and role != "assistant":
        raise _empty_array(param)
    for k, part in enumerate(content):
        pp = f"{param}[{k}]"
        if not isinstance(part, dict):
            raise _invalid_type(pp, "an object", part)
        kind = part.get("type")
        if kind is None:
            raise _missing(f"{pp}.type")
        if kind not in _PART_TYPES[role]:
            raise _invalid_value(f"{pp}.type", kind, _PART_TYPES[role])
        if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
            raise _invalid_type(f"{pp}.{kind}", "a string", part.get(kind))
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise _missing(f"{pp}.image_url.url")


def _check_tool_calls(param: str, tool_calls: Any) -> list[str]:
    if not isinstance(tool_calls, list):
        raise _invalid_type(param, "an array", tool_calls)
    if not tool_calls:
        raise _empty_array(param)
    ids: list[str] = []
    for k, call in enumerate(tool_calls):
        cp = f"{param}[{k}]"
        if not isinstance(call, dict):
            raise _invalid_type(cp, "an object", call)
        for key in ("id", "type"):
            if key not in call:
                raise _missing(f"{cp}.{key}")
            if not isinstance(call[key], str):
                raise _invalid_type(f"{cp}.{key}", "a string", call[key])
        if call["type"] not in ("function", "custom"):
            raise _invalid_value(f"{cp}.type", call["type"], ("function", "custom"))
        if call["type"] == "function":
            fn = call.get("function")
            if not isinstance(fn, dict):
                raise _missing(f"{cp}.function")
            for key in ("name", "arguments"):
                if key not in fn:
                    raise _missing(f"{cp}.function.{key}")
                if not isinstance(fn[key], str):
                    raise _invalid_type(f"{cp}.function.{key}", "a string", fn[key])
        ids.append(call["id"])
    return ids


def _check_messages(messages: Any, rejected: frozenset[str]) -> None:
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise _empty_array("messages")
    open_calls: list[str] = []  # ids of the latest assistant tool_calls still being answered
    pending: list[str] = []  # of those, the ids without a tool message yet
    pending_at = 0
    for i, msg in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _invalid_type(p, "an object", msg)
        role = msg.get("role")
        if role is None:
            raise _missing(f"{p}.role")
        if role not in MESSAGE_ROLES:
            raise _invalid_value(f"{p}.role", role, MESSAGE_ROLES)
        if "name" in msg:
            if "messages[].name" in rejected:
                raise _Reject(
                    400,
                    f"'{p}.name' : property 'name' is unsupported",
                    param=f"{p}.name",
                    code="unsupported_parameter",
                )
            if not isinstance(msg["name"], str):
                raise _invalid_type(f"{p}.name", "a string", msg["name"])
        if role != "tool" and pending:
            raise _Reject(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}",
                param=f"messages[{pending_at}].role",
            )
        if role != "tool":
            open_calls = []
        if role == "assistant":
            _check_content(f"{p}.content", role, msg.get("content"), required=False)
            if msg.get("tool_calls") is not None:
                open_calls = _check_tool_calls(f"{p}.tool_calls", msg["tool_calls"])
                pending = list(open_calls)
                pending_at = i
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if call_id is None:
                raise _missing(f"{p}.tool_call_id")
            if not isinstance(call_id, str):
                raise _invalid_type(f"{p}.tool_call_id", "a string", call_id)
            if not open_calls:
                raise _Reject(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"{p}.role",
                )
            if call_id not in open_calls:
                raise _Reject(
                    400,
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    param=f"{p}.tool_call_id",
                )
            if call_id in pending:
                pending.remove(call_id)
            if "content" not in msg:
                raise _missing(f"{p}.content")
            _check_content(f"{p}.content", role, msg["content"], required=True)
        else:
            if role == "function" and not isinstance(msg.get("name"), str):
                raise _missing(f"{p}.name")
            if "content" not in msg:
                raise _missing(f"{p}.content")
            _check_content(f"{p}.content", role, msg["content"], required=role != "function")
    if pending:
        raise _Reject(
            400,
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(pending)}",
            param=f"messages[{pending_at}].role",
        )


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict) and tool.get("type") == "function":
        fn = tool.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
    return None


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid_type("tools", "an array", tools)
        if not tools:
            raise _empty_array("tools")
        if len(tools) > 128:
            raise _Reject(
                400,
                f"Invalid 'tools': array too long. Expected an array with maximum length 128, "
                f"but got an array with length {len(tools)} instead.",
                param="tools",
                code="array_above_max_length",
            )
        for k, tool in enumerate(tools):
            tp = f"tools[{k}]"
            if not isinstance(tool, dict):
                raise _invalid_type(tp, "an object", tool)
            kind = tool.get("type")
            if kind is None:
                raise _missing(f"{tp}.type")
            if kind not in ("function", "custom"):
                raise _invalid_value(f"{tp}.type", kind, ("function", "custom"))
            spec = tool.get(kind)
            if not isinstance(spec, dict):
                raise _missing(f"{tp}.{kind}")
            name = spec.get("name")
            if name is None:
                raise _missing(f"{tp}.{kind}.name")
            if not isinstance(name, str):
                raise _invalid_type(f"{tp}.{kind}.name", "a string", name)
            if not _TOOL_NAME.match(name):
                raise _Reject(
                    400,
                    f"Invalid '{tp}.{kind}.name': string does not match pattern. Expected a "
                    "string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                    param=f"{tp}.{kind}.name",
                    code="invalid_value",
                )
    for dependent in ("tool_choice", "parallel_tool_calls"):
        if body.get(dependent) is not None and tools is None:
            raise _Reject(
                400,
                f"Invalid value for '{dependent}': '{dependent}' is only allowed when 'tools' "
                "are specified.",
                param=dependent,
            )
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _invalid_value("tool_choice", choice, ("none", "auto", "required"))
        return
    if not isinstance(choice, dict):
        raise _invalid_type("tool_choice", "a string or object", choice)
    kind = choice.get("type")
    if kind == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise _missing("tool_choice.function.name")
        if name not in {_tool_name(t) for t in tools or []}:
            raise _Reject(
                400,
                f"Invalid value for 'tool_choice': function '{name}' is not in 'tools'.",
                param="tool_choice.function.name",
                code="invalid_value",
            )
    elif kind not in ("allowed_tools", "custom"):
        raise _invalid_value("tool_choice.type", kind, ("function", "allowed_tools", "custom"))


def _check_ranges(body: dict[str, Any]) -> None:
    for name, (integer, low, high) in _RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (integer and not isinstance(value, int))
        ):
            raise _invalid_type(name, "an integer" if integer else "a number", value)
        noun = "integer" if integer else "decimal"
        if low is not None and value < low:
            raise _Reject(
                400,
                f"Invalid '{name}': {noun} below minimum value. Expected a value >= {low:g}, "
                f"but got {value} instead.",
                param=name,
                code=f"{noun}_below_min_value",
            )
        if high is not None and value > high:
            raise _Reject(
                400,
                f"Invalid '{name}': {noun} above maximum value. Expected a value <= {high:g}, "
                f"but got {value} instead.",
                param=name,
                code=f"{noun}_above_max_value",
            )


def _check_fields(body: dict[str, Any]) -> None:
    for name in _BOOL_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _invalid_type(name, "a boolean", body[name])
    for name in _STRING_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _invalid_type(name, "a string", body[name])
    for name in _OBJECT_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _invalid_type(name, "an object", body[name])
    for name, allowed in _ENUMS.items():
        if body.get(name) is not None and body[name] not in allowed:
            raise _invalid_value(name, body[name], allowed)
    _check_ranges(body)
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise _Reject(
            400,
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
            "'top_logprobs' is used.",
            param="top_logprobs",
        )
    options = body.get("stream_options")
    if options is not None:
        if body.get("stream") is not True:
            raise _Reject(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        if not isinstance(options, dict):
            raise _invalid_type("stream_options", "an object", options)
        for key in ("include_usage", "include_obfuscation"):
            if options.get(key) is not None and not isinstance(options[key], bool):
                raise _invalid_type(f"stream_options.{key}", "a boolean", options[key])
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, list):
            if len(stop) > 4:
                raise _Reject(
                    400,
                    "Invalid 'stop': array too long. Expected an array with maximum length 4, "
                    f"but got an array with length {len(stop)} instead.",
                    param="stop",
                    code="array_above_max_length",
                )
            if not all(isinstance(s, str) for s in stop):
                raise _invalid_type("stop", "a string or array of strings", stop)
        elif not isinstance(stop, str):
            raise _invalid_type("stop", "a string or array of strings", stop)
    modalities = body.get("modalities")
    if modalities is not None:
        if not isinstance(modalities, list):
            raise _invalid_type("modalities", "an array", modalities)
        for k, item in enumerate(modalities):
            if item not in ("text", "audio"):
                raise _invalid_value(f"modalities[{k}]", item, ("text", "audio"))
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        if len(metadata) > 16 or not all(isinstance(v, str) for v in metadata.values()):
            raise _Reject(
                400,
                "Invalid 'metadata': expected at most 16 string key-value pairs.",
                param="metadata",
            )
    _check_response_format(body)


def _check_response_format(body: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise _invalid_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _invalid_value("response_format.type", kind, ("text", "json_object", "json_schema"))
    if kind == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict):
            raise _missing("response_format.json_schema")
        if not isinstance(schema.get("name"), str):
            raise _missing("response_format.json_schema.name")
    if kind == "json_object":
        texts = " ".join(
            _text_of(m.get("content")) for m in body["messages"] if isinstance(m, dict)
        )
        if "json" not in texts.lower():
            raise _Reject(
                400,
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                param="messages",
            )


def _random_id(prefix: str, length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class _Answer:
    """What the fake model produced for one request (identical for every choice)."""

    content: str | None
    pieces: list[str]
    finish_reason: str
    tool_name: str | None
    completion_tokens: int
    arguments: str = TOOL_ARGUMENTS


def _compose(body: dict[str, Any]) -> _Answer:
    messages: list[dict[str, Any]] = body["messages"]
    # Instructions after the last turn do not change which turn is answered.
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    last = turns[-1] if turns else messages[-1]
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    function_names = [name for name in map(_tool_name, tools) if name]
    tool_name: str | None = None
    if function_names and choice != "none":
        if isinstance(choice, dict) and choice.get("type") == "function":
            tool_name = choice["function"]["name"]
        elif choice == "required":
            tool_name = function_names[0]
        elif last.get("role") == "user" and _WEATHER.search(_text_of(last.get("content"))):
            tool_name = function_names[0]
    shell = (shell_call(_text_of(last.get("content"), "\n"), function_names)
             if last.get("role") == "user" and choice in (None, "auto") else None)
    if shell is not None:
        arguments = json.dumps(shell[1])
        return _Answer(None, [], "tool_calls", shell[0], len(arguments.split()), arguments)
    if tool_name is not None:
        return _Answer(None, [], "tool_calls", tool_name, len(TOOL_ARGUMENTS.split()))

    if last.get("role") == "tool":
        source = _text_of(last.get("content"))
    else:
        users = [m for m in messages if m.get("role") == "user"]
        source = _text_of(users[-1].get("content")) if users else ""
    text = "echo: " + source
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        text = json.dumps({"echo": source})
    finish = "stop"
    stop = body.get("stop")
    for marker in [stop] if isinstance(stop, str) else stop or []:
        if marker and marker in text:
            text = text[: text.index(marker)]
    pieces = _WORD_PIECE.findall(text) or [text]
    caps = [body.get(k) for k in ("max_tokens", "max_completion_tokens")]
    cap = min((c for c in caps if isinstance(c, int)), default=None)
    if cap is not None and len(pieces) > cap:
        pieces = pieces[:cap]
        pieces[-1] = pieces[-1].rstrip()
        finish = "length"
    content = "".join(pieces)
    return _Answer(content, pieces, finish, None, len(content.split()))


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    words = sum(len(_text_of(m.get("content")).split()) for m in messages)
    return max(words, 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True
    fake: FakeOpenAI

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup; 127.0.0.1 needs none.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- plumbing ---------------------------------------------------------------------------

    def _common_headers(self) -> None:
        self.send_header("x-request-id", _random_id("req_", 24))
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", "3")
        self.send_header("x-ratelimit-limit-requests", "10000")
        self.send_header("x-ratelimit-remaining-requests", "9999")
        self.send_header("x-ratelimit-reset-requests", "6ms")

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        extra = CaseInsensitiveDict(headers or {})
        self.send_response(status)
        if "content-type" not in extra:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        for name, value in extra.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_cut(self, data: bytes) -> None:
        """A 200 whose body stops halfway: the connection closes before Content-Length."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _dispatch(self) -> None:
        fake = self.server.fake
        try:
            raw = read_body(self)
        except ValueError:
            self.close_connection = True
            self._send_json(400, error_envelope("Malformed request body framing."))
            return
        path, _, query = self.path.partition("?")
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name in set(self.headers.keys()):
            headers[name] = ", ".join(self.headers.get_all(name) or [])
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake._record(Received(self.command, path, headers, body, raw, query))
        try:
            self._route(path, headers, raw)
        except _Reject as err:
            self._send_json(err.status, err.envelope)
        except _SOCKET_ERRORS:
            self.close_connection = True
        except Exception as exc:  # a bug in the fake must not look like a hung upstream
            traceback.print_exc(file=sys.stderr)
            fake.errors.append(exc)
            self.close_connection = True
            try:
                self._send_json(
                    500,
                    error_envelope(f"FakeOpenAI bug: {exc!r}", type="server_error"),
                )
            except OSError:
                pass

    def _route(self, path: str, headers: CaseInsensitiveDict[str], raw: bytes) -> None:
        fake = self.server.fake
        base = fake.base_path
        method = self.command
        if path == f"{base}/chat/completions" and method == "POST":
            endpoint = "chat"
        elif path == f"{base}/models" and method == "GET":
            endpoint = "models"
        elif path.startswith(f"{base}/models/") and method == "GET":
            endpoint = "model"
        else:
            raise _Reject(404, f"Invalid URL ({method} {path})")
        fake._check_auth(headers.get("Authorization"))

        script = fake._take_script(_PRE_SCRIPTS, path)
        if script is not None:
            if script.kind == "fail":
                self._send_scripted_failure(script)
                return
            if script.kind == "invalid_json":
                self._send(200, script.body, "application/json")
                return
            if script.kind == "cut_body":
                self._send_cut(script.body)
                return
            if fake._stopping.wait(script.seconds):
                self.close_connection = True
                return

        if endpoint == "models":
            self._send_json(200, {"object": "list", "data": fake._model_objects()})
        elif endpoint == "model":
            model_id = path[len(f"{base}/models/") :]
            match = [m for m in fake._model_objects() if m["id"] == model_id]
            if not match:
                raise fake._model_not_found(model_id)
            self._send_json(200, match[0])
        else:
            self._chat(headers, raw, path)

    def _send_scripted_failure(self, script: _Script) -> None:
        body = script.body if script.body is not None else default_error_body(script.status)
        if isinstance(body, bytes):
            self._send(script.status, body, "text/plain; charset=utf-8", script.headers)
        elif isinstance(body, str):
            self._send(script.status, body.encode(), "text/plain; charset=utf-8", script.headers)
        else:
            self._send_json(script.status, body, script.headers)

    # -- chat completions -------------------------------------------------------------------

    def _chat(self, headers: CaseInsensitiveDict[str], raw: bytes, path: str) -> None:
        fake = self.server.fake
        content_type = headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise _Reject(
                400,
                f"Invalid Content-Type header ({content_type or 'missing'}), "
                "expected application/json.",
            )
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Reject(400, _INVALID_JSON) from None
        if not isinstance(body, dict):
            raise _Reject(400, _INVALID_JSON)
        fake._validate(body)
        answer = _compose(body)
        n = body.get("n") or 1
        prompt = _prompt_tokens(body["messages"])
        completion = answer.completion_tokens * n
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": fake.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        tier = body.get("service_tier")
        common = {
            "id": _random_id("chatcmpl-", 29),
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": tier if tier in ("flex", "scale", "priority", "fast") else "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        call_ids = [_random_id("call_", 24) for _ in range(n)]
        if body.get("stream") is True:
            script = fake._take_script(_STREAM_SCRIPTS, path)
            options = body.get("stream_options") or {}
            asked = options.get("include_usage") or fake.usage_in_last_chunk
            stream_usage = usage if asked else None
            self._stream(common, answer, call_ids, stream_usage, script)
            return
        choices = []
        for index in range(n):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": answer.content,
                "refusal": None,
                "annotations": [],
            }
            if answer.tool_name is not None:
                message["tool_calls"] = [
                    {
                        "id": call_ids[index],
                        "type": "function",
                        "function": {"name": answer.tool_name, "arguments": answer.arguments},
                    }
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            )
        response = {
            "id": common["id"],
            "object": "chat.completion",
            "created": common["created"],
            "model": common["model"],
            "choices": choices,
            "usage": usage,
            "service_tier": common["service_tier"],
            "system_fingerprint": common["system_fingerprint"],
        }
        if self.server.fake.omit_usage:
            del response["usage"]
        self._send_json(200, response)

    def _stream_events(
        self,
        common: dict[str, Any],
        answer: _Answer,
        call_ids: list[str],
        usage: dict[str, Any] | None,
    ) -> Iterator[tuple[str, dict[str, Any] | str]]:
        """Yield (kind, payload) with kind one of role, content, finish, usage, done."""
        if self.server.fake.omit_usage:
            usage = None

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": common["id"],
                "object": "chat.completion.chunk",
                "created": common["created"],
                "model": common["model"],
                "service_tier": common["service_tier"],
                "system_fingerprint": common["system_fingerprint"],
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                "usage": None,
            }

        n = len(call_ids)
        if answer.tool_name is None:
            for index in range(n):
                yield "role", chunk(index, {"role": "assistant", "content": ""})
            for _ in range(self.server.fake.empty_deltas):
                for index in range(n):
                    yield "role", chunk(index, {"content": ""})
            for piece in answer.pieces:
                for index in range(n):
                    yield "content", chunk(index, {"content": piece})
        else:
            for index in range(n):
                first_delta = {
                    "index": 0,
                    "id": call_ids[index],
                    "type": "function",
                    "function": {"name": answer.tool_name, "arguments": ""},
                }
                delta = {"role": "assistant", "content": None, "tool_calls": [first_delta]}
                yield "role", chunk(index, delta)
            args = answer.arguments
            size = -(-len(args) // 3)
            fragments = [args[i : i + size] for i in range(0, len(args), size)]
            for fragment in fragments:
                for index in range(n):
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
                    yield "content", chunk(index, delta)
        for index in range(n):
            finish = chunk(index, {}, answer.finish_reason)
            if usage is not None and self.server.fake.usage_in_last_chunk and index == n - 1:
                finish["usage"] = usage  # Mistral: on the last content chunk, unasked
            yield "finish", finish
        if usage is not None and not self.server.fake.usage_in_last_chunk:
            final = chunk(0, {})
            final["choices"] = []
            final["usage"] = usage
            yield "usage", final
        yield "done", DONE

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(
        self,
        common: dict[str, Any],
        answer: _Answer,
        call_ids: list[str],
        usage: dict[str, Any] | None,
        script: _Script | None,
    ) -> None:
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._common_headers()
        self.end_headers()
        sent_content = 0
        first = True
        try:
            if fake.keepalive_comments:
                self._write_chunk(encode_comment("keep-alive"))
            for kind, payload in self._stream_events(common, answer, call_ids, usage):
                if script is not None and kind != "role" and sent_content >= script.n:
                    if script.kind == "cut":
                        self._cut()
                        return
                    error = error_envelope(script.message, type="server_error")
                    self._write_chunk(encode_event(error))
                    break
                if not first and fake.chunk_delay > 0:
                    if fake._stopping.wait(fake.chunk_delay):
                        self._cut()
                        return
                first = False
                self._write_chunk(encode_event(payload))
                if kind == "content":
                    sent_content += 1
                if fake.keepalive_comments and kind != "done":
                    self._write_chunk(encode_comment("keep-alive"))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except _SOCKET_ERRORS:
            self.close_connection = True
            with fake._lock:
                fake.disconnects += 1

    def _cut(self) -> None:
        """Drop the connection mid-body: no terminating chunk, so clients see a broken stream."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeOpenAI:
    """Strict fake OpenAI-compatible chat server; see the module docstring for the contract."""

    def __init__(
        self,
        api_key: str | None = "sk-upstream-test",
        *,
        models: Iterable[str] | None = DEFAULT_MODELS,
        known_fields: Iterable[str] | None = None,
        rejected_fields: Iterable[str] = (),
        max_tokens_field: str = "max_tokens",
        base_path: str = "/v1",
        port: int = 0,
        cached_tokens: int = 0,
        chunk_delay: float = 0.0,
        keepalive_comments: bool = False,
        extra_forbidden: bool = False,
        usage_in_last_chunk: bool = False,
        empty_deltas: int = 0,
        omit_usage: bool = False,
    ) -> None:
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("max_tokens_field must be 'max_tokens' or 'max_completion_tokens'")
        self.api_key = api_key
        self.models: list[str] | None = list(models) if models is not None else None
        self.known_fields: frozenset[str] = (
            frozenset(known_fields) if known_fields is not None else DEFAULT_KNOWN_FIELDS
        )
        self.rejected_fields: frozenset[str] = frozenset(rejected_fields)
        self.max_tokens_field = max_tokens_field
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.cached_tokens = cached_tokens
        self.chunk_delay = chunk_delay
        self.keepalive_comments = keepalive_comments
        self.extra_forbidden = extra_forbidden
        self.usage_in_last_chunk = usage_in_last_chunk
        self.empty_deltas = empty_deltas
        self.omit_usage = omit_usage
        self.requests: list[Received] = []
        self.disconnects = 0
        self.errors: list[BaseException] = []
        self._requested_port = port
        self._lock = threading.Lock()
        self._scripts: list[_Script] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind 127.0.0.1 and serve from a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._stopping = threading.Event()
        server = _Server(("127.0.0.1", self._requested_port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeOpenAI:{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake waiting handlers. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses and records --------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running; call start() first")
        return self._server.server_port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what the OpenAI SDK takes as ``base_url``."""
        return self.origin + self.base_path

    @property
    def last(self) -> Received:
        """The most recent request; AssertionError when none arrived."""
        with self._lock:
            if not self.requests:
                raise AssertionError("FakeOpenAI has received no requests")
            return self.requests[-1]

    @property
    def pending_scripts(self) -> int:
        """How many scripted behaviours have not been used yet."""
        with self._lock:
            return len(self._scripts)

    def reset(self) -> None:
        """Forget recorded requests, pending scripts, disconnects and errors."""
        with self._lock:
            self.requests.clear()
            self._scripts.clear()
            self.disconnects = 0
            self.errors.clear()

    # -- scripted behaviour -----------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        path: str | None = None,
    ) -> None:
        """Answer the next request with ``status`` (default body: OpenAI error envelope)."""
        self._push(_Script("fail", path, status=status, body=body, headers=dict(headers or {})))

    def invalid_json_next(
        self, body: bytes = b'{"id": "chatcmpl-broken", "choices": [', *, path: str | None = None
    ) -> None:
        """Answer the next request with 200 ``application/json`` and a body that is not JSON."""
        self._push(_Script("invalid_json", path, body=body))

    def cut_body_next(self, *, path: str | None = None) -> None:
        """Answer the next request with 200 and half of a JSON body, then close the
        connection (a provider or proxy that fails mid-answer)."""
        body = json.dumps({"id": "chatcmpl-cut", "object": "chat.completion",
                           "choices": [{"index": 0, "message": {"role": "assistant",
                                                                "content": "x" * 200}}]})
        self._push(_Script("cut_body", path, body=body.encode()))

    def hang_next(self, seconds: float, *, path: str | None = None) -> None:
        """Wait ``seconds`` before handling the next request (``stop()`` ends the wait)."""
        self._push(_Script("hang", path, seconds=seconds))

    def cut_stream_after(self, n_chunks: int, *, path: str | None = None) -> None:
        """Drop the connection of the next stream after ``n_chunks`` content chunks."""
        self._push(_Script("cut", path, n=n_chunks))

    def error_in_stream_after(
        self,
        n: int,
        message: str = "The server had an error while processing your request.",
        *,
        path: str | None = None,
    ) -> None:
        """Send ``n`` content chunks of the next stream, then an error event, then end it."""
        self._push(_Script("stream_error", path, n=n, message=message))

    # -- internals used by the handler ------------------------------------------------------

    def _push(self, script: _Script) -> None:
        with self._lock:
            self._scripts.append(script)

    def _take_script(self, kinds: tuple[str, ...], path: str) -> _Script | None:
        with self._lock:
            for i, script in enumerate(self._scripts):
                if script.kind in kinds and script.path in (None, path):
                    return self._scripts.pop(i)
        return None

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _check_auth(self, authorization: str | None) -> None:
        if self.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Reject(401, _MISSING_KEY, code="invalid_api_key")
        token = token.strip()
        if token != self.api_key:
            masked = token[:3] + "*" * max(len(token) - 7, 0) + token[-4:]
            raise _Reject(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _model_objects(self) -> list[dict[str, Any]]:
        return [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for name in self.models or []
        ]

    def _model_not_found(self, model: str) -> _Reject:
        return _Reject(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def _validate(self, body: dict[str, Any]) -> None:
        for name in body:
            if name in self.rejected_fields:
                raise _Reject(
                    400,
                    f"Unsupported parameter: '{name}' is not supported with this model.",
                    param=name,
                    code="unsupported_parameter",
                )
            if name not in self.known_fields and self.extra_forbidden:
                raise _extra_forbidden(name, body[name])
            if name not in self.known_fields:
                raise _Reject(
                    400,
                    f"Unrecognized request argument supplied: {name}",
                    param=name,
                    code="unknown_parameter",
                )
        if self.max_tokens_field == "max_completion_tokens" and "max_tokens" in body:
            raise _Reject(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        model = body.get("model")
        if model is None:
            raise _missing("model")
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        if "messages" not in body or body["messages"] is None:
            raise _missing("messages")
        _check_messages(body["messages"], self.rejected_fields)
        _check_tools(body)
        _check_fields(body)
        if self.models is not None and model not in self.models:
            raise self._model_not_found(model)
