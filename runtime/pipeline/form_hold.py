"""The hold of a multipart request, taken before its files are written to disk.

A form route's exact hold needs its files (audio seconds from the audio, input images by
count), but spooling 25 MB for an account that cannot pay is the work credit must come
before. So the form is parsed with `before_spill` (runtime/multipart.py): files stay in
memory up to a small bound (multipart.SPILL_BOUND); a body whose files fit is read whole and
held exactly as every route is (Route.hold, after parsing). A larger one is held, before its
first byte past the bound is taken, by the route's `prehold`: from the text parts sent
before the files and the most the body can hold (its Content-Length, else the body limit).

`model` may come after the file (the Node SDK and curl send parts in any order). Then the
hold is the worst case across the models the endpoint could use: buffering a whole upload in
memory to find the model would put the memory at the client's mercy, and the models of one
audio or image endpoint are priced within a small factor of each other, so an account that
can pay for the upload on the dearest model is rarely refused. A model named before the file
is resolved then (404 for an unknown one, nothing read further).

The request is then settled at its exact cost (audio length, images returned) like any
other; any failure between this hold and the answer releases it (`releasing`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runtime.billing.meter import Meter
from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError
from runtime.gateway import Gateway
from runtime.multipart import Form
from runtime.pipeline.route import Route
from runtime.store import KeyRecord


class FormHold:
    """`before_spill` for one request: holds once, keeps the Meter it held with."""

    def __init__(self, gateway: Gateway, key: KeyRecord, route: Route, request_id: str,
                 body_bytes: int) -> None:
        self.gw = gateway
        self.key = key
        self.route = route
        self.request_id = request_id
        self.body_bytes = body_bytes
        self.meter: Meter | None = None

    def __call__(self, form: Form) -> None:
        assert self.route.prehold is not None
        fields = form.text_fields()
        models = self._models(fields)
        amounts = []
        for model in models:
            try:
                amounts.append(self.route.prehold(fields, self.body_bytes, model))
            except BadRequest:
                if len(models) == 1:
                    raise    # the model asked for cannot take these fields
                # a model the client may not ask for: the worst case is over the others
        if not amounts:
            raise BadRequest("No model on this gateway can take this request.", param="model")
        amount = max(amounts)
        meter = Meter(self.gw.store, self.key, self.route.kind, models[0].id,
                      models[0].provider.id, request_id=self.request_id)
        meter.reserve(amount)
        self.meter = meter

    def _models(self, fields: dict[str, Any]) -> list[Model]:
        """The model named so far, else (it may come later, or the endpoint's default
        applies) every usable model that serves the endpoint."""
        model_id = fields.get("model")
        if isinstance(model_id, list):
            raise BadRequest("'model' must be sent once.", param="model")
        kind = self.route.catalogue_kind
        if model_id:
            return [self.gw.model_for(model_id, kind)]
        found = [m for m in self.gw.catalogue.models.values()
                 if m.provider.usable and kind in m.endpoints]
        if not found:
            raise BadRequest("No model on this gateway serves this endpoint.", param="model")
        return found

    @contextmanager
    def releasing(self) -> Iterator[None]:
        """A failure after the hold and before the request's own Meter took over settles
        it at zero (once: a settled Meter ignores another settle)."""
        try:
            yield
        except GatewayError as exc:
            if self.meter is not None:
                self.meter.fail(exc.status)
            raise
        except Exception:
            if self.meter is not None:
                self.meter.fail(500)
            raise
