"""What every /v1 request shares: the services a resource needs, and the steps before the
upstream call (authenticate, read and validate the body, resolve the model).

`Gateway` is built once per worker by create_app and handed to every resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import falcon

from runtime import inbound
from runtime.catalogue import Catalogue, Model
from runtime.errors import BadRequest, NotFound, Unauthorized
from runtime.settings import Settings
from runtime.store import KeyRecord, Store
from runtime.upstream import Upstream
from runtime.validation import Validator


@dataclass
class Gateway:
    settings: Settings
    catalogue: Catalogue
    store: Store
    upstream: Upstream
    validator: Validator
    endpoints: dict[str, Any]

    def authenticate(self, req: falcon.Request) -> KeyRecord:
        secret = inbound.api_key(req)
        key = self.store.authenticate(secret) if secret else None
        if key is None:
            raise Unauthorized()
        return key

    def json_body(self, req: falcon.Request, kind: str) -> tuple[bytes, dict[str, Any]]:
        raw, body = inbound.read_json(req, self.settings.max_body_bytes)
        endpoint = self.endpoints[kind]
        if endpoint.request_schema:
            self.validator.check(endpoint.dialect, endpoint.request_schema, body)
        return raw, body

    def model_for(self, model_id: Any, kind: str) -> Model:
        if not isinstance(model_id, str) or not model_id:
            raise BadRequest("'model' is required: a model id such as 'openai/gpt-4o'.",
                             param="model")
        model = self.catalogue.get(model_id)
        if model is None or not model.provider.usable:
            raise NotFound(
                f"The model '{model_id}' does not exist or is not available on this "
                "gateway. List the available models with GET /v1/models.",
                param="model", type="invalid_request_error")
        if kind not in model.endpoints:
            raise BadRequest(
                f"The model '{model_id}' does not support this endpoint ({kind}); it "
                f"supports: {', '.join(model.endpoints)}.", param="model")
        return model
