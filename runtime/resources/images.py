"""POST /v1/images/generations (JSON), /v1/images/edits and /v1/images/variations
(multipart/form-data), to OpenAI and OpenAI-compatible image APIs.

`model` may be omitted: the catalogue's `defaults` names the model (`images.generations`,
also used for edits and variations when it serves them). Multipart uploads are spooled part by
part (runtime.multipart) and streamed to the provider; missing parts are a 400 naming them.

Charging: per image by model, size and quality from the catalogue's `per_image` table (the
hold is the price of `n` images, the charge the price of the images returned), or, for
gpt-image models, from the token usage the provider reports (text input, image input and
image output tokens at their own prices; without usage, OpenAI's output-token table for the
size and quality). The answer's `usage` carries `cost` in credits.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import falcon

from runtime import multipart
from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage, hold_micro, micro_to_credits
from runtime.billing.unit_pricing import (
    gpt_image_hold,
    gpt_image_output_tokens,
    gpt_image_usage_cost,
    images_cost,
    is_token_priced_image,
)
from runtime.catalogue import Model
from runtime.errors import BadRequest, UpstreamError
from runtime.gateway import Gateway, provider_body
from runtime.providers.base import UpstreamCall, json_headers, query_auth
from runtime.upstream import read_json

MAX_IMAGES = 10


def resolve_model(gw: Gateway, model_id: Any, kind: str) -> Model:
    if model_id in (None, ""):
        model_id = gw.catalogue.defaults.get(kind) or gw.catalogue.defaults.get(
            "images.generations")
        if model_id is None:
            raise BadRequest("'model' is required: this gateway has no default image model.",
                             param="model")
    return gw.model_for(model_id, kind)


def hold_for(model: Model, size: str | None, quality: str | None, n: int, prompt: str,
             input_images: int = 0) -> int:
    if is_token_priced_image(model):
        return hold_micro(gpt_image_hold(model, len(prompt), n, size, quality, input_images))
    return hold_micro(images_cost(model, size, quality, n))


def settle(meter: Meter, model: Model, payload: Any, size: str | None,
           quality: str | None) -> dict[str, Any]:
    """Charge for what the provider produced; returns the answer with `usage.cost`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        meter.fail(502)
        raise UpstreamError("The upstream provider answered without images.")
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
    meter.settle(logged, cost, 200)
    usage["cost"] = micro_to_credits(meter.charged)
    return payload


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _call(gw: Gateway, meter: Meter, model: Model, kind: str, headers: dict[str, str],
          body: Any) -> Any:
    """Send and read the whole JSON answer; failures release the hold."""
    call = UpstreamCall("POST", model.provider.url(kind, model.upstream), headers, body,
                        query_auth(model))
    with meter.releasing_on_failure():
        return read_json(gw.forward(call, model))


def _answer(resp: falcon.Response, payload: dict[str, Any]) -> None:
    resp.data = json.dumps(payload).encode()
    resp.content_type = falcon.MEDIA_JSON


class ImageGenerations:
    kind = "images.generations"

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        gw = self.gw
        key = gw.authenticate(req)
        _raw, body = gw.json_body(req, self.kind)
        model = resolve_model(gw, body.get("model"), self.kind)
        size, quality = body.get("size"), body.get("quality")
        n = body.get("n") or 1
        hold = hold_for(model, size, quality, n, body["prompt"])
        native = provider_body(model, self.kind, body)

        meter = Meter(gw.store, key, self.kind, model.id, model.provider.id)
        meter.reserve(hold)
        resp.set_header("X-Request-Id", meter.request_id)
        payload = _call(gw, meter, model, self.kind, json_headers(model),
                        json.dumps(native).encode())
        _answer(resp, settle(meter, model, payload, size, quality))


class _ImageUpload:
    """Edits and variations: the same flow over a multipart form."""

    kind = ""
    required_text: tuple[str, ...] = ()

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = self.gw.authenticate(req)
        with self.gw.form_body(req) as form:
            self._serve(form, key, resp)

    def _serve(self, form: multipart.Form, key: Any, resp: falcon.Response) -> None:
        gw = self.gw
        multipart.require(form, files=("image",), text=self.required_text)
        fields = form.text_fields()
        model = resolve_model(gw, _text(fields, "model"), self.kind)
        n = multipart.int_field(fields, "n", 1, MAX_IMAGES) or 1
        size, quality = _text(fields, "size"), _text(fields, "quality")
        images = form.files("image")
        hold = hold_for(model, size, quality, n, _text(fields, "prompt") or "", len(images))
        native = provider_body(model, self.kind, fields)
        body = multipart.MultipartBody(multipart.resend_fields(form, native))
        headers = json_headers(model)
        headers["Content-Type"] = body.content_type

        meter = Meter(gw.store, key, self.kind, model.id, model.provider.id)
        meter.reserve(hold)
        resp.set_header("X-Request-Id", meter.request_id)
        payload = _call(gw, meter, model, self.kind, headers, body)
        _answer(resp, settle(meter, model, payload, size, quality))


def _text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, list):
        raise BadRequest(f"'{name}' must be sent once.", param=name)
    return value or None


class ImageEdits(_ImageUpload):
    kind = "images.edits"
    required_text = ("prompt",)


class ImageVariations(_ImageUpload):
    kind = "images.variations"
