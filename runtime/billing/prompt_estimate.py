"""An estimate of the prompt tokens a provider bills for a request, for when it reports none:
a stream the client abandoned, an upstream that never sent its usage, a cut stream.

Once the provider accepted a request it bills the whole prompt, so the estimate covers the
whole request, in every client format (OpenAI chat, Anthropic Messages, Responses): messages
and system prompts, tool definitions (names, descriptions, JSON schemas), tool calls and tool
results, files and documents, structured-output schemas. Every string (and every object
key, which is how schema property names reach the model) counts at CHARS_PER_TOKEN
characters a token; numbers and booleans count their printed length. Images count the
provider's per-image estimate (runtime/billing/image_tokens.py) instead of their bytes.
Top-level request settings (model, stream, sampling, limits, metadata) are not prompt.
Inline files keep their base64 length: more than the provider counts for most documents,
which is the safe side when the gateway has to guess.

It walks the body (about as long as parsing it), so for a whole answer it is computed only
when needed (`lazy_prompt`), never on an answer that reports its usage. A stream's is computed
when the provider accepts it (`stream_prompt`): it is needed then anyway once the stream
outlives a hold heartbeat (its progress is recorded with the estimate) or is cut, and the
stream then keeps one number instead of the request body for its whole life (the parsed
JSON of the prompt, several times its size in bytes, for each open stream).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from runtime.billing.image_tokens import image_tokens
from runtime.catalogue import Model

CHARS_PER_TOKEN = 4

# Top-level request fields that are settings, not prompt, in the three client formats.
SETTINGS = frozenset({
    "model", "models", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
    "max_output_tokens", "temperature", "top_p", "top_k", "frequency_penalty",
    "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "stop",
    "stop_sequences", "user", "metadata", "store", "service_tier", "parallel_tool_calls",
    "reasoning_effort", "reasoning", "thinking", "verbosity", "background", "truncation",
    "include", "previous_response_id", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "modalities", "audio", "output_config", "container",
    "mcp_servers", "context_management", "max_tool_calls",
})


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def prompt_tokens(body: Mapping[str, Any], image_tokens: Callable[[str | None], int]) -> int:
    """Estimated prompt tokens of a request body; `image_tokens(detail)` is one image's
    estimate on the model that serves it."""
    chars = 0
    images: list[str | None] = []
    stack: list[Any] = [v for k, v in body.items() if k not in SETTINGS]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith("data:image/"):
                images.append(None)
            else:
                chars += len(item)
        elif isinstance(item, dict):
            image = _image(item)
            if image is not False:
                images.append(image)
                continue
            for key, value in item.items():
                chars += len(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            chars += len(str(item))
    return estimate_tokens(chars) + sum(image_tokens(detail) for detail in images)


def _image(part: dict[str, Any]) -> str | None | bool:
    """An image part's `detail` (None when not given), or False when `part` is no image:
    OpenAI chat `image_url` parts, Responses `input_image` parts and Anthropic `image`
    blocks, whether by URL, inline data or file id."""
    kind = part.get("type")
    if kind == "image_url":
        inner = part.get("image_url")
        return _detail(inner.get("detail") if isinstance(inner, dict) else None)
    if kind == "input_image":
        return _detail(part.get("detail"))
    if kind == "image" and isinstance(part.get("source"), dict):
        return None
    return False


def _detail(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class KnownPrompt:
    """An estimate already computed, called like `lazy_prompt`'s."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def __call__(self) -> int:
        return self.tokens


def stream_prompt(body: Mapping[str, Any], model: Model, extra_tokens: int = 0
                  ) -> KnownPrompt:
    """The estimate of `body` on `model` computed now, for a stream the provider accepted
    (the stream keeps no reference to `body`); `extra_tokens` as in `lazy_prompt`."""
    return KnownPrompt(_estimate(body, model, extra_tokens))


def lazy_prompt(body: Mapping[str, Any], model: Model, extra_tokens: int = 0
                ) -> Callable[[], int]:
    """The estimate of `body` on `model`, computed when first called (then kept);
    `extra_tokens` is context the provider adds to the body (a stored conversation)."""
    found: list[int] = []

    def estimate() -> int:
        if not found:
            found.append(_estimate(body, model, extra_tokens))
        return found[0]

    return estimate


def _estimate(body: Mapping[str, Any], model: Model, extra_tokens: int) -> int:
    return prompt_tokens(body, lambda detail: image_tokens(model, detail)) + extra_tokens
