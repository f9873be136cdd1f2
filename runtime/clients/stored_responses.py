"""Stored Responses API conversations, on every chat model.

- Translated models (the provider keeps nothing): with `store` true (the Responses default)
  the gateway keeps the whole input (history included) and the response object for the
  account; `previous_response_id` puts that history, then the earlier answer's output items,
  before the new input (`instructions` are not carried over, as on OpenAI).
- Native models (the provider stores the response itself): the gateway records only which
  account owns the id, which deployment holds it and the response's usage (no text), so
  another account's id, or one the gateway never issued, is a 404, and a continuation goes
  to the deployment that stored it.
A continuation's prompt carries the whole stored conversation, which the provider bills:
`context_tokens` is its size, for the hold and for the estimate of a stream without usage.
Ids are looked up only together with their account; stored text is never logged.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.billing.prompt_bound import prompt_token_bound
from runtime.catalogue import Model
from runtime.errors import BadRequest, NotFound
from runtime.pipeline.route import Request
from runtime.store import StoredResponse

DAY = 86_400.0


def not_found(response_id: str) -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param="previous_response_id",
                    type="invalid_request_error")


def previous(request: Request) -> StoredResponse | None:
    """The stored response `previous_response_id` names, owned by this account (404 else)."""
    response_id = request.body.get("previous_response_id")
    if not response_id:
        return None
    if not isinstance(response_id, str):
        raise BadRequest("'previous_response_id' must be a string.", param="previous_response_id")
    found = request.gateway.store.get_response(response_id, request.account_id)
    if found is None:
        raise not_found(response_id)
    return found


def context_tokens(stored: StoredResponse | None) -> int:
    """Prompt tokens the stored conversation adds to a continuation: the stored response's
    input plus output tokens (its input already holds everything before it), else, without
    usage, a bound from the stored items' bytes (runtime/billing/prompt_bound.py)."""
    if stored is None:
        return 0
    usage = (stored.response or {}).get("usage")
    if isinstance(usage, dict):
        counted = sum(value for key in ("input_tokens", "output_tokens")
                      if isinstance(value := usage.get(key), int) and value > 0)
        if counted:
            return counted
    if stored.native:
        return 0
    items = list(stored.input_items or [])
    items += [item for item in (stored.response or {}).get("output") or ()
              if isinstance(item, dict)]
    return prompt_token_bound(json.dumps(items, ensure_ascii=False).encode(), items)


def continued_input(stored: StoredResponse, new_input: Any) -> list[Any]:
    """The earlier conversation (its input, then its output items) followed by the new input."""
    if stored.native:
        raise BadRequest(f"The response '{stored.id}' is stored by the provider of "
                         f"'{stored.model}'; continue it with a model of that provider.",
                         param="previous_response_id")
    items = list(stored.input_items or [])
    items += [item for item in (stored.response or {}).get("output") or ()
              if isinstance(item, dict)]
    if isinstance(new_input, str):
        items.append({"type": "message", "role": "user", "content": new_input})
    elif isinstance(new_input, list):
        items += new_input
    return items


def wants_storing(body: Any) -> bool:
    return body.get("store") is not False


def keep(request: Request, model: Model, response: dict[str, Any], input_items: list[Any] | None,
         deployment: str | None = None) -> None:
    """Record a response for its account: in full (translated), or its owner and location
    (native, `input_items` None)."""
    response_id = response.get("id")
    if not isinstance(response_id, str) or not response_id:
        return
    gateway = request.gateway
    gateway.store.save_response(StoredResponse(
        id=response_id, account_id=request.account_id, model=model.id,
        provider=model.provider.id, native=input_items is None, deployment=deployment,
        input_items=input_items,
        response={"usage": response.get("usage")} if input_items is None else response),
        gateway.settings.responses_retention_days * DAY)
