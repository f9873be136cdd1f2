"""Embedding adapters by provider dialect: one OpenAI embeddings request in, one upstream call
out, and the vectors (in input order) and token count back.

`build(body, model)` takes the validated client body (OpenAI shape) and applies the
descriptor's generated mapping (`translate["embeddings"]`) where the provider's fields are a
renaming of OpenAI's; the structure that is not field mapping (Gemini's one request per text)
is written here. `parse(payload, model, count)` returns `(vectors, tokens)`: each vector is a
list of floats or an OpenAI base64 string, `tokens` is None when the provider reports no
usage. `error(...)` turns a provider's error answer into a GatewayError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError, UpstreamError
from runtime.providers.base import (
    UpstreamCall,
    credential_error,
    json_headers,
    mapped_status,
    message_from,
    query_auth,
    retry_headers,
)
from runtime.providers.openai_chat import openai_error

Vector = list[float] | str


class EmbedAdapter(Protocol):
    def build(self, body: dict[str, Any], model: Model) -> UpstreamCall: ...

    def parse(self, payload: Any, model: Model, count: int) -> tuple[list[Vector], int | None]: ...

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError: ...


def native_error(status: int, raw: bytes, headers: Mapping[str, str],
                 model: Model) -> GatewayError:
    """A non-OpenAI provider's error, re-told in the gateway's envelope with its status."""
    if status in (401, 403) or b"API_KEY_INVALID" in raw:
        return credential_error(model)
    status = mapped_status(status, model)
    message = message_from(raw) or f"The upstream provider returned HTTP {status}."
    return GatewayError(message, status=status, type="upstream_error",
                        headers=retry_headers(headers))


def texts_of(body: dict[str, Any], model: Model) -> list[str]:
    """The input as a list of texts, for providers that cannot take token arrays."""
    value = body["input"]
    if isinstance(value, str):
        return [value]
    if all(isinstance(v, str) for v in value):
        return list(value)
    raise BadRequest(f"'input' as token arrays is not supported by '{model.id}'; send text.",
                     param="input")


def _call(model: Model, body: dict[str, Any]) -> UpstreamCall:
    return UpstreamCall("POST", model.provider.url("embeddings", model.upstream),
                        json_headers(model), json.dumps(body).encode(), query_auth(model))


def _bad_answer() -> UpstreamError:
    return UpstreamError("The upstream provider answered without the expected embeddings.")


def _check_count(vectors: list[Any], count: int) -> None:
    if len(vectors) != count or not all(isinstance(v, list | str) for v in vectors):
        raise _bad_answer()


class OpenAIEmbeddings:
    """OpenAI and OpenAI-shaped providers (also Jina): the body passes through."""

    def build(self, body: dict[str, Any], model: Model) -> UpstreamCall:
        body = dict(body, model=model.upstream)
        return _call(model, model.provider.descriptor.translate["embeddings"](body))

    def parse(self, payload: Any, model: Model, count: int) -> tuple[list[Vector], int | None]:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise _bad_answer()
        ordered = sorted(data, key=lambda d: d.get("index", 0) if isinstance(
            d.get("index"), int) else 0)
        vectors = [d.get("embedding") for d in ordered]
        _check_count(vectors, count)
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        tokens = usage.get("prompt_tokens", usage.get("total_tokens"))
        return vectors, tokens if isinstance(tokens, int) else None

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError:
        return openai_error(status, raw, headers, model)


class CohereEmbeddings:
    """Cohere v2 /embed: `texts` in (renamed by the descriptor), `embeddings.float` out."""

    def build(self, body: dict[str, Any], model: Model) -> UpstreamCall:
        body = dict(body, model=model.upstream, input=texts_of(body, model))
        return _call(model, model.provider.descriptor.translate["embeddings"](body))

    def parse(self, payload: Any, model: Model, count: int) -> tuple[list[Vector], int | None]:
        embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
        vectors = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
        if not isinstance(vectors, list):
            raise _bad_answer()
        _check_count(vectors, count)
        meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
        billed = meta.get("billed_units") if isinstance(meta.get("billed_units"), dict) else {}
        tokens = billed.get("input_tokens")
        return vectors, int(tokens) if isinstance(tokens, int | float) else None

    error = staticmethod(native_error)


class GeminiEmbeddings:
    """Gemini batchEmbedContents: one request per text, each naming the model again; the
    answer keeps the order of the requests and carries no usage."""

    def build(self, body: dict[str, Any], model: Model) -> UpstreamCall:
        name = f"models/{model.upstream}"
        extra: dict[str, Any] = {}
        if body.get("dimensions") is not None:
            extra["outputDimensionality"] = body["dimensions"]
        for key in ("task_type", "taskType"):
            if isinstance(body.get(key), str):
                extra["taskType"] = body[key]
        requests = [{"model": name, "content": {"parts": [{"text": text}]}, **extra}
                    for text in texts_of(body, model)]
        return _call(model, {"requests": requests})

    def parse(self, payload: Any, model: Model, count: int) -> tuple[list[Vector], int | None]:
        items = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise _bad_answer()
        vectors = [i.get("values") for i in items]
        _check_count(vectors, count)
        usage = payload.get("usageMetadata")
        tokens = usage.get("promptTokenCount") if isinstance(usage, dict) else None
        return vectors, tokens if isinstance(tokens, int) else None

    error = staticmethod(native_error)


EMBED_ADAPTERS: dict[str, EmbedAdapter] = {
    "openai": OpenAIEmbeddings(),
    "jina": OpenAIEmbeddings(),
    "cohere": CohereEmbeddings(),
    "gemini": GeminiEmbeddings(),
}
