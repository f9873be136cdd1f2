"""POST /v1/embeddings: OpenAI embeddings from any provider the catalogue lists them for.

Order of work: authenticate (401), read and validate the body (400/413), resolve the model
(404/400), check `dimensions` against the catalogue (400 when the model cannot shorten its
vectors or not that far), hold the worst case (403), call the provider, answer in OpenAI's
shape in input order, and settle from the provider's token count.

`encoding_format` is honoured for every provider: vectors the provider returns as floats are
encoded to base64 (little-endian float32) here, and base64 is decoded when floats were asked.
A provider that reports no usage (Gemini) is charged for an estimate of 4 characters per token
of the input texts.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import falcon

from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage, hold_micro, micro_to_credits
from runtime.billing.unit_pricing import input_tokens_cost
from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError
from runtime.gateway import Gateway
from runtime.ops import MappingError
from runtime.providers.embeddings import EMBED_ADAPTERS, Vector
from runtime.upstream import read_json

CHARS_PER_TOKEN = 4


def to_base64(vector: Vector) -> str:
    if isinstance(vector, str):
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def to_floats(vector: Vector) -> list[float]:
    if isinstance(vector, list):
        return vector
    raw = base64.b64decode(vector)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def input_items(value: Any) -> list[Any]:
    """The inputs as a list: a string or a single token array is one input."""
    if isinstance(value, str) or (isinstance(value, list) and value
                                  and isinstance(value[0], int)):
        return [value]
    return list(value)


def estimate_tokens(items: list[Any]) -> int:
    return sum(len(i) if isinstance(i, list) else math.ceil(len(i) / CHARS_PER_TOKEN)
               for i in items)


def check_dimensions(body: dict[str, Any], model: Model) -> None:
    wanted = body.get("dimensions")
    if wanted is None:
        return
    if not model.dimensions:
        raise BadRequest(f"The model '{model.id}' cannot change the size of its vectors; "
                         "omit 'dimensions'.", param="dimensions")
    if wanted > max(model.dimensions):
        raise BadRequest(f"'dimensions' must be at most {max(model.dimensions)} for "
                         f"'{model.id}', got {wanted}.", param="dimensions")


class Embeddings:
    kind = "embeddings"

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        gw = self.gw
        key = gw.authenticate(req)
        raw, body = gw.json_body(req, self.kind)
        client_model = body["model"]
        model = gw.model_for(client_model, self.kind)
        check_dimensions(body, model)
        adapter = EMBED_ADAPTERS.get(model.provider.descriptor.dialect)
        if adapter is None:
            raise GatewayError(f"Embeddings with '{client_model}' are not available: this "
                               "gateway cannot speak the provider's embeddings format.",
                               status=501, type="not_implemented")
        items = input_items(body["input"])
        try:
            call = adapter.build(body, model)
        except MappingError as exc:
            raise BadRequest(exc.message, param=exc.param) from None

        meter = Meter(gw.store, key, self.kind, client_model, model.provider.id)
        # every byte of the body could be a token: a hold that always covers
        meter.reserve(hold_micro(input_tokens_cost(model, len(raw))))
        resp.set_header("X-Request-Id", meter.request_id)
        with meter.releasing_on_failure():
            upstream = gw.forward(call, model, adapter.error)
            vectors, tokens = adapter.parse(read_json(upstream), model, len(items))
        estimated = tokens is None
        tokens = estimate_tokens(items) if tokens is None else tokens
        usage = Usage(prompt_tokens=tokens)
        if estimated:
            usage.units["estimated_tokens"] = tokens
        meter.settle(usage, input_tokens_cost(model, tokens), 200)
        encode = to_base64 if body.get("encoding_format") == "base64" else to_floats
        resp.data = json.dumps({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                     for i, v in enumerate(vectors)],
            "model": client_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                      "cost": micro_to_credits(meter.charged)},
        }).encode()
        resp.content_type = falcon.MEDIA_JSON
