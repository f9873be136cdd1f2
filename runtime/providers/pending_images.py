"""Image URLs a provider needs as bytes (Gemini's inline data), downloaded only after the
request's credits are held.

An adapter puts a `PendingImage(url, param)` where the image goes in its native request and
encodes the request with `encode(request)`: each pending image becomes a unique placeholder
string in the body bytes, listed in `UpstreamCall.images`. Translating a request therefore
never downloads anything, and a request naming more than TOKMODEL_MAX_IMAGES_PER_REQUEST
image URLs is a 400 before any download. After the hold, the pipeline calls `fetched(call)`,
which downloads each image (runtime/image_fetch.py: its size and address checks) and puts
`{"mimeType": ..., "data": <base64>}` in place of its placeholder, in one pass over the body.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from runtime.errors import BadRequest
from runtime.providers.base import UpstreamCall
from runtime.settings import Settings

_PREFIX = "tokmodel-pending-image-"
_PLACEHOLDER = re.compile(rb'"' + _PREFIX.encode() + rb'[0-9a-f]{32}"')


@dataclass(frozen=True, slots=True)
class PendingImage:
    url: str
    param: str   # where the URL was in the client's request, for error messages
    # random per image: a client cannot write one into its own text
    token: str = field(default_factory=lambda: _PREFIX + secrets.token_hex(16))


@cache
def max_images() -> int:
    return Settings.from_env().max_images_per_request


def encode(request: Any) -> tuple[bytes, tuple[PendingImage, ...]]:
    """The request as JSON bytes with a placeholder per PendingImage in it, and the images;
    400 past the per-request limit."""
    pending: list[PendingImage] = []

    def placeholder(value: object) -> str:
        if isinstance(value, PendingImage):
            pending.append(value)
            return value.token
        raise TypeError(f"{type(value).__name__} is not JSON")

    raw = json.dumps(request, ensure_ascii=False, default=placeholder).encode()
    limit = max_images()
    if len(pending) > limit:
        raise BadRequest(f"The request names {len(pending)} image URLs; at most {limit} can be "
                         "downloaded for one request (TOKMODEL_MAX_IMAGES_PER_REQUEST). Send "
                         "fewer, or send images inline as data URLs.", param=pending[limit].param)
    return raw, tuple(pending)


def fetched(call: UpstreamCall) -> UpstreamCall:
    """The call with its pending images downloaded into its body (the call itself when it
    has none); a download that fails is a 400 naming where the URL was."""
    if not call.images:
        return call
    from runtime.image_fetch import fetch_image  # only requests with URL images need it

    parts: dict[bytes, bytes] = {}
    for image in call.images:
        mime, raw = fetch_image(image.url, image.param)
        parts[f'"{image.token}"'.encode()] = (
            b'{"mimeType":' + json.dumps(mime).encode() + b',"data":"'
            + base64.b64encode(raw) + b'"}')
    body = _PLACEHOLDER.sub(lambda m: parts.get(m.group(0), m.group(0)), call.body)  # type: ignore[arg-type]
    return replace(call, body=body, images=())
