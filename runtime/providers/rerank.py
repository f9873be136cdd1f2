"""Rerank adapters by provider dialect: the gateway's rerank request in, one upstream call out,
and the scores and billed units back.

`build(body, model)` receives `{model, query, documents: [str], top_n?, return_documents?}`
(documents already reduced to their text) and applies the descriptor's generated mapping
(`translate["rerank"]`, e.g. Voyage's `top_n` -> `top_k`). `parse(payload)` returns
`(scores, billed)`: `scores` is a list of (index, relevance_score) pairs and `billed` holds
`total_tokens` and/or `search_units` when the provider reports them. Document text is never
taken from the provider: the gateway has the client's own copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from runtime.catalogue import Model
from runtime.errors import GatewayError, UpstreamError
from runtime.providers.base import UpstreamCall, json_headers, query_auth
from runtime.providers.embeddings import native_error
from runtime.providers.openai_chat import openai_error

Scores = list[tuple[int, float]]


class RerankAdapter(Protocol):
    def build(self, body: dict[str, Any], model: Model) -> UpstreamCall: ...

    def parse(self, payload: Any, count: int) -> tuple[Scores, dict[str, int]]: ...

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError: ...


def _scores(items: Any, count: int) -> Scores:
    if not isinstance(items, list):
        raise UpstreamError("The upstream provider answered without rerank results.")
    out: Scores = []
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get("relevance_score") if isinstance(item, dict) else None
        if (not isinstance(index, int) or not 0 <= index < count
                or not isinstance(score, int | float) or isinstance(score, bool)):
            raise UpstreamError("The upstream provider answered with an invalid rerank result.")
        out.append((index, float(score)))
    return out


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


class _Base:
    results_key = "results"

    def build(self, body: dict[str, Any], model: Model) -> UpstreamCall:
        body = dict(body, model=model.upstream)
        body = model.provider.descriptor.translate["rerank"](body)
        return UpstreamCall("POST", model.provider.url("rerank", model.upstream),
                            json_headers(model), json.dumps(body).encode(), query_auth(model))

    def parse(self, payload: Any, count: int) -> tuple[Scores, dict[str, int]]:
        if not isinstance(payload, dict):
            raise UpstreamError("The upstream provider answered without rerank results.")
        scores = _scores(payload.get(self.results_key), count)
        billed: dict[str, int] = {}
        usage = payload.get("usage")
        if isinstance(usage, dict) and _int(usage.get("total_tokens")) is not None:
            billed["total_tokens"] = _int(usage.get("total_tokens"))
        meta = payload.get("meta")
        units = meta.get("billed_units") if isinstance(meta, dict) else None
        if isinstance(units, dict):
            for key in ("search_units", "total_tokens"):
                if _int(units.get(key)) is not None:
                    billed[key] = _int(units.get(key))
        return scores, billed

    error = staticmethod(native_error)


class JinaRerank(_Base):
    """Jina /v1/rerank and OpenAI-compatible servers (vLLM, ...): `results`, `usage`."""


class OpenAICompatibleRerank(_Base):
    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError:
        return openai_error(status, raw, headers, model)


class CohereRerank(_Base):
    """Cohere v2: `results`, `meta.billed_units.search_units`."""


class VoyageRerank(_Base):
    """Voyage: results under `data`, `usage.total_tokens`."""

    results_key = "data"


RERANK_ADAPTERS: dict[str, RerankAdapter] = {
    "openai": OpenAICompatibleRerank(),
    "jina": JinaRerank(),
    "cohere": CohereRerank(),
    "voyage": VoyageRerank(),
}
