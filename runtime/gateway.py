"""What every /v1 request shares: the services a resource needs, and the steps before the
upstream call (authenticate, read and validate the body, resolve the model).

`Gateway` is built once per worker by create_app and handed to every resource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import falcon

from runtime import encodable, inbound, multipart
from runtime.billing.meter import refusal
from runtime.catalogue import Catalogue, Model
from runtime.errors import AccountDisabled, BadRequest, GatewayError, NotFound, Unauthorized
from runtime.limits.admission import check_expiry
from runtime.ops import MappingError
from runtime.settings import Settings
from runtime.store import KeyRecord, Store
from runtime.upstream import Upstream
from runtime.validation import Validator

# Bodies up to this size are read before the credit check (the hold, which needs the parsed
# request, checks them); larger ones, and chunked ones of unknown size, only for an account
# that can pay: reading, parsing and validating a body of megabytes costs seconds of CPU.
SMALL_BODY_BYTES = 64 * 1024

ErrorMapper = Callable[[int, bytes, Mapping[str, str], Model], GatewayError]


def provider_body(model: Model, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request as the provider takes it: the descriptor's generated mapping for this
    endpoint, with the upstream model name. A value the provider cannot take is a 400."""
    try:
        return model.provider.descriptor.translate[kind](dict(body, model=model.upstream))
    except MappingError as exc:
        raise BadRequest(exc.message, param=exc.param) from None


@dataclass
class Gateway:
    settings: Settings
    catalogue: Catalogue
    store: Store
    upstream: Upstream
    validator: Validator
    endpoints: dict[str, Any]

    def authenticate(self, req: falcon.Request, cached: bool = False) -> KeyRecord:
        """The request's key; 401, or 403 for a disabled account or an expired key.
        `cached`: the key may come from the process's cache (runtime/store/key_cache.py),
        for a request whose hold checks it; a refusal is never decided on a cached key."""
        secret = inbound.api_key(req)
        key = self.store.authenticate(secret, cached) if secret else None
        if key is None:
            raise Unauthorized()
        try:
            if key.account_disabled:  # read with the key: no extra round trip
                raise AccountDisabled()
            check_expiry(key.limits)
        except GatewayError:
            if key.cached:
                return self.authenticate(req)
            raise
        return key

    def refreshed(self, req: falcon.Request, key: KeyRecord) -> KeyRecord | None:
        """After a refusal decided on `key`: when it came from the cache, the key read
        afresh if it changed since (401 or 403 raised here when it no longer passes), None
        when it did not change or was read fresh: the refusal stands."""
        if not key.cached:
            return None
        fresh = self.authenticate(req)
        if (fresh.id, fresh.version, fresh.account_disabled) == (
                key.id, key.version, key.account_disabled):
            return None
        return fresh

    def admit_body(self, req: falcon.Request, key: KeyRecord) -> None:
        """403 insufficient credits (or naming the account's debt), before a large body is
        read, for an account that cannot pay (Store.can_spend); the body then stays unread
        (runtime/client_body.py disposes of it after the answer)."""
        length = req.content_length
        if length is not None and length <= SMALL_BODY_BYTES:
            return
        if length is None and not inbound.is_chunked(req):
            return
        if not self.store.can_spend(key.account_id):
            raise refusal(self.store, key.account_id)

    def json_body(self, req: falcon.Request, kind: str) -> tuple[bytes, dict[str, Any]]:
        raw, body = inbound.read_json(req, self.settings.max_body_bytes)
        encodable.check(raw, body)
        endpoint = self.endpoints[kind]
        if endpoint.request_schema:
            self.validator.check(endpoint.dialect, endpoint.request_schema, body)
        return raw, body

    @contextmanager
    def form_body(self, req: falcon.Request,
                  before_spill: Callable[[multipart.Form], None] | None = None
                  ) -> Iterator[multipart.Form]:
        """The request's multipart form, parsed as it streams in (413 past the body limit,
        400 when malformed); its spooled files are removed afterwards. `before_spill`: see
        runtime/multipart.py (the hold before files reach the disk)."""
        form = multipart.parse(inbound.body_stream(req), req.content_type,
                               self.settings.max_body_bytes, content_length=req.content_length,
                               before_spill=before_spill)
        try:
            yield form
        finally:
            form.close()

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
