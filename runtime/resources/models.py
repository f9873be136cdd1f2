"""GET /v1/models, /v1/models/{id} and /v1beta/models: the models this gateway can serve
now (their provider has a key, or is a keyless local server), in OpenAI's list shape with
TokModel's `pricing` (USD list prices). The list is rendered once per worker; a key with a
model allow-list sees only the models it may use. The list names
catalogue ids only; `/v1/models/{alias}` answers with the aliased model's object.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from runtime.catalogue import Model
from runtime.errors import NotFound
from runtime.gateway import Gateway
from runtime.limits.policy import KeyLimits


def _number(value: Any) -> Any:
    if isinstance(value, str):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    return value


def model_object(model: Model) -> dict[str, Any]:
    out: dict[str, Any] = {"id": model.id, "object": "model", "created": model.created,
                           "owned_by": model.owned_by, "endpoints": list(model.endpoints),
                           "pricing": _number(dict(model.pricing))}
    if model.context_window:
        out["context_window"] = model.context_window
    if model.max_output_tokens:
        out["max_output_tokens"] = model.max_output_tokens
    return out


class Models:
    kind = "models"

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        usable = sorted(gateway.catalogue.usable_models(), key=lambda m: m.id)
        self._objects = {m.id: json.dumps(model_object(m)).encode() for m in usable}
        self._list = json.dumps({"object": "list",
                                 "data": [model_object(m) for m in usable]}).encode()

    def _list_for(self, limits: KeyLimits) -> bytes:
        """The list of a key with a model allow-list: only the models it may use."""
        return (b'{"object": "list", "data": ['
                + b", ".join(obj for model_id, obj in self._objects.items()
                             if limits.allows(model_id))
                + b"]}")

    def on_get(self, req: falcon.Request, resp: falcon.Response,
               model_id: str | None = None) -> None:
        key = self.gw.authenticate(req)
        resp.content_type = falcon.MEDIA_JSON
        allowed = None if key.limits is None or key.limits.models is None else key.limits
        if model_id is None:
            resp.data = self._list if allowed is None else self._list_for(allowed)
            return
        found = self._objects.get(model_id)
        canonical = model_id
        if found is None:
            # An alias answers with its model's object (canonical id), as Anthropic's API
            # answers for its own aliases.
            model = self.gw.catalogue.get(model_id)
            if model is not None:
                found, canonical = self._objects.get(model.id), model.id
        if found is not None and allowed is not None and not allowed.allows(canonical):
            found = None   # a model the key may not use is, to it, not there
        if found is None:
            raise NotFound(f"The model '{model_id}' does not exist or is not available on "
                           "this gateway. List the available models with GET /v1/models.",
                           param="model", type="invalid_request_error")
        resp.data = found
