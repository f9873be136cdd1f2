"""OpenAI chat to the Gemini API (`models/{model}:generateContent`, streams through
`:streamGenerateContent?alt=sse`) and back.

Request (camelCase only): system and developer messages become `systemInstruction`;
assistant turns use the `model` role; images, audio and PDF files go as `inlineData`
(http(s) image URLs are downloaded by the gateway once credits are held, see
runtime/providers/pending_images.py); tool calls
become `functionCall` parts with object `args`, tool messages `functionResponse` parts in one
user turn (the response is the tool's JSON object, or `{"result": <text>}`), named by looking
up the call they answer. Function-call ids: Gemini often gives none, so the gateway makes
one up (prefix `call_gx`) and, when the conversation comes back, sends no id for those and
Gemini's own ids for the others. A call's `thoughtSignature` travels to the client in
`tool_calls[].extra_content.google.thought_signature` (the convention of Google's own
OpenAI-compatible endpoint) and is sent back from there. Tool parameters and response
schemas are converted to Gemini's schema subset (runtime/providers/gemini_schema.py).
Scalar parameters, `n` (candidateCount) and the reasoning_effort thinking budgets are mapped
by the descriptor (specs/providers/google.yaml); a thinking budget above 0 also asks for
thought summaries, surfaced as `reasoning_content`. Gemini has no switch for
`parallel_tool_calls`; it is not sent (clients handle one call or several either way).

Response: `STOP` with function calls is `tool_calls`; safety-type reasons are
`content_filter`; a prompt blocked outright is an empty `content_filter` answer. Usage:
prompt = promptTokenCount + toolUsePromptTokenCount (cached tokens inside, reported as
`cached_tokens`), completion = candidatesTokenCount + thoughtsTokenCount; an answer grounded
in Google Search (groundingMetadata with webSearchQueries) counts one web search in the
usage's `server_tool_use`, as Google bills a grounded prompt once. Streams: each
event holds only new parts and running usage totals (the last one wins); whole function
calls arrive at once and are sent as one tool-call delta with id, name and arguments.
A stream that carries an error object, or ends before any finish reason, ends with an error
after reporting the usage produced so far.
"""

from __future__ import annotations

import json
import math
import mimetypes
from collections.abc import Iterator, Mapping
from typing import Any

from runtime import fastjson
from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError, UpstreamError
from runtime.providers import chat_parts as cp
from runtime.providers import pending_images
from runtime.providers.base import (
    SSEFraming,
    StreamBroken,
    UpstreamCall,
    credential_error,
    json_headers,
    mapped_status,
    retry_headers,
)
from runtime.providers.gemini_schema import to_gemini
from runtime.sse import Event

NATIVE_FIELDS = ("generationConfig", "safetySettings", "cachedContent", "toolConfig")
GENERATED_ID = "call_gx"
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3", "aac": "audio/aac",
                "flac": "audio/flac", "ogg": "audio/ogg", "aiff": "audio/aiff"}
_CREDENTIAL_REASONS = ("API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED")


