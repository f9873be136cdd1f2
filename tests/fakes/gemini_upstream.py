"""A strict fake Gemini API (`models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`) for tests.

Contract
--------
``FakeGemini`` (built on ``tests.fakes.http_fake.FakeServer``) serves 127.0.0.1; ``base_url``
is the origin (Gemini's base has no version). Paths ``/v1beta/models/{model}:generateContent``
and ``:streamGenerateContent`` (``v1`` too). Every request is recorded before it is judged.
Errors use Google's envelope ``{"error":{"code","message","status","details"}}``:

* no ``x-goog-api-key`` header (or ``?key=``): 403 ``PERMISSION_DENIED``; a wrong key: 400
  ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID`` (as the real API does);
* 400 ``INVALID_ARGUMENT`` for: unknown fields at the top level, in parts and in
  ``generationConfig`` ("Unknown name ... Cannot find field"; snake_case spellings count as
  unknown here because the gateway must send camelCase only), empty ``contents``, roles other
  than user/model, parts without exactly one data field, invalid base64 ``inlineData``,
  ``functionCall`` outside model turns, ``functionResponse`` outside user turns, with a
  non-object ``response``, naming no call of the previous model turn, or a count different
  from that turn's calls; JSON-Schema-only keywords (``additionalProperties``, ``$ref``,
  ``$defs``, ``const``, ``$schema``) or an OBJECT with empty ``properties`` in function
  parameters and ``responseSchema``; a tool that is not exactly one of
  ``functionDeclarations`` / ``googleSearch`` (``{}``); a bad function-calling mode,
  ``allowedFunctionNames`` without mode ANY; ranges (temperature 0..2, topP 0..1,
  candidateCount 1..8, at most 5 stopSequences); ``responseSchema`` without
  ``responseMimeType: application/json``;
* 404 ``NOT_FOUND`` for a model outside ``models`` (None accepts any).

``:countTokens`` takes either ``contents`` or ``generateContentRequest`` (a whole
generateContent request with ``model: "models/<the path's model>"``), never both nor
anything else, validated as above, and answers ``{"totalTokens": N, "promptTokensDetails":
[{"modality": "TEXT", "tokenCount": N}]}`` with N = the ``promptTokenCount`` below (without
cached tokens) + words of the function declarations' JSON.

Deterministic answers per candidate (``candidateCount``): ``"echo: " + <last user text>``
(plus ``[image <mime> <n> bytes]`` per inline image); after function responses,
``"echo: " + <each response as JSON>``; with ``responseMimeType: application/json``
``{"echo": <text>}``. A ``functionCall`` (no id, args ``{"city": "Oslo"}``, with a
``thoughtSignature`` when ``signatures`` is true) answers mode ANY (first allowed name) or
AUTO/unset when the last user text mentions "weather"; a line ``run: C`` in the last user
text, with a coding agent's shell tool declared (``Bash``, ``exec_command``, ...), is answered
with a call of that tool running C (see ``tests.fakes.shell_call``); finishReason is ``STOP``
either way.
With ``signatures`` on, a request is also refused (400, as Gemini 3 refuses it) when, in the
current turn (after the last user text), a model step's first function call lacks a
signature this fake issued. A positive ``thinkingBudget`` adds ``thoughtsTokenCount`` (words
of ``"Thinking about <text>"``) and, with ``includeThoughts``, that text as a ``thought:
true`` part.
``stopSequences`` cut the text; ``maxOutputTokens`` below the word count truncates
(``MAX_TOKENS``). Usage: ``promptTokenCount`` = words of the system instruction and every
text, function call and response, plus the ``cached_tokens`` attribute, which is also
``cachedContentTokenCount``; ``candidatesTokenCount`` = words of all candidates' output.
With the ``googleSearch`` tool and the ``grounded`` attribute set, every candidate is
grounded: its ``groundingMetadata`` lists two ``webSearchQueries``
(on the candidate's last event when streamed).

Streams (``alt=sse``): ``data: <json>`` events with CRLF line ends, two words per event,
candidates one after another, running ``usageMetadata`` on every event (complete on the
last), ``finishReason`` on each candidate's last event, no terminator. Without ``alt=sse``
the body is one JSON array of those objects. ``error_in_stream_after(n)`` makes the next
stream send ``data: {"error": {...}}`` after ``n`` events and end. ``fail_next(status, body,
headers)`` answers the next authenticated request with a failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from requests.structures import CaseInsensitiveDict

from .http_fake import FakeServer, Received, Reject, Reply
from .shell_call import shell_call
from .sse import encode_event

FIELDS = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                    "safetySettings", "cachedContent"})
CONFIG_FIELDS = frozenset({"temperature", "topP", "topK", "maxOutputTokens", "stopSequences",
                           "candidateCount", "responseMimeType", "responseSchema",
                           "responseJsonSchema", "seed", "presencePenalty", "frequencyPenalty",
                           "responseLogprobs", "logprobs", "responseModalities",
                           "thinkingConfig", "mediaResolution", "speechConfig"})
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
             "executableCode", "codeExecutionResult")
PART_FIELDS = frozenset({*PART_DATA, "thought", "thoughtSignature", "videoMetadata"})
SCHEMA_FIELDS = frozenset({"type", "format", "title", "description", "nullable", "enum",
                           "maxItems", "minItems", "properties", "required", "minProperties",
                           "maxProperties", "minLength", "maxLength", "pattern", "example",
                           "anyOf", "propertyOrdering", "default", "items", "minimum",
                           "maximum"})
STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}
_PATH = re.compile(r"^/(v1beta|v1)/models/(?P<model>[^:/]+):(?P<method>generateContent|"
                   r"streamGenerateContent|countTokens)$")
_WORDS = re.compile(r"\S+\s*")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)


# The tool kinds this fake knows (camelCase only, like every other field here).
TOOL_KINDS = ("functionDeclarations", "googleSearch")


def _bad(message: str) -> Reject:
    return Reject(400, message)


def _unknown(name: str, where: str = "") -> Reject:
    at = f" at '{where}'" if where else ""
    return _bad(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def words(text: str) -> int:
    return len(text.split())


class FakeGemini(FakeServer):
    routes = {("POST", "/v1beta/models/*"): "generate", ("POST", "/v1/models/*"): "generate"}

    def __init__(self, api_key: str | None = "gemini-upstream-key", *,
                 models: tuple[str, ...] | None = None, chunk_delay: float = 0.0) -> None:
        super().__init__(api_key, chunk_delay=chunk_delay)
        self.models = models
        self.cached_tokens = 0
        self.signatures = False
        self.grounded = False
        self.issued_signatures: set[str] = set()
        self._stream_errors: list[int] = []

    def check_auth(self, headers: CaseInsensitiveDict[str], query: str) -> None:
        if self.api_key is None:
            return
        key = headers.get("x-goog-api-key") or (parse_qs(query).get("key") or [""])[0]
        if not key:
            raise Reject(403, "Method doesn't allow unregistered callers (callers without "
                         "established identity). Please use API Key or other form of API "
                         "consumer identity to call this API.")
        if key != self.api_key:
            raise Reject(400, "API key not valid. Please pass a valid API key.", details=[
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"error": {"code": status, "message": message,
                          "status": STATUS.get(status, "UNKNOWN"),
                          **({"details": extra["details"]} if extra.get("details") else {})}}

    def error_in_stream_after(self, n: int) -> None:
        with self.lock:
            self._stream_errors.append(n)

    def reset(self) -> None:
        super().reset()
        self.cached_tokens = 0
        self.signatures = False
        self.grounded = False
        with self.lock:
            self._stream_errors.clear()

    def generate(self, req: Received) -> Reply:
        match = _PATH.match(req.path)
        if match is None:
            raise Reject(404, f"Not found: {req.path}")
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            raise _bad("Content-Type must be application/json")
        if not isinstance(req.body, dict):
            raise _bad("Invalid JSON payload received.")
        body = req.body
        model = match.group("model")
        if match.group("method") == "countTokens":
            return self._count(body, model)
        validate(body)
        if self.models is not None and model not in self.models:
            raise Reject(404, f"models/{model} is not found for API version v1beta, or is not "
                         "supported for generateContent.")
        if self.signatures:
            self._check_signatures(body)
        answers = compose(body, self.signatures)
        if self.grounded and any("googleSearch" in t for t in body.get("tools") or ()):
            for answer in answers:   # grounded: the queries Google ran for the answer
                answer["candidate"]["groundingMetadata"] = {
                    "webSearchQueries": ["fake search one", "fake search two"],
                    "groundingChunks": [{"web": {"uri": "https://example.com/",
                                                 "title": "example.com"}}]}
        with self.lock:
            self.issued_signatures.update(
                p["thoughtSignature"] for a in answers
                for p in a["candidate"]["content"]["parts"] if "thoughtSignature" in p)
        usage = self._usage(body, answers)
        with self.lock:
            self.usages.append(usage)
        if match.group("method") == "generateContent":
            return Reply.json({
                "candidates": [a["candidate"] for a in answers], "usageMetadata": usage,
                "modelVersion": model, "responseId": secrets.token_hex(8)})
        events = list(_events(answers, usage, model))
        with self.lock:
            cut = self._stream_errors.pop(0) if self._stream_errors else None
        if "alt=sse" not in req.query:
            return Reply(200, json.dumps(events).encode())
        return Reply(200, _sse(events, cut), "text/event-stream")

    def _check_signatures(self, body: dict[str, Any]) -> None:
        """As Gemini 3 does: in the current turn (after the last user text), the first
        function call of each model step must carry the thought signature it came with."""
        contents = body["contents"]
        start = max((i for i, c in enumerate(contents) if c["role"] == "user"
                     and any("text" in p for p in c["parts"])), default=0)
        for i in range(start, len(contents)):
            calls = [p for p in contents[i]["parts"] if "functionCall" in p]
            if contents[i]["role"] != "model" or not calls:
                continue
            if calls[0].get("thoughtSignature") not in self.issued_signatures:
                name = calls[0]["functionCall"]["name"]
                raise _bad("Function call is missing a thought_signature in functionCall parts. "
                           "This is required for tools to work correctly, and missing "
                           "thought_signature may lead to degraded model performance. "
                           f"Additional data, function call `default_api:{name}` , position "
                           f"{i + 1}. Please refer to https://ai.google.dev/gemini-api/docs/"
                           "thought-signatures for more details.")

    def _count(self, body: dict[str, Any], model: str) -> Reply:
        for key in body:
            if key not in ("contents", "generateContentRequest"):
                raise _unknown(key)
        if ("contents" in body) == ("generateContentRequest" in body):
            raise _bad("* CountTokensRequest: exactly one of contents and "
                       "generate_content_request must be set.")
        inner = body.get("generateContentRequest")
        if inner is None:
            inner = {"contents": body["contents"]}
        else:
            if not isinstance(inner, dict):
                raise _bad("generate_content_request: must be an object")
            inner = dict(inner)
            named = inner.pop("model", None)
            if named != f"models/{model}":
                raise _bad("* CountTokensRequest.generate_content_request.model: must be "
                           f"'models/{model}', the model of the request path.")
        validate(inner)
        if self.models is not None and model not in self.models:
            raise Reject(404, f"models/{model} is not found for API version v1beta, or is not "
                         "supported for countTokens.")
        declared = [d for tool in inner.get("tools") or ()
                    for d in tool.get("functionDeclarations") or ()]
        total = max(1, prompt_words(inner)) + sum(words(json.dumps(d)) for d in declared)
        return Reply.json({"totalTokens": total,
                           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})

    def _usage(self, body: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = max(1, prompt_words(body)) + self.cached_tokens
        out = sum(a["words"] for a in answers)
        thoughts = sum(a["thoughts"] for a in answers)
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": out,
                 "totalTokenCount": prompt + out + thoughts}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        return usage


# -- validation -------------------------------------------------------------------------------

def validate(body: dict[str, Any]) -> None:
    for key in body:
        if key not in FIELDS:
            raise _unknown(key)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("* GenerateContentRequest.contents: contents is not specified")
    system = body.get("systemInstruction")
    if system is not None:
        _check_parts(system, "system_instruction", None)
    calls: list[str] = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            raise _bad("Please use a valid role: user, model.")
        role = content["role"]
        _check_parts(content, f"contents[{i}]", role)
        responses = [p["functionResponse"] for p in content["parts"] if "functionResponse" in p]
        if responses:
            for fr in responses:
                if fr.get("name") not in calls:
                    raise _bad(f"* GenerateContentRequest.contents[{i}]: function response "
                               f"'{fr.get('name')}' answers no function call of the previous "
                               "turn.")
            if len(responses) != len(calls):
                raise _bad("Please ensure that the number of function response parts is equal "
                           "to the number of function call parts of the function call turn.")
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
    names = _check_tools(body.get("tools"))
    _check_tool_config(body.get("toolConfig"), names)
    _check_config(body.get("generationConfig"))


def _check_parts(content: Any, where: str, role: str | None) -> None:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise _bad(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise _bad(f"{where}.parts[{j}]: must be an object")
        for key in part:
            if key not in PART_FIELDS:
                raise _unknown(key, f"{where}.parts[{j}]")
        data = [k for k in PART_DATA if k in part]
        if len(data) != 1:
            raise _bad(f"* GenerateContentRequest.{where}.parts[{j}].data: required oneof "
                       "field 'data' must have one initialized field")
        kind = data[0]
        if kind == "text" and not isinstance(part["text"], str):
            raise _bad(f"{where}.parts[{j}].text: must be a string")
        if kind == "inlineData":
            blob = part["inlineData"]
            if not isinstance(blob, dict) or set(blob) - {"mimeType", "data"} or not blob.get(
                    "mimeType"):
                raise _bad(f"{where}.parts[{j}].inline_data: mimeType and data are required")
            try:
                base64.b64decode(blob.get("data", ""), validate=True)
            except (binascii.Error, ValueError):
                raise _bad(f"Invalid value at '{where}.parts[{j}].inline_data.data' "
                           "(TYPE_BYTES), Base64 decoding failed") from None
        if kind == "functionCall":
            fc = part["functionCall"]
            if role != "model" or not isinstance(fc, dict) or not fc.get("name") or not (
                    isinstance(fc.get("args", {}), dict)):
                raise _bad(f"{where}.parts[{j}].function_call: only in model turns, with a name "
                           "and object args")
        if kind == "functionResponse":
            fr = part["functionResponse"]
            if role != "user" or not isinstance(fr, dict) or not fr.get("name"):
                raise _bad(f"{where}.parts[{j}].function_response: only in user turns, with a "
                           "name")
            if not isinstance(fr.get("response"), dict):
                raise _bad(f"Invalid value at '{where}.parts[{j}].function_response.response' "
                           "(type.googleapis.com/google.protobuf.Struct)")


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise _bad(f"{where}: schema must be an object")
    for key in schema:
        if key not in SCHEMA_FIELDS:
            raise _unknown(key, where)
    if str(schema.get("type", "")).upper() == "OBJECT" and "properties" in schema and not (
            schema["properties"]):
        raise _bad(f"* {where}.properties: should be non-empty for OBJECT type")
    for name, sub in (schema.get("properties") or {}).items():
        _check_schema(sub, f"{where}.properties[{name}]")
    if "items" in schema:
        _check_schema(schema["items"], f"{where}.items")
    for k, sub in enumerate(schema.get("anyOf") or ()):
        _check_schema(sub, f"{where}.any_of[{k}]")


def _check_tools(tools: Any) -> list[str]:
    names: list[str] = []
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or len(tool) != 1 or next(iter(tool)) not in TOOL_KINDS:
            raise _bad(f"Invalid JSON payload received. Unknown name in 'tools[{i}]': each "
                       "tool is exactly one of " + ", ".join(TOOL_KINDS))
        if "googleSearch" in tool and tool["googleSearch"] != {}:
            raise _bad(f"tools[{i}].google_search: takes no fields")
        for k, decl in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{k}]"
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$", str(decl.get("name", ""))):
                raise _bad(f"* GenerateContentRequest.{where}.name: Invalid function name.")
            if "parameters" in decl:
                _check_schema(decl["parameters"], f"{where}.parameters")
            names.append(decl["name"])
    return names


def _check_tool_config(config: Any, names: list[str]) -> None:
    if config is None:
        return
    fcc = config.get("functionCallingConfig") or {}
    mode = fcc.get("mode", "AUTO")
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED"):
        raise _bad(f"Invalid value at 'tool_config.function_calling_config.mode', \"{mode}\"")
    allowed = fcc.get("allowedFunctionNames")
    if allowed is not None:
        if mode not in ("ANY", "VALIDATED"):
            raise _bad("* GenerateContentRequest.tool_config.function_calling_config."
                       "allowed_function_names: only allowed when mode is ANY.")
        if any(a not in names for a in allowed):
            raise _bad("allowed_function_names must name declared functions")


def _check_config(config: Any) -> None:
    if config is None:
        return
    for key in config:
        if key not in CONFIG_FIELDS:
            raise _unknown(key, "generation_config")
    for key, low, high in (("temperature", 0, 2), ("topP", 0, 1), ("candidateCount", 1, 8)):
        value = config.get(key)
        if value is not None and not low <= value <= high:
            raise _bad(f"* GenerateContentRequest.generation_config.{key}: must be in "
                       f"[{low}, {high}]")
    if len(config.get("stopSequences") or ()) > 5:
        raise _bad("* GenerateContentRequest.generation_config.stop_sequences: at most 5")
    if config.get("maxOutputTokens") is not None and config["maxOutputTokens"] < 1:
        raise _bad("* GenerateContentRequest.generation_config.max_output_tokens: must be "
                   "positive")
    if "responseSchema" in config:
        if config.get("responseMimeType") != "application/json":
            raise _bad("* GenerateContentRequest.generation_config.response_mime_type: "
                       "response_schema needs response_mime_type application/json")
        _check_schema(config["responseSchema"], "generation_config.response_schema")
    thinking = config.get("thinkingConfig")
    if thinking is not None and set(thinking) - {"thinkingBudget", "includeThoughts",
                                                 "thinkingLevel"}:
        raise _unknown(sorted(set(thinking))[0], "generation_config.thinking_config")


# -- answers ----------------------------------------------------------------------------------

def prompt_words(body: dict[str, Any]) -> int:
    total = 0
    contents = list(body["contents"])
    if body.get("systemInstruction"):
        contents.append(body["systemInstruction"])
    for content in contents:
        for part in content["parts"]:
            if "text" in part:
                total += words(part["text"])
            elif "functionCall" in part:
                total += words(json.dumps(part["functionCall"].get("args", {})))
            elif "functionResponse" in part:
                total += words(json.dumps(part["functionResponse"]["response"]))
    return total


def compose(body: dict[str, Any], signatures: bool) -> list[dict[str, Any]]:
    config = body.get("generationConfig") or {}
    last = body["contents"][-1]["parts"]
    responses = [p["functionResponse"] for p in last if "functionResponse" in p]
    user_text = " ".join(p["text"] for p in last if "text" in p)
    fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = fcc.get("mode", "AUTO")
    names = [d["name"] for t in body.get("tools") or () for d in t.get("functionDeclarations")
             or ()]
    thinking = config.get("thinkingConfig") or {}
    thought = f"Thinking about {user_text or 'it'}" if thinking.get("thinkingBudget", 0) > 0 \
        else ""
    answers = []
    for index in range(config.get("candidateCount", 1)):
        parts: list[dict[str, Any]] = []
        if thought and thinking.get("includeThoughts"):
            parts.append({"text": thought, "thought": True})
        finish = "STOP"
        shell = shell_call("\n".join(p["text"] for p in last if "text" in p), names)
        part: dict[str, Any]
        if shell and not responses:
            part = {"functionCall": {"name": shell[0], "args": shell[1]}}
            if signatures:
                part["thoughtSignature"] = base64.b64encode(secrets.token_bytes(12)).decode()
            parts.append(part)
            out = words(json.dumps(shell[1]))
        elif names and not responses and (mode == "ANY" or (mode == "AUTO"
                                                          and _WEATHER.search(user_text))):
            name = (fcc.get("allowedFunctionNames") or names)[0]
            part = {"functionCall": {"name": name, "args": {"city": "Oslo"}}}
            if signatures:
                part["thoughtSignature"] = base64.b64encode(secrets.token_bytes(12)).decode()
            parts.append(part)
            out = words(json.dumps({"city": "Oslo"}))
        else:
            if responses:
                text = "echo: " + " ".join(json.dumps(r["response"]) for r in responses)
            else:
                text = "echo: " + user_text
                for p in last:
                    if "inlineData" in p:
                        size = len(base64.b64decode(p["inlineData"]["data"]))
                        text += f" [image {p['inlineData']['mimeType']} {size} bytes]"
            if config.get("responseMimeType") == "application/json":
                text = json.dumps({"echo": text})
            for stop in config.get("stopSequences") or ():
                if stop and stop in text:
                    text = text.split(stop)[0]
                    break
            pieces = _WORDS.findall(text)
            limit = config.get("maxOutputTokens")
            if limit is not None and len(pieces) > limit:
                text, finish = "".join(pieces[:limit]), "MAX_TOKENS"
            parts.append({"text": text})
            out = words(text)
        answers.append({"candidate": {"content": {"role": "model", "parts": parts},
                                      "finishReason": finish, "index": index},
                        "words": out, "thoughts": words(thought)})
    return answers


def _events(answers: list[dict[str, Any]], usage: dict[str, Any],
            model: str) -> Iterator[dict[str, Any]]:
    steps: list[tuple[int, dict[str, Any], str | None]] = []
    grounding: dict[int, Any] = {}
    for answer in answers:
        cand = answer["candidate"]
        index = cand["index"]
        pieces: list[dict[str, Any]] = []
        for part in cand["content"]["parts"]:
            if "text" in part:
                found = _WORDS.findall(part["text"]) or [""]
                pieces += [{**part, "text": "".join(found[k:k + 2])}
                           for k in range(0, len(found), 2)]
            else:
                pieces.append(part)
        for k, piece in enumerate(pieces):
            steps.append((index, piece, cand["finishReason"] if k == len(pieces) - 1 else None))
        grounding[index] = cand.get("groundingMetadata")
    running = {"promptTokenCount": usage["promptTokenCount"],
               "totalTokenCount": usage["promptTokenCount"]}
    response_id = secrets.token_hex(8)
    for k, (index, piece, finish) in enumerate(steps):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}, "index": index}
        if finish:
            cand["finishReason"] = finish
            if grounding.get(index):   # with the candidate's last event, as Gemini sends it
                cand["groundingMetadata"] = grounding[index]
        yield {"candidates": [cand], "usageMetadata": usage if k == len(steps) - 1 else running,
               "modelVersion": model, "responseId": response_id}


def _sse(events: list[dict[str, Any]], cut: int | None) -> Iterator[bytes]:
    for k, event in enumerate(events):
        if cut is not None and k >= cut:
            yield encode_event({"error": {"code": 503, "message": "The model is overloaded.",
                                          "status": "UNAVAILABLE"}}, crlf=True)
            return
        yield encode_event(event, crlf=True)
