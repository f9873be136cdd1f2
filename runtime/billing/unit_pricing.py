"""Exact prices of the units that are not chat tokens: images, audio seconds, text-to-speech
characters, rerank searches, embedding and rerank tokens, and gpt-image token usage (hosted
web searches are priced with the chat tokens: pricing.token_cost).

Every function returns nano-credits as an unrounded Decimal (1 USD of list price =
1,000,000,000 nano-credits), computed from the catalogue's decimal-string prices; the caller
rounds the request's total once, via Meter.settle (charge) or pricing.hold_nano (hold). A
price the catalogue does not have for what the client asked (an image size, a quality) is a
400 naming the field and the values that are priced.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from runtime.billing.pricing import NANO, NANO_PER_MUNIT
from runtime.catalogue import Model
from runtime.errors import BadRequest

DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_QUALITY = "standard"

# gpt-image-1 output tokens per image by quality and size (OpenAI's published table): the
# hold before the call, and the charge when an answer carries no usage.
GPT_IMAGE_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
GPT_IMAGE_MAX_OUTPUT_TOKENS = 6240
# Hold per input image of an edit; the charge follows the usage the provider reports.
GPT_IMAGE_INPUT_TOKENS_HOLD = 6000


def _usd(value: Any) -> Decimal:
    return Decimal(value) if isinstance(value, str) else Decimal(0)


def is_token_priced_image(model: Model) -> bool:
    """gpt-image style: priced from token usage rather than per image."""
    return "per_image" not in model.pricing and "image_output_per_mtok" in model.pricing


def image_price(model: Model, size: str | None, quality: str | None) -> Decimal:
    """USD per image for this size and quality; 400 when the catalogue has no such price."""
    table = model.pricing.get("per_image")
    if isinstance(table, str):
        return Decimal(table)
    if not isinstance(table, Mapping):
        raise BadRequest(f"The model '{model.id}' has no per-image price.", param="model")
    size = size or DEFAULT_IMAGE_SIZE
    by_size = table.get(size)
    if by_size is None:
        raise BadRequest(f"'size' {size!r} is not available for '{model.id}'; use one of: "
                         f"{', '.join(sorted(table))}.", param="size")
    if isinstance(by_size, str):
        return Decimal(by_size)
    if quality in (None, "auto"):
        quality = DEFAULT_QUALITY if DEFAULT_QUALITY in by_size else min(
            by_size, key=lambda q: Decimal(by_size[q]))
    if quality not in by_size:
        raise BadRequest(f"'quality' {quality!r} is not available for '{model.id}'; use one "
                         f"of: {', '.join(sorted(by_size))}.", param="quality")
    return Decimal(by_size[quality])


def dearest_image_price(model: Model, size: str | None = None) -> Decimal:
    """USD of the dearest image the model's `per_image` table prices (of `size`, when
    given): a hold before the size and quality are known."""
    table = model.pricing.get("per_image")
    if isinstance(table, str):
        return Decimal(table)
    if not isinstance(table, Mapping):
        raise BadRequest(f"The model '{model.id}' has no per-image price.", param="model")
    rows = [table[size]] if size is not None and size in table else list(table.values())
    return max(Decimal(price) for row in rows
               for price in (row.values() if isinstance(row, Mapping) else [row]))


def images_cost(model: Model, size: str | None, quality: str | None, count: int) -> Decimal:
    return image_price(model, size, quality) * count * NANO


def gpt_image_output_tokens(size: str | None, quality: str | None) -> int:
    row = GPT_IMAGE_OUTPUT_TOKENS.get(quality or "")
    if row is None:
        return GPT_IMAGE_MAX_OUTPUT_TOKENS
    return row.get(size or "", max(row.values()))


def gpt_image_usage_cost(model: Model, usage: Mapping[str, Any]) -> Decimal:
    """Cost of a gpt-image answer's `usage`: text input, image input and image output tokens
    each at its own price (image input falls back to the text input price)."""
    details = usage.get("input_tokens_details") or {}
    total_in = _count(usage.get("input_tokens"))
    image_in = min(_count(details.get("image_tokens")), total_in)
    text_in = total_in - image_in
    price_text = model.price("input_per_mtok") or Decimal(0)
    price_image_in = model.price("image_input_per_mtok") or price_text
    price_out = model.price("image_output_per_mtok") or model.price("output_per_mtok") or 0
    return (text_in * price_text + image_in * price_image_in
            + _count(usage.get("output_tokens")) * Decimal(price_out)) * NANO_PER_MUNIT


def gpt_image_hold(model: Model, prompt_chars: int, n: int, size: str | None,
                   quality: str | None, input_images: int = 0) -> Decimal:
    """Worst case before the call: a token per prompt character, a generous count per input
    image, and the output tokens of n images at the requested (or highest) quality."""
    return gpt_image_usage_cost(model, {
        "input_tokens": prompt_chars + input_images * GPT_IMAGE_INPUT_TOKENS_HOLD,
        "input_tokens_details": {"image_tokens": input_images * GPT_IMAGE_INPUT_TOKENS_HOLD},
        "output_tokens": n * gpt_image_output_tokens(size, quality)})


def speech_cost(model: Model, chars: int) -> Decimal:
    """per_mchar is USD per million characters, i.e. 1000 * per_mchar nano-credits each."""
    return chars * (model.price("per_mchar") or Decimal(0)) * NANO_PER_MUNIT


def audio_seconds_cost(model: Model, seconds: Decimal) -> Decimal:
    return seconds * (model.price("per_audio_second") or Decimal(0)) * NANO


def search_cost(model: Model, searches: int) -> Decimal:
    return searches * (model.price("per_search") or Decimal(0)) * NANO


def input_tokens_cost(model: Model, tokens: int) -> Decimal:
    """input_per_mtok is USD per million tokens, i.e. 1000 * input_per_mtok nano-credits each."""
    return tokens * (model.price("input_per_mtok") or Decimal(0)) * NANO_PER_MUNIT


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
