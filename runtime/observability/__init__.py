"""Observability: Prometheus metrics summed over gunicorn workers, and one JSON access-log
line per /v1 request.

- `RequestRecord` (record.py): one request's facts; `finish(status)` logs and counts once.
- `RequestRecords` (middleware.py): Falcon middleware that creates ``req.context.record``,
  sets ``x-request-id`` and finishes non-deferred records.
- `attempt`, `fallback`, `deployment_up`, `stream_opened`, `stream_closed`: counters and
  gauges for events that are not a request's end.
- `metrics_text()` (metrics.py): the exposition for GET /metrics.
- access_log.py: the ``tokmodel.access`` logger (TOKMODEL_ACCESS_LOG=0 turns it off).

This package depends only on prometheus_client, falcon and the standard library.
"""

from runtime.observability.metrics import metrics_text
from runtime.observability.middleware import RequestRecords
from runtime.observability.record import (
    RequestRecord,
    attempt,
    deployment_up,
    fallback,
    stream_closed,
    stream_opened,
)

__all__ = [
    "RequestRecord",
    "RequestRecords",
    "attempt",
    "deployment_up",
    "fallback",
    "metrics_text",
    "stream_closed",
    "stream_opened",
]
