"""Strict fakes of Cohere (v2 rerank and embed), Jina (rerank and embeddings) and Voyage
(rerank), as protocols.md §5 describes them.

Contract
--------
All check ``Authorization: Bearer <api_key>``. Scores come from
``media_upstream.score_documents`` (share of the query's words in each document), so tests can
predict the order.

* ``FakeCohere``: ``POST /v2/rerank`` needs model, query, documents (strings only, as v2);
  ``top_n``, ``max_tokens_per_doc`` optional, anything else a 400; answers ``{"id",
  "results":[{"index","relevance_score"}], "meta":{"billed_units":{"search_units"}}}``
  (one search unit per 100 documents, never document text). ``POST /v2/embed`` needs model,
  texts, input_type and embedding_types (which must include "float"); ``output_dimension``
  optional; answers ``embeddings.float`` and ``meta.billed_units.input_tokens`` (words).
  Errors are ``{"message"}``.
* ``FakeJina`` (base ``/v1``): ``POST /rerank`` (top_n, return_documents; ``usage.total_tokens``;
  ``document`` as ``{"text"}``) and ``POST /embeddings`` (OpenAI shape; ``embedding_type``
  float only, ``dimensions`` 32..1024, ``task``; ``usage.total_tokens`` and ``prompt_tokens``).
  Errors are ``{"detail"}``.
* ``FakeVoyage`` (base ``/v1``): ``POST /rerank`` with ``top_k`` (``top_n`` is refused),
  ``return_documents``, ``truncation``; results under ``data``, ``document`` a string,
  ``usage.total_tokens``. Errors are ``{"detail"}``.
"""

from __future__ import annotations

import math
from typing import Any

from .http_fake import FakeServer, Received, Reject, Reply, require_json
from .media_upstream import score_documents, vector_value, words


def _strict(req: Received, known: tuple[str, ...], required: tuple[str, ...]) -> dict:
    return require_json(req, known, required)


class FakeCohere(FakeServer):
    routes = {("POST", "/v2/rerank"): "rerank", ("POST", "/v2/embed"): "embed"}

    def __init__(self, api_key: str | None = "co-key") -> None:
        super().__init__(api_key)

    def rerank(self, req: Received) -> Reply:
        body = _strict(req, ("model", "query", "documents", "top_n", "max_tokens_per_doc"),
                       ("model", "query", "documents"))
        results, _tokens = score_documents(body["query"], body["documents"])
        if body.get("top_n"):
            results = results[:body["top_n"]]
        units = math.ceil(len(body["documents"]) / 100)
        return Reply.json({"id": "co-rerank-1", "results": results,
                           "meta": {"api_version": {"version": "2"},
                                    "billed_units": {"search_units": units}}})

    def embed(self, req: Received) -> Reply:
        body = _strict(req, ("model", "texts", "input_type", "embedding_types",
                             "output_dimension", "truncate"),
                       ("model", "texts", "input_type", "embedding_types"))
        texts = body["texts"]
        if not isinstance(texts, list) or not texts or not all(
                isinstance(t, str) for t in texts):
            raise Reject(400, "invalid request: texts must be a list of strings")
        if "float" not in body["embedding_types"]:
            raise Reject(400, "invalid request: embedding_types must include float")
        dims = body.get("output_dimension") or 1536
        if dims not in (256, 512, 1024, 1536):
            raise Reject(400, "invalid request: output_dimension must be one of "
                         "[256, 512, 1024, 1536]")
        vectors = [[vector_value(i, j) for j in range(dims)] for i in range(len(texts))]
        return Reply.json({"id": "co-embed-1", "texts": texts, "embeddings": {"float": vectors},
                           "response_type": "embeddings_by_type",
                           "meta": {"api_version": {"version": "2"},
                                    "billed_units": {"input_tokens": sum(map(words, texts))}}})


class FakeJina(FakeServer):
    base_path = "/v1"
    routes = {("POST", "/rerank"): "rerank", ("POST", "/embeddings"): "embeddings"}

    def __init__(self, api_key: str | None = "jina-key") -> None:
        super().__init__(api_key)

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"detail": message}

    def rerank(self, req: Received) -> Reply:
        body = _strict(req, ("model", "query", "documents", "top_n", "return_documents"),
                       ("model", "query", "documents"))
        results, tokens = score_documents(body["query"], body["documents"])
        if body.get("top_n"):
            results = results[:body["top_n"]]
        if body.get("return_documents", True):
            for r in results:
                r["document"] = {"text": body["documents"][r["index"]]}
        return Reply.json({"model": body["model"], "usage": {"total_tokens": tokens},
                           "results": results})

    def embeddings(self, req: Received) -> Reply:
        body = _strict(req, ("model", "input", "embedding_type", "dimensions", "task",
                             "normalized", "late_chunking"), ("model", "input"))
        items = body["input"]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            items = [items] if isinstance(items, str) else None
        if not items:
            raise Reject(422, "input must be a string or a list of strings")
        if body.get("embedding_type", "float") != "float":
            raise Reject(422, "this fake only serves float embeddings")
        dims = body.get("dimensions") or 1024
        if not 32 <= dims <= 1024:
            raise Reject(422, "dimensions must be between 32 and 1024")
        data = [{"object": "embedding", "index": i,
                 "embedding": [vector_value(i, j) for j in range(dims)]}
                for i in range(len(items))]
        tokens = sum(map(words, items))
        return Reply.json({"model": body["model"], "object": "list", "data": data,
                           "usage": {"total_tokens": tokens, "prompt_tokens": tokens}})


class FakeVoyage(FakeServer):
    base_path = "/v1"
    routes = {("POST", "/rerank"): "rerank"}

    def __init__(self, api_key: str | None = "voyage-key") -> None:
        super().__init__(api_key)

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"detail": message}

    def rerank(self, req: Received) -> Reply:
        body = _strict(req, ("model", "query", "documents", "top_k", "return_documents",
                             "truncation"), ("model", "query", "documents"))
        results, tokens = score_documents(body["query"], body["documents"])
        if body.get("top_k"):
            results = results[:body["top_k"]]
        if body.get("return_documents"):
            for r in results:
                r["document"] = body["documents"][r["index"]]
        return Reply.json({"object": "list", "model": body["model"], "data": results,
                           "usage": {"total_tokens": tokens}})
