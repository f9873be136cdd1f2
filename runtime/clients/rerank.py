"""Rerank clients (`POST /v1/rerank`): rank documents against a query with Cohere, Jina,
Voyage or an OpenAI-compatible rerank server (vLLM style).

Request (gateway style): `{model, query, documents: [str | {"text"}], top_n?,
return_documents?}`. Answer: `{"id", "model", "results": [{"index", "relevance_score",
"document"?: {"text"}}], "usage": {"total_tokens"?, "search_units"?, "cost"}}`, results
sorted by descending score and cut to `top_n`; `document` only when `return_documents` is
true, always taken from the client's own request.

Charging follows the catalogue: `per_search` (Cohere's search units as billed; one unit per
100 documents when the provider reports none) or `input_per_mtok` (the provider's token
count; when it reports none, 4 characters per token of the query paired with each document).
The usage row records the documents ranked (`documents` in its details) next to what was
billed (`searches`, or the tokens), whichever way the model is priced.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from runtime.billing.pricing import Usage, hold_nano, nano_to_credits
from runtime.billing.unit_pricing import input_tokens_cost, search_cost
from runtime.catalogue import Model
from runtime.errors import GatewayError
from runtime.pipeline.route import Answer, Request
from runtime.providers.rerank import RERANK_ADAPTERS
from runtime.upstream import UpstreamResponse, read_json

DOCUMENTS_PER_SEARCH = 100
CHARS_PER_TOKEN = 4


def searches_for(count: int) -> int:
    return math.ceil(count / DOCUMENTS_PER_SEARCH)


def estimate_tokens(query: str, texts: list[str]) -> int:
    return sum(math.ceil((len(query) + len(t)) / CHARS_PER_TOKEN) for t in texts)


def cost_of(model: Model, billed: dict[str, int], query: str, texts: list[str]
            ) -> tuple[Any, Usage]:
    """(exact nano-credits, usage for the log) from what the provider billed."""
    usage = Usage(units={"documents": len(texts)})
    if "per_search" in model.pricing:
        searches = billed.get("search_units") or searches_for(len(texts))
        billed.setdefault("search_units", searches)
        usage.units["searches"] = searches
        return search_cost(model, searches), usage
    tokens = billed.get("total_tokens")
    if tokens is None:
        tokens = estimate_tokens(query, texts)
        usage.units["estimated_tokens"] = tokens
        billed["total_tokens"] = tokens
    usage.prompt_tokens = tokens
    return input_tokens_cost(model, tokens), usage


def texts_of(body: Any) -> list[str]:
    return [d if isinstance(d, str) else d["text"] for d in body["documents"]]


def hold(request: Request, model: Model) -> int:
    return hold_for(model, request.body["query"], texts_of(request.body))


def hold_for(model: Model, query: str, texts: list[str]) -> int:
    """Covers chunked documents (Cohere bills a long document as several) and one token per
    character of every query-document pair."""
    if "per_search" in model.pricing:
        return hold_nano(search_cost(model, 2 * searches_for(len(texts))))
    return hold_nano(input_tokens_cost(model, len(query) * len(texts) + sum(map(len, texts))))


class RerankExchange:
    stream = False

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        adapter = RERANK_ADAPTERS.get(model.provider.descriptor.dialect)
        if adapter is None:
            raise GatewayError(f"Rerank with '{shown}' is not available: this gateway "
                               "cannot speak the provider's rerank format.", status=501,
                               type="not_implemented")
        self.adapter, self.model, self.shown, self.body = adapter, model, shown, request.body
        self.texts = texts_of(request.body)
        native = {k: v for k, v in request.body.items()
                  if k not in ("documents", "return_documents")}
        native["documents"] = self.texts
        self.call = adapter.build(native, model)
        self.error = adapter.error

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return False

    def whole(self, upstream: UpstreamResponse) -> Answer:
        body, texts = self.body, self.texts
        scores, billed = self.adapter.parse(read_json(upstream), len(texts))
        cost, usage = cost_of(self.model, billed, body["query"], texts)
        scores.sort(key=lambda s: s[1], reverse=True)
        top_n = body.get("top_n")
        if isinstance(top_n, int):
            scores = scores[:top_n]
        results = []
        for index, score in scores:
            item: dict[str, Any] = {"index": index, "relevance_score": score}
            if body.get("return_documents") is True:
                item["document"] = {"text": texts[index]}
            results.append(item)

        def render(charged: int) -> bytes:
            return json.dumps({
                "id": "rerank-" + secrets.token_hex(16), "model": self.shown,
                "results": results,
                "usage": {**billed, "cost": nano_to_credits(charged)},
            }).encode()

        return Answer(usage, cost, render)

    def stream_body(self, *args: object) -> None:
        raise AssertionError("rerank is never streamed")
