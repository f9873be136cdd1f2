"""Falcon middleware giving every request a `RequestRecord` (``req.context.record``).

Contract
--------
process_request: a record with a fresh id (``req_`` + 32 hex digits) and the client's
``X-Request-Id`` as client_request_id (control characters removed, at most 200 characters;
empty means none). Only paths under /v1 and /v1beta are logged and counted; any other route
(/healthz, /readyz, /console, /metrics) gets a ``quiet`` record.
process_resource: until the pipeline names the endpoint kind, an API request is labelled by
its route template (``/v1/models/{model_id:path}``), or ``unmatched`` when no route matched,
so a client inventing paths cannot create metric series.
process_response: sets the ``x-request-id`` response header and finishes the record with
the response's status once the answer has been sent (runtime/after_answer.py), unless
``record.deferred`` (a stream finishes it when it ends).
"""

from __future__ import annotations

import re
import time
from typing import Any

import falcon

from runtime.after_answer import defer
from runtime.observability.record import RequestRecord
from runtime.request_ids import new_request_id

MAX_CLIENT_ID = 200
UNMATCHED = "unmatched"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_api_path(path: str) -> bool:
    """Whether a request to `path` belongs in the access log and the request metrics."""
    for prefix in ("/v1", "/v1beta"):
        if path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def clean_client_id(value: str | None) -> str | None:
    """The client's X-Request-Id made safe to log and bounded, or None."""
    if not value:
        return None
    value = _CONTROL.sub("", value)[:MAX_CLIENT_ID]
    return value or None


class RequestRecords:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = req.path
        api = is_api_path(path)
        req.context.record = RequestRecord(
            request_id=new_request_id(),
            client_request_id=clean_client_id(req.get_header("X-Request-Id")),
            endpoint=UNMATCHED if api else path,
            started=time.monotonic(),
            time=time.time(),
            quiet=not api,
        )

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        record = req.context.record
        if resource is not None and not record.quiet and record.endpoint == UNMATCHED:
            record.endpoint = req.uri_template or UNMATCHED

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        record = getattr(req.context, "record", None)
        if record is None:  # process_request did not run (an earlier middleware failed)
            return
        resp.set_header("x-request-id", record.request_id)
        if not record.deferred:
            status = resp.status_code
            defer(req.env, lambda: record.finish(status))
