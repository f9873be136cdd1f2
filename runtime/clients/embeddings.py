"""OpenAI embeddings clients (`POST /v1/embeddings`) to any provider the catalogue lists them
for: hold policy, exchange, answer in OpenAI's shape in input order, charged from the
provider's token count. `dimensions` is checked against the catalogue (400 when the model
cannot shorten its vectors, or not that far). The hold counts every byte of the body as a
token: it always covers.

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

from runtime.billing.pricing import Usage, hold_nano, nano_to_credits
from runtime.billing.unit_pricing import input_tokens_cost
from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError
from runtime.pipeline.route import Answer, Request
from runtime.providers.embeddings import EMBED_ADAPTERS, Vector
from runtime.upstream import UpstreamResponse, read_json

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


def hold(request: Request, model: Model) -> int:
    return hold_nano(input_tokens_cost(model, len(request.raw)))


class EmbeddingsExchange:
    stream = False

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        check_dimensions(request.body, model)
        adapter = EMBED_ADAPTERS.get(model.provider.descriptor.dialect)
        if adapter is None:
            raise GatewayError(f"Embeddings with '{shown}' are not available: this gateway "
                               "cannot speak the provider's embeddings format.",
                               status=501, type="not_implemented")
        self.adapter, self.model, self.shown, self.body = adapter, model, shown, request.body
        self.items = input_items(request.body["input"])
        self.call = adapter.build(request.body, model)
        self.error = adapter.error

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return False

    def whole(self, upstream: UpstreamResponse) -> Answer:
        vectors, tokens = self.adapter.parse(read_json(upstream), self.model, len(self.items))
        estimated = tokens is None
        tokens = estimate_tokens(self.items) if tokens is None else tokens
        usage = Usage(prompt_tokens=tokens)
        if estimated:
            usage.units["estimated_tokens"] = tokens
        encode = to_base64 if self.body.get("encoding_format") == "base64" else to_floats

        def render(charged: int) -> bytes:
            return json.dumps({
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                         for i, v in enumerate(vectors)],
                "model": self.shown,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                          "cost": nano_to_credits(charged)},
            }).encode()

        return Answer(usage, input_tokens_cost(self.model, tokens), render)

    def stream_body(self, *args: object) -> None:
        raise AssertionError("embeddings are never streamed")