class GeminiChat(SSEFraming):
    web_search = True

    def build(self, body: Mapping[str, Any], model: Model, stream: bool) -> UpstreamCall:
        body = dict(body)  # the client's request stays as received
        shape = cp.take_structural(body)
        cp.check_modalities(shape)
        search = body.pop("web_search_options", None)
        cp.prepare_scalars(body)
        native = model.provider.descriptor.translate["chat"](body)
        cp.drop_nulls(native)
        cp.check_leftovers(native, NATIVE_FIELDS, model.provider.id)

        config = native.get("generationConfig")
        if isinstance(config, dict):
            _thinking(config)
        system, contents = _contents(shape["messages"])
        request: dict[str, Any] = {"contents": contents}
        if system:
            request["systemInstruction"] = {"parts": system}
        _tools(request, native, shape)
        if isinstance(search, dict) and shape.get("tool_choice") != "none":
            # Grounding with Google Search is Gemini's own web search.
            request.setdefault("tools", []).append({"googleSearch": {}})
        fmt = cp.output_format(shape)
        if fmt is not None:
            config = native.setdefault("generationConfig", {})
            config["responseMimeType"] = "application/json"
            if fmt.schema is not None:
                config["responseSchema"] = to_gemini(fmt.schema)
        request.update(native)

        url = model.provider.url("chat", model.upstream)
        headers = json_headers(model)
        params: dict[str, str] = {}
        if stream:
            url = url.replace(":generateContent", ":streamGenerateContent")
            params["alt"] = "sse"
            headers["Accept"] = "text/event-stream"
        raw, images = pending_images.encode(request)
        return UpstreamCall("POST", url, headers, raw, params, images)

    def parse(self, payload: Any, model: Model) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise UpstreamError("The upstream provider answered without candidates.")
        candidates = payload.get("candidates")
        choices = []
        if not candidates:
            if not (payload.get("promptFeedback") or {}).get("blockReason"):
                raise UpstreamError("The upstream provider answered without candidates.")
            choices.append({"index": 0, "message": cp.message(None, None, []),
                            "logprobs": None, "finish_reason": "content_filter"})
        for pos, cand in enumerate(candidates or ()):
            texts, thoughts, calls = [], [], []
            for part in (cand.get("content") or {}).get("parts") or ():
                if isinstance(part.get("text"), str):
                    (thoughts if part.get("thought") else texts).append(part["text"])
                elif isinstance(part.get("functionCall"), dict):
                    calls.append(_tool_call(None, part))
            content = "".join(texts) if texts or not calls else None
            choices.append({"index": cand.get("index", pos),
                            "message": cp.message(content, "".join(thoughts), calls),
                            "logprobs": None,
                            "finish_reason": _finish(cand.get("finishReason"), bool(calls),
                                                     model)})
        ident = payload.get("responseId") or cp.new_id("")
        return cp.completion(f"chatcmpl-{ident}", model.id, choices,
                             _usage(payload.get("usageMetadata") or {}, _grounded(candidates)))

    def chunks(self, events: Iterator[Event], model: Model) -> Iterator[dict[str, Any]]:
        return _Stream(model).run(events)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError:
        err = _error_of(raw)
        message = err.get("message") if isinstance(err.get("message"), str) else None
        reasons = {d.get("reason") for d in err.get("details") or () if isinstance(d, dict)}
        if status in (401, 403) or reasons & set(_CREDENTIAL_REASONS) or (
                status == 400 and message and "api key" in message.lower()):
            return credential_error(model)
        kind = err.get("status") if isinstance(err.get("status"), str) else None
        status = mapped_status(status, model)
        message = message or f"The upstream provider returned HTTP {status}."
        extra = retry_headers(headers)
        if status == 429:
            delay = _retry_delay(err)
            if delay and "Retry-After" not in extra:
                extra["Retry-After"] = delay
            return GatewayError(message, status=429, type="rate_limit_error", code=kind,
                                headers=extra)
        if status < 500:
            return GatewayError(message, status=status, type="invalid_request_error",
                                code=kind, headers=extra)
        return UpstreamError(message, status=status, code=kind, headers=extra)


