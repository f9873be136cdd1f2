"""An upper bound on a request's prompt tokens, for the hold taken before forwarding it.

Any text token is at least one byte of the request body, so the body's length bounds the
text. Inline images are the exception: their base64 bytes are far more than the tokens an
image costs (OpenAI, Anthropic and Gemini charge at most a few thousand tokens per image),
and counting them as tokens would refuse an image request to an account that can easily pay
for it. Each inline image counts IMAGE_TOKENS instead of its bytes. Audio and files keep
their bytes: their token cost grows with their length.
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKENS = 6_000


def prompt_token_bound(raw: bytes, body: Any) -> int:
    image_bytes, images = _inline_images(body)
    return len(raw) - image_bytes + images * IMAGE_TOKENS


def _inline_images(node: Any) -> tuple[int, int]:
    """(bytes, count) of base64 images: `data:image/...` URLs (OpenAI chat and Responses)
    and `{"type": "base64", "media_type": "image/...", "data": ...}` sources (Anthropic)."""
    size = count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if (item.get("type") == "base64" and isinstance(item.get("data"), str)
                    and str(item.get("media_type", "")).startswith("image/")):
                size, count = size + len(item["data"]), count + 1
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.startswith("data:image/"):
            size, count = size + len(item), count + 1
    return size, count
