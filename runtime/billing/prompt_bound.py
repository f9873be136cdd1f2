"""An upper bound on a request's prompt tokens, for the hold taken before forwarding it.

Any text token is at least one byte of the request body, so the body's length bounds the
text. Images are the exception. Inline images: their base64 bytes are far more than the
tokens an image costs, and counting them as tokens would refuse an image request to an
account that can easily pay for it. Images by URL: their few bytes of URL are far less than
what the provider bills once it has fetched the image. So every image, inline or by URL
(OpenAI `image_url` and Responses `input_image` parts, Anthropic `image` blocks, and any
`data:image/` URL), counts a per-image token count instead of its bytes: at least
IMAGE_TOKENS, more when the model's documented worst case is higher
(runtime/billing/image_tokens.py). Images are never fetched for this. Audio and files keep
their bytes: their token cost grows with their length.
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKENS = 6_000


def prompt_token_bound(raw: bytes, body: Any, image_tokens: int = IMAGE_TOKENS) -> int:
    image_bytes, images = _images(body)
    return len(raw) - image_bytes + images * max(image_tokens, IMAGE_TOKENS)


def _images(node: Any) -> tuple[int, int]:
    """(bytes, count) of the images in a request body."""
    size = count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if _is_image(item):
                size, count = size + _string_bytes(item), count + 1
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.startswith("data:image/"):
            size, count = size + len(item), count + 1
    return size, count


def _is_image(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    if kind in ("image_url", "input_image"):
        return True
    if kind == "image" and isinstance(item.get("source"), dict):
        return True
    # an Anthropic base64 source on its own (a tool result's image, ...)
    return (kind == "base64" and isinstance(item.get("data"), str)
            and str(item.get("media_type", "")).startswith("image/"))


def _string_bytes(node: Any) -> int:
    """Characters of the strings in a part: never more than its bytes in the body."""
    total = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total