def _error_of(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
        return {}
    if isinstance(payload, list) and payload:   # the non-SSE stream form wraps it in a list
        payload = payload[0]
    err = payload.get("error") if isinstance(payload, dict) else None
    return err if isinstance(err, dict) else {}


def _retry_delay(err: dict[str, Any]) -> str | None:
    for detail in err.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


def _thinking(config: dict[str, Any]) -> None:
    thinking = config.get("thinkingConfig")
    if not isinstance(thinking, dict) or "thinkingBudget" not in thinking:
        return
    budget = thinking["thinkingBudget"]
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise BadRequest(f"'reasoning_effort' value '{budget}' is not supported by this model.",
                         param="reasoning_effort")
    if budget > 0:
        thinking["includeThoughts"] = True


def _contents(messages: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    calls: dict[str, str] = {}          # tool call id -> function name

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, msg in enumerate(messages):
        role = msg["role"]
        if role in ("system", "developer"):
            text = cp.text_of(msg.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            parts = _user_parts(msg.get("content"), f"messages[{i}].content")
            if parts:
                add("user", parts)
        elif role == "assistant":
            parts = []
            text = cp.text_of(msg.get("content")) or msg.get("refusal") or ""
            if text:
                parts.append({"text": text})
            for j, call in enumerate(msg.get("tool_calls") or ()):
                param = f"messages[{i}].tool_calls[{j}]"
                fn = call.get("function")
                if call.get("type") != "function" or not isinstance(fn, dict):
                    raise BadRequest(f"'{param}': only function tool calls can be sent to this "
                                     "model.", param=param)
                calls[call["id"]] = fn["name"]
                fc: dict[str, Any] = {"name": fn["name"], "args": cp.tool_input(
                    fn.get("arguments"), f"{param}.function.arguments")}
                if not call["id"].startswith(GENERATED_ID):
                    fc["id"] = call["id"]
                part: dict[str, Any] = {"functionCall": fc}
                signature = (((call.get("extra_content") or {}).get("google") or {})
                             .get("thought_signature"))
                if isinstance(signature, str) and signature:
                    part["thoughtSignature"] = signature
                parts.append(part)
            if parts:
                add("model", parts)
        elif role == "tool":
            call_id = msg["tool_call_id"]
            if call_id not in calls:
                raise BadRequest(f"'messages[{i}].tool_call_id' answers no earlier tool call.",
                                 param=f"messages[{i}].tool_call_id")
            fr: dict[str, Any] = {"name": calls[call_id],
                                  "response": _tool_response(msg.get("content"))}
            if not call_id.startswith(GENERATED_ID):
                fr["id"] = call_id
            add("user", [{"functionResponse": fr}])
        else:
            raise BadRequest(f"'messages[{i}].role' '{role}' cannot be sent to this model; "
                             "use tool messages.", param=f"messages[{i}].role")
    for content in contents:
        if content["role"] == "user":
            content["parts"].sort(key=lambda p: "functionResponse" not in p)
    if not contents:
        raise BadRequest("'messages' needs at least one user or assistant message with "
                         "content.", param="messages")
    return system, contents


def _tool_response(content: Any) -> dict[str, Any]:
    """A JSON object result is sent as that object; anything else as `{"result": text}`
    with the text unchanged (re-encoding `0E0` or `NaN` would alter or break it)."""
    text = cp.text_of(content)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": text}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content or ()):
        where = f"{param}[{j}]"
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image(part["image_url"]["url"], f"{where}.image_url.url"))
        elif kind == "input_audio":
            audio = part["input_audio"]
            mime = _AUDIO_TYPES.get(str(audio.get("format")).lower())
            if mime is None:
                raise BadRequest(f"'{where}.input_audio.format' must be one of "
                                 f"{', '.join(_AUDIO_TYPES)}.", param=f"{where}.input_audio.format")
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file" and (part.get("file") or {}).get("file_data"):
            ref = part["file"]
            data = cp.parse_data_url(ref["file_data"], f"{where}.file.file_data")
            if data is None:
                mime = mimetypes.guess_type(ref.get("filename") or "")[0] or "application/pdf"
                data = cp.DataUrl(mime, ref["file_data"])
            parts.append({"inlineData": {"mimeType": data.mime, "data": data.data}})
        else:
            raise BadRequest(f"'{where}': content of type '{kind}' cannot be sent to this "
                             "model.", param=where)
    return parts


def _image(url: str, param: str) -> dict[str, Any]:
    data = cp.parse_data_url(url, param)
    if data is not None:
        return {"inlineData": {"mimeType": data.mime, "data": data.data}}
    if not cp.is_http_url(url):
        raise BadRequest(f"'{param}' must be an http(s) or data URL.", param=param)
    return {"inlineData": pending_images.PendingImage(url, param)}


def _tools(request: dict[str, Any], native: dict[str, Any], shape: dict[str, Any]) -> None:
    tools = cp.function_tools(shape)
    choice = cp.tool_choice(shape, tools)
    if choice is not None and choice.names is not None and choice.mode == "auto":
        # Gemini restricts names only in mode ANY; for auto, declare just the allowed ones.
        tools = [t for t in tools if t.name in choice.names]
        choice = cp.ToolChoice("auto", None)
    if tools:
        declarations = []
        for t in tools:
            decl: dict[str, Any] = {"name": t.name}
            if t.description:
                decl["description"] = t.description
            if t.parameters and t.parameters.get("properties"):
                decl["parameters"] = to_gemini(t.parameters)
            declarations.append(decl)
        request["tools"] = [{"functionDeclarations": declarations}]
    if choice is not None and tools:
        config: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE",
                                           "required": "ANY"}[choice.mode]}
        if choice.names is not None:
            config["allowedFunctionNames"] = list(choice.names)
        native.setdefault("toolConfig", {})["functionCallingConfig"] = config


