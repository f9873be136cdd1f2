"""`GET` and `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`: stored
Responses API conversations of the caller's account (runtime/clients/stored_responses.py).

A response the gateway keeps is answered from the database; one the provider stored itself
is fetched from (or deleted at) the deployment that holds it, with the gateway's
credentials, after checking that it belongs to the caller's account. Another account's id,
an expired one, or one the gateway never issued is a 404. Never charged.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from runtime.clients.stored_responses import not_found
from runtime.errors import BadRequest
from runtime.gateway import Gateway
from runtime.providers.openai_chat import openai_error
from runtime.store import StoredResponse
from runtime.upstream import read_body

MAX_ITEMS = 100


class _Base:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def _owned(self, req: falcon.Request, response_id: str) -> StoredResponse:
        record = getattr(req.context, "record", None)
        if record is not None:
            record.endpoint = self.kind  # type: ignore[attr-defined]
        key = self.gw.authenticate(req)
        if record is not None:
            record.account_id, record.key_id = key.account_id, key.id
        found = self.gw.store.get_response(response_id, key.account_id)
        if found is None:
            err = not_found(response_id)
            err.param = None
            raise err
        return found

    def _at_provider(self, resp: falcon.Response, found: StoredResponse, method: str,
                     suffix: str, query: str = "") -> bool:
        """Forward to the deployment holding a provider-stored response; True when it
        answered with success."""
        provider = self.gw.catalogue.providers.get(found.provider)
        deployment = next((d for d in provider.deployments if d.name == found.deployment),
                          None) if provider else None
        if provider is None or deployment is None:
            raise not_found(found.id)
        view = provider.at(deployment)
        headers = dict(provider.descriptor.headers)
        headers.update(view.auth_headers())
        url = f"{view.base_url.rstrip('/')}/responses/{found.id}{suffix}"
        upstream = self.gw.upstream.send(method, url + (f"?{query}" if query else ""),
                                         headers=headers)
        raw = read_body(upstream)
        if upstream.status_code >= 400:
            model = next((m for m in self.gw.catalogue.models.values()
                          if m.provider is provider), None)
            raise openai_error(upstream.status_code, raw, upstream.headers,
                               model.at(deployment) if model else None)  # type: ignore[arg-type]
        resp.data = raw
        resp.content_type = falcon.MEDIA_JSON
        return True


class StoredResponseResource(_Base):
    kind = "responses.retrieve"

    def on_get(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        found = self._owned(req, response_id)
        if found.native:
            self._at_provider(resp, found, "GET", "")
            return
        resp.data = json.dumps(found.response).encode()
        resp.content_type = falcon.MEDIA_JSON

    def on_delete(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        found = self._owned(req, response_id)
        if found.native:
            self._at_provider(resp, found, "DELETE", "")
        else:
            resp.data = json.dumps({"id": found.id, "object": "response",
                                    "deleted": True}).encode()
            resp.content_type = falcon.MEDIA_JSON
        self.gw.store.delete_response(found.id, found.account_id)


class StoredResponseItems(_Base):
    kind = "responses.input_items"

    def on_get(self, req: falcon.Request, resp: falcon.Response, response_id: str) -> None:
        found = self._owned(req, response_id)
        if found.native:
            self._at_provider(resp, found, "GET", "/input_items", req.query_string)
            return
        order = req.get_param("order") or "desc"
        if order not in ("asc", "desc"):
            raise BadRequest("'order' must be 'asc' or 'desc'.", param="order")
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_ITEMS) or 20
        items: list[Any] = list(found.input_items or [])
        if order == "desc":
            items.reverse()
        page = items[:limit]
        ids = [i.get("id") for i in page if isinstance(i, dict)]
        resp.data = json.dumps({"object": "list", "data": page,
                                "first_id": ids[0] if ids else None,
                                "last_id": ids[-1] if ids else None,
                                "has_more": len(items) > limit}).encode()
        resp.content_type = falcon.MEDIA_JSON
