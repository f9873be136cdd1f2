"""A strict fake of the Gemini API's embeddings (protocols.md §4.6, §13.3).

Contract
--------
``FakeGemini`` checks ``x-goog-api-key`` (a wrong or missing key is Gemini's 400
``API_KEY_INVALID``) and serves ``POST /v1beta/models/{model}:batchEmbedContents`` and
``:embedContent``. Each batch request must repeat the model as ``models/{model}`` (matching
the URL) and carry ``content.parts[].text``; ``outputDimensionality`` is 1..3072. Vector ``i``
of a batch has component ``j`` equal to ``media_upstream.vector_value(i, j)``, 3072 components
by default; answers are in request order and carry no usage (like the real API), unless
``usage_metadata`` is True (then ``usageMetadata.promptTokenCount`` = words of all texts).
"""

from __future__ import annotations

from typing import Any

from requests.structures import CaseInsensitiveDict

from .http_fake import FakeServer, Received, Reject, Reply
from .media_upstream import vector_value, words

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
GEMINI_DIMS = 3072
_REQUEST_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality"}


class FakeGemini(FakeServer):
    routes = {("POST", "/v1beta/models/*"): "models_call", ("POST", "/v1/models/*"): "models_call"}

    def __init__(self, api_key: str | None = "goog-key", *, usage_metadata: bool = False,
                 models: tuple[str, ...] = ("gemini-embedding-001",)) -> None:
        super().__init__(api_key)
        self.usage_metadata = usage_metadata
        self.models = models

    def check_auth(self, headers: CaseInsensitiveDict[str], query: str) -> None:
        if self.api_key is not None and headers.get("x-goog-api-key") != self.api_key:
            raise Reject(400, "API key not valid. Please pass a valid API key.",
                         reason="API_KEY_INVALID")

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        err: dict[str, Any] = {"code": status, "message": message,
                               "status": _STATUS.get(status, "UNKNOWN")}
        if extra.get("reason"):
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                               "reason": extra["reason"], "domain": "googleapis.com"}]
        return {"error": err}

    def models_call(self, req: Received) -> Reply:
        name = req.path.split("/models/", 1)[1]
        model, _, method = name.partition(":")
        if model not in self.models:
            raise Reject(404, f"models/{model} is not found for API version v1beta.")
        if not isinstance(req.body, dict):
            raise Reject(400, "Invalid JSON payload received.")
        if method == "batchEmbedContents":
            requests = req.body.get("requests")
            if set(req.body) != {"requests"} or not isinstance(requests, list) or not requests:
                raise Reject(400, "Invalid JSON payload: 'requests' is required.")
            if len(requests) > 100:
                raise Reject(400, "At most 100 requests can be in one batch.")
            vectors = [self._embed(r, model, i) for i, r in enumerate(requests)]
            out: dict[str, Any] = {"embeddings": [{"values": v} for v in vectors]}
            if self.usage_metadata:
                out["usageMetadata"] = {"promptTokenCount": sum(
                    words(p["text"]) for r in requests for p in r["content"]["parts"])}
            return Reply.json(out)
        if method == "embedContent":
            return Reply.json({"embedding": {"values": self._embed(
                dict(req.body, model=f"models/{model}"), model, 0)}})
        raise Reject(404, f"Method {method} not found.")

    def _embed(self, request: Any, model: str, i: int) -> list[float]:
        if not isinstance(request, dict) or set(request) - _REQUEST_FIELDS:
            raise Reject(400, f"Invalid JSON payload: unknown field in requests[{i}].")
        if request.get("model") != f"models/{model}":
            raise Reject(400, f"requests[{i}].model must be 'models/{model}', as in the URL.")
        parts = (request.get("content") or {}).get("parts")
        if not isinstance(parts, list) or not parts or not all(
                isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]
                for p in parts):
            raise Reject(400, f"requests[{i}].content.parts must hold text.")
        dims = request.get("outputDimensionality", GEMINI_DIMS)
        if not isinstance(dims, int) or not 1 <= dims <= GEMINI_DIMS:
            raise Reject(400, "outputDimensionality must be between 1 and 3072.")
        return [vector_value(i, j) for j in range(dims)]
