"""Input-token counters of the providers that have one, by dialect (`COUNTERS`).

A counter builds one upstream call for `POST /v1/messages/count_tokens` (the descriptor's
`messages.count_tokens` path) and reads the count from the provider's answer. What it takes
is named by `takes`:

- `"messages"` (anthropic): the client's Anthropic count request, already mapped by the
  descriptor with the upstream model name; it is sent as is to `/v1/messages/count_tokens`,
  whose answer is `{"input_tokens": N}`.
- `"chat"` (gemini): the request in the OpenAI chat form (translated from Messages by the
  caller). The Gemini chat adapter builds the generateContent request from it, so the count
  covers exactly what a message request would send (system instruction, contents, tools,
  tool config, generation config); it goes to `models/{model}:countTokens` as
  `{"generateContentRequest": {"model": "models/<upstream>", ...}}`, whose answer is
  `{"totalTokens": N}`.

- `"chat"` (openai, where the descriptor declares the count path: OpenAI itself): the chat
  form turned into a Responses request (messages -> input items, function tools flattened)
  sent to `/responses/input_tokens`, whose answer is `{"input_tokens": N}`.

OpenAI-format providers without that path (Mistral, Groq, ...) are estimated by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from runtime.catalogue import Model
from runtime.errors import UpstreamError
from runtime.providers import pending_images
from runtime.providers.base import UpstreamCall, json_headers
from runtime.providers.gemini_chat import GeminiChat

KIND = "messages.count_tokens"


class TokenCounter(Protocol):
    takes: str

    def build(self, body: Mapping[str, Any], model: Model) -> UpstreamCall:
        """The upstream call counting `body` (in the form `takes` names); never changes it."""
        ...

    def count(self, payload: Any) -> int:
        """The input tokens in the provider's answer; UpstreamError when it has none."""
        ...


def _count(payload: Any, field: str) -> int:
    value = payload.get(field) if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UpstreamError("The upstream provider answered without a token count.")
    return value


class AnthropicCounter:
    takes = "messages"

    def build(self, body: Mapping[str, Any], model: Model) -> UpstreamCall:
        return UpstreamCall("POST", model.provider.url(KIND, model.upstream), json_headers(model),
                            json.dumps(body, ensure_ascii=False).encode())

    def count(self, payload: Any) -> int:
        return _count(payload, "input_tokens")


class GeminiCounter:
    takes = "chat"

    def __init__(self) -> None:
        self._chat = GeminiChat()

    def build(self, body: Mapping[str, Any], model: Model) -> UpstreamCall:
        # countTokens needs the image bytes too; it is not priced, so no hold comes first
        generate = pending_images.fetched(self._chat.build(body, model, False))
        request = json.loads(generate.body)  # type: ignore[arg-type]
        wrapped = {"generateContentRequest": {"model": f"models/{model.upstream}", **request}}
        return UpstreamCall("POST", model.provider.url(KIND, model.upstream), generate.headers,
                            json.dumps(wrapped, ensure_ascii=False).encode(), generate.params)

    def count(self, payload: Any) -> int:
        return _count(payload, "totalTokens")


class OpenAICounter:
    takes = "chat"

    def build(self, body: Mapping[str, Any], model: Model) -> UpstreamCall:
        request: dict[str, Any] = {"model": model.upstream,
                                   "input": [item for message in body.get("messages") or ()
                                             for item in _input_items(message)]}
        tools = [{"type": "function", "name": t["function"]["name"],
                  "description": t["function"].get("description"),
                  "parameters": t["function"].get("parameters")}
                 for t in body.get("tools") or () if t.get("type") == "function"]
        if tools:
            request["tools"] = [{k: v for k, v in t.items() if v is not None} for t in tools]
        return UpstreamCall("POST", model.provider.url(KIND, model.upstream), json_headers(model),
                            json.dumps(request, ensure_ascii=False).encode())

    def count(self, payload: Any) -> int:
        return _count(payload, "input_tokens")


def _input_items(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One chat message as Responses input items."""
    role = message.get("role")
    if role == "tool":
        return [{"type": "function_call_output", "call_id": message.get("tool_call_id"),
                 "output": _text(message.get("content"))}]
    items: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):
        parts = [_part(p, role) for p in content if isinstance(p, dict)]
        items.append({"role": role, "content": [p for p in parts if p is not None]})
    elif content:
        items.append({"role": role, "content": content})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        items.append({"type": "function_call", "call_id": call.get("id"),
                      "name": fn.get("name"), "arguments": fn.get("arguments") or "{}"})
    return items


def _part(part: Mapping[str, Any], role: Any) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        return {"type": "output_text" if role == "assistant" else "input_text",
                "text": part.get("text") or ""}
    if kind == "image_url":
        image = part.get("image_url") or {}
        return {"type": "input_image", "image_url": image.get("url")}
    if kind == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or () if isinstance(p, dict))


COUNTERS: dict[str, TokenCounter] = {"anthropic": AnthropicCounter(), "gemini": GeminiCounter(),
                                     "openai": OpenAICounter()}

__all__ = ["COUNTERS", "KIND", "AnthropicCounter", "GeminiCounter", "OpenAICounter",
           "TokenCounter"]