def _tool_call(index: int | None, part: dict[str, Any]) -> dict[str, Any]:
    fc = part["functionCall"]
    call = cp.tool_call(index, fc.get("id") or cp.new_id(GENERATED_ID),
                        fc.get("name") or "", cp.arguments_json(fc.get("args")))
    if isinstance(part.get("thoughtSignature"), str):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def _finish(reason: Any, called: bool, model: Model) -> str:
    finish = model.provider.descriptor.finish_reasons.get(reason, "stop")
    return "tool_calls" if called and finish == "stop" else finish


def _usage(meta: Mapping[str, Any], grounded: bool = False) -> dict[str, Any]:
    def n(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    thoughts = n("thoughtsTokenCount")
    return cp.usage(n("promptTokenCount") + n("toolUsePromptTokenCount"),
                    n("candidatesTokenCount") + thoughts, cached=n("cachedContentTokenCount"),
                    reasoning=thoughts, web_searches=1 if grounded else 0)


def _grounded(candidates: Any) -> bool:
    """Whether Google searched for an answer: a candidate's groundingMetadata lists the web
    search queries it ran. Google bills a grounded prompt once, however many queries."""
    return any(isinstance(c, dict) and isinstance(c.get("groundingMetadata"), dict)
               and c["groundingMetadata"].get("webSearchQueries")
               for c in candidates or ())


class _Stream:
    """Gemini stream events in, OpenAI chunks out; one instance per stream."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.out = cp.ChunkWriter(cp.new_id("chatcmpl-"), model.id)
        self.usage: dict[str, Any] = {}
        self.started: set[int] = set()
        self.tools: dict[int, int] = {}      # candidate -> tool calls sent
        self.finished: set[int] = set()
        self.produced = 0
        self.grounded = False

    def run(self, events: Iterator[Event]) -> Iterator[dict[str, Any]]:
        for event in events:
            try:
                data = fastjson.loads(event.data)
            except ValueError:
                yield from self._broken("The upstream provider sent an invalid stream event.")
            if not isinstance(data, dict):
                continue
            if isinstance(data.get("error"), dict):
                yield from self._broken(data["error"].get("message") or
                                        "The upstream provider failed mid-stream.")
            if isinstance(data.get("usageMetadata"), dict):
                self.usage = data["usageMetadata"]
            if data.get("responseId") and not self.started:
                self.out.id = f"chatcmpl-{data['responseId']}"
            candidates = data.get("candidates")
            self.grounded = self.grounded or _grounded(candidates)
            if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
                yield from self._start(0)
                self.finished.add(0)
                yield self.out.delta({}, 0, "content_filter")
            for pos, cand in enumerate(candidates or ()):
                yield from self._candidate(cand.get("index", pos), cand)
        if not self.finished:
            yield from self._broken("The upstream provider ended the stream early.")
        yield self.out.usage(_usage(self.usage, self.grounded))

    def _start(self, index: int) -> Iterator[dict[str, Any]]:
        if index not in self.started:
            self.started.add(index)
            yield self.out.delta({"role": "assistant", "content": ""}, index)

    def _candidate(self, index: int, cand: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self._start(index)
        for part in (cand.get("content") or {}).get("parts") or ():
            if isinstance(part.get("text"), str) and part["text"]:
                self.produced += len(part["text"])
                key = "reasoning_content" if part.get("thought") else "content"
                yield self.out.delta({key: part["text"]}, index)
            elif isinstance(part.get("functionCall"), dict):
                n = self.tools.get(index, 0)
                self.tools[index] = n + 1
                call = _tool_call(n, part)
                self.produced += len(call["function"]["arguments"])
                yield self.out.delta({"tool_calls": [call]}, index)
        reason = cand.get("finishReason")
        if reason and index not in self.finished:
            self.finished.add(index)
            yield self.out.delta({}, index, _finish(reason, index in self.tools, self.model))

    def _broken(self, message: str) -> Iterator[dict[str, Any]]:
        """Report what was produced, then end the stream with the error."""
        if self.started:
            usage = _usage(self.usage, self.grounded)
            produced = math.ceil(self.produced / 4)
            if usage["completion_tokens"] < produced:
                usage = cp.usage(usage["prompt_tokens"], produced,
                                 cached=usage["prompt_tokens_details"]["cached_tokens"],
                                 web_searches=1 if self.grounded else 0)
            yield self.out.usage(usage)
        raise StreamBroken(message)
