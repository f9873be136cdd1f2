"""OpenAI image clients: `POST /v1/images/generations` (JSON), `/v1/images/edits` and
`/v1/images/variations` (multipart/form-data), to OpenAI and OpenAI-compatible image APIs.

`model` may be omitted: the catalogue's `defaults` names the model (`images.generations`,
also used for edits and variations when it serves them). Multipart uploads are spooled part by
part (runtime.multipart) and streamed to the provider; missing parts are a 400 naming them.
Uploads too large to keep in memory are held before they are spooled (`upload_prehold`:
the fields sent before the images, the dearest case for those not sent yet; see
runtime/pipeline/form_hold.py) and charged for the images returned.

Charging: per image by model, size and quality from the catalogue's `per_image` table (the
hold is the price of `n` images, the charge the price of the images returned), or, for
gpt-image models, from the token usage the provider reports (text input, image input and
image output tokens at their own prices; without usage, OpenAI's output-token table for the
size and quality). The answer's `usage` carries `cost` in credits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from runtime import multipart
from runtime.billing.pricing import NANO, Usage, hold_nano, nano_to_credits
from runtime.billing.unit_pricing import (
    dearest_image_price,
    gpt_image_hold,
    gpt_image_output_tokens,
    gpt_image_usage_cost,
    images_cost,
    is_token_priced_image,
)
from runtime.catalogue import Model
from runtime.errors import BadRequest, UpstreamError
from runtime.gateway import provider_body
from runtime.pipeline.route import Answer, Request
from runtime.providers.base import UpstreamCall, json_headers, query_auth
from runtime.providers.openai_chat import openai_error
from runtime.upstream import UpstreamResponse, read_json

MAX_IMAGES = 10
MAX_INPUT_IMAGES = 16      # input images of an edit (OpenAI's limit for gpt-image models)
MAX_PROMPT_CHARS = 32_000  # an edit's prompt (OpenAI's limit for gpt-image models)


def hold_for(model: Model, size: str | None, quality: str | None, n: int, prompt: str,
             input_images: int = 0) -> int:
    if is_token_priced_image(model):
        return hold_nano(gpt_image_hold(model, len(prompt), n, size, quality, input_images))
    return hold_nano(images_cost(model, size, quality, n))


def generation_hold(request: Request, model: Model) -> int:
    body = request.body
    return hold_for(model, body.get("size"), body.get("quality"), body.get("n") or 1,
                    body["prompt"])


def upload_hold(request: Request, model: Model) -> int:
    fields = request.fields
    n = multipart.int_field(fields, "n", 1, MAX_IMAGES) or 1
    images = request.form.files("image") if request.form else []
    return hold_for(model, _text(fields, "size"), _text(fields, "quality"), n,
                    _text(fields, "prompt") or "", len(images))


def upload_prehold(fields: Mapping[str, Any], body_bytes: int, model: Model) -> int:
    """Before the images are read: the fields sent so far, and for those still to come the
    dearest case (MAX_IMAGES images at the dearest size and quality, a prompt of
    MAX_PROMPT_CHARS, MAX_INPUT_IMAGES input images)."""
    n = multipart.int_field(fields, "n", 1, MAX_IMAGES) if "n" in fields else MAX_IMAGES
    size, quality = _text(fields, "size"), _text(fields, "quality")
    prompt_chars = (len(_text(fields, "prompt") or "") if "prompt" in fields
                    else min(body_bytes, MAX_PROMPT_CHARS))
    if is_token_priced_image(model):
        return hold_nano(gpt_image_hold(model, prompt_chars, n or 1, size, quality,
                                        MAX_INPUT_IMAGES))
    if "size" not in fields or "quality" not in fields:
        return hold_nano(dearest_image_price(model, size) * (n or 1) * NANO)
    return hold_nano(images_cost(model, size, quality, n or 1))


def _text(fields: Any, name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, list):
        raise BadRequest(f"'{name}' must be sent once.", param=name)
    return value or None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class ImagesExchange:
    """Generations from JSON, edits and variations from a form: one JSON answer."""

    stream = False
    error = staticmethod(openai_error)

    def __init__(self, kind: str, request: Request, model: Model, shown: str) -> None:
        self.model = model
        if request.form is None:
            self.size, self.quality = request.body.get("size"), request.body.get("quality")
            body: Any = json.dumps(provider_body(model, kind, request.body)).encode()
            headers = json_headers(model)
        else:
            self.size, self.quality = (_text(request.fields, "size"),
                                       _text(request.fields, "quality"))
            native = provider_body(model, kind, request.fields)
            body = multipart.MultipartBody(multipart.resend_fields(request.form, native))
            headers = json_headers(model)
            headers["Content-Type"] = body.content_type
        self.call = UpstreamCall("POST", model.provider.url(kind, model.upstream), headers,
                                 body, query_auth(model))

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return False

    def whole(self, upstream: UpstreamResponse) -> Answer:
        payload = read_json(upstream)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise UpstreamError("The upstream provider answered without images.")
        model, size, quality = self.model, self.size, self.quality
        count = len(payload["data"])
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        if is_token_priced_image(model):
            if usage is None:
                tokens = count * gpt_image_output_tokens(payload.get("size") or size,
                                                         payload.get("quality") or quality)
                usage = {"input_tokens": 0, "output_tokens": tokens, "total_tokens": tokens}
                payload["usage"] = usage
            cost = gpt_image_usage_cost(model, usage)
            logged = Usage(prompt_tokens=_count(usage.get("input_tokens")),
                           completion_tokens=_count(usage.get("output_tokens")))
        else:
            cost = images_cost(model, size, quality, count) if count else Decimal(0)
            usage = payload["usage"] = dict(usage or {}, images=count)
            logged = Usage()
        logged.units["images"] = count

        def render(charged: int) -> bytes:
            usage["cost"] = nano_to_credits(charged)
            return json.dumps(payload).encode()

        return Answer(logged, cost, render)

    def stream_body(self, *args: object) -> None:
        raise AssertionError("image answers are never streamed")


def generations(request: Request, model: Model, shown: str) -> ImagesExchange:
    return ImagesExchange("images.generations", request, model, shown)


def edits(request: Request, model: Model, shown: str) -> ImagesExchange:
    return ImagesExchange("images.edits", request, model, shown)


def variations(request: Request, model: Model, shown: str) -> ImagesExchange:
    return ImagesExchange("images.variations", request, model, shown)


def check_edit(request: Request) -> None:
    multipart.require(request.form, files=("image",), text=("prompt",))
    if len(request.form.files("image")) > MAX_INPUT_IMAGES:
        raise BadRequest(f"Send at most {MAX_INPUT_IMAGES} 'image' parts.", param="image")


def check_variation(request: Request) -> None:
    multipart.require(request.form, files=("image",))
