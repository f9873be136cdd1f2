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

Dialects without a counter (OpenAI's chat API has none) are estimated by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from runtime.catalogue import Model
from runtime.errors import UpstreamError
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
        generate = self._chat.build(body, model, False)
        request = json.loads(generate.body)  # type: ignore[arg-type]
        wrapped = {"generateContentRequest": {"model": f"models/{model.upstream}", **request}}
        return UpstreamCall("POST", model.provider.url(KIND, model.upstream), generate.headers,
                            json.dumps(wrapped, ensure_ascii=False).encode(), generate.params)

    def count(self, payload: Any) -> int:
        return _count(payload, "totalTokens")


COUNTERS: dict[str, TokenCounter] = {"anthropic": AnthropicCounter(), "gemini": GeminiCounter()}

__all__ = ["COUNTERS", "KIND", "AnthropicCounter", "GeminiCounter", "TokenCounter"]
