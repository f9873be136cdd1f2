"""Prompt tokens one image costs on a model, when the gateway must estimate it: in the hold
(before the call) and when a stream ends without the provider's usage.

The size of an image sent by URL is not known (it is never fetched for this), so every
estimate is the provider's documented worst case for one image:
- OpenAI, tile formula (gpt-4o, gpt-4.1, gpt-4.5, o1, o3): an image is scaled to fit 2048 x
  2048, then its short side to 768, and costs base + tile x 512-pixel tiles; the worst case
  is 768 x 2048 = 8 tiles, 85 + 8 x 170 = 1,445 tokens (gpt-4o-mini: 2,833 + 8 x 5,667).
  `detail: "low"` is the base alone. Patch formula (gpt-4.1-mini, gpt-4.1-nano, o4-mini,
  gpt-5-mini, gpt-5-nano): at most 1,536 32-pixel patches, times the model's multiplier.
- Anthropic: about width x height / 750, with images above 1.15 megapixels scaled down:
  at most ~1,600 tokens.
- Gemini: 258 tokens an image at default resolution on 2.x; Gemini 3's high media
  resolution counts 1,120, the most a current model counts for one image.
- Any other provider (Mistral, Groq, Together, vLLM, ...): 4,096, what patch-based vision
  models such as Pixtral count for a 1024 x 1024 image (a token per 16 x 16 patch).
"""

from __future__ import annotations

import math

from runtime.catalogue import Model

OPENAI_TILE = (85, 170)
OPENAI_TILES_WORST = 8
OPENAI_TILE_BY_MODEL = {"gpt-4o-mini": (2833, 5667)}
OPENAI_PATCHES_MAX = 1536
OPENAI_PATCH_MULTIPLIER = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72,
                           "gpt-5-mini": 1.62, "gpt-5-nano": 2.46}
ANTHROPIC_IMAGE_TOKENS = 1_600
GEMINI_IMAGE_TOKENS = 1_120
DEFAULT_IMAGE_TOKENS = 4_096


def image_tokens(model: Model, detail: str | None = None) -> int:
    """Worst-case prompt tokens of one image of unknown size on `model`."""
    dialect = model.provider.descriptor.dialect
    if dialect == "openai" and model.provider.id == "openai":
        return openai_image_tokens(model.upstream, detail)
    if dialect == "anthropic":
        return ANTHROPIC_IMAGE_TOKENS
    if dialect == "gemini":
        return GEMINI_IMAGE_TOKENS
    return DEFAULT_IMAGE_TOKENS


def openai_image_tokens(upstream: str, detail: str | None = None) -> int:
    name = upstream.rsplit("/", 1)[-1]
    for prefix, multiplier in OPENAI_PATCH_MULTIPLIER.items():
        if name.startswith(prefix):
            return math.ceil(OPENAI_PATCHES_MAX * multiplier)
    base, tile = next((v for k, v in OPENAI_TILE_BY_MODEL.items() if name.startswith(k)),
                      OPENAI_TILE)
    if detail == "low":
        return base
    return base + OPENAI_TILES_WORST * tile
