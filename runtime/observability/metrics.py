"""Prometheus metrics of the gateway, summed over every gunicorn worker.

Contract
--------
The metric objects below are module globals, created at import. prometheus_client picks its
value storage when it is imported: with ``PROMETHEUS_MULTIPROC_DIR`` set (``tokmodel serve``
sets it to a fresh directory before any worker is forked) every process writes its values to
its own mmap file in that directory and `metrics_text()` merges all files, so a scrape sees
the sum over all workers whichever worker answers it, dead workers' counters included.
Without the variable (unit tests, ``create_app`` in-process) the metrics live in `REGISTRY`,
an ordinary in-process registry, and `metrics_text()` renders that.

Gauges and their multiprocess modes:
- ``tokmodel_open_streams``: ``livesum``, the open streams of the live workers.
- ``tokmodel_deployment_up``: ``livemin``. Each worker keeps its own view of a deployment's
  health, so the aggregate is 1 only when every live worker that has seen the deployment
  thinks it is up; one worker seeing it down is enough to show 0 (the alert should fire).

Labels are bounded by the catalogue: callers pass catalogue model ids, provider ids and
deployment names, never a client's free text (an unknown model asked by a client would be a
new time series per distinct string). Label lookups are cached per label tuple, because
``.labels()`` validates and locks on every call and this runs on every request.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _process_id() -> int:
    """This process's id, read once and again after a fork. prometheus_client's default,
    os.getpid, is a system call on every increment (glibc no longer caches it): seven a
    request, about 4 % of a worker's throughput (measured by make bench)."""
    return _pid


# prometheus_client chose its value class when it was first imported, with os.getpid, or
# per process if that happened before the variable was set (a preloaded app, an import in
# the master), when the metrics would silently stay per-process while /metrics reads the
# files. Replaced before any metric below exists.
if os.environ.get(MULTIPROC_ENV):
    values.ValueClass = values.MultiProcessValue(_process_id)

REGISTRY = CollectorRegistry(auto_describe=True)
"""The in-process registry (also the one the metrics are registered in when multiprocess:
there it is unused, the files are the source)."""

# LLM requests last from milliseconds (errors, cached answers) to minutes (long streams).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0, float("inf"))
TTFB_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, float("inf"))

REQUESTS = Counter("tokmodel_requests_total", "Requests answered on /v1, by final status.",
                   ("endpoint", "model", "provider", "status"), registry=REGISTRY)
DURATION = Histogram("tokmodel_request_duration_seconds",
                     "Time from the request's arrival to its end (a stream's last byte).",
                     ("endpoint",), buckets=DURATION_BUCKETS, registry=REGISTRY)
TTFB = Histogram("tokmodel_time_to_first_byte_seconds",
                 "Streams: time from the request's arrival to the first byte of the answer.",
                 ("endpoint",), buckets=TTFB_BUCKETS, registry=REGISTRY)
UPSTREAM_ATTEMPTS = Counter("tokmodel_upstream_attempts_total",
                            "Calls to a provider deployment, by outcome.",
                            ("provider", "deployment", "outcome"), registry=REGISTRY)
FALLBACKS = Counter("tokmodel_fallbacks_total", "Requests moved on to a fallback model.",
                    ("from_model", "to_model"), registry=REGISTRY)
TOKENS = Counter("tokmodel_tokens_total", "Tokens charged, by kind (prompt, completion, cached).",
                 ("model", "kind"), registry=REGISTRY)
COST = Counter("tokmodel_cost_credits_total", "Credits charged (1 credit = 1 USD list price).",
               ("model",), registry=REGISTRY)
OPEN_STREAMS = Gauge("tokmodel_open_streams", "Streamed answers being sent right now.",
                     registry=REGISTRY, multiprocess_mode="livesum")
DEPLOYMENT_UP = Gauge("tokmodel_deployment_up",
                      "1 when the deployment is considered healthy (minimum over workers).",
                      ("provider", "deployment"), registry=REGISTRY,
                      multiprocess_mode="livemin")

# Catalogue-bounded label sets stay well under this; past it, lookups still work, uncached.
_MAX_CACHED = 4096


class Children:
    """``metric.labels(*values)`` memoised per label tuple (values must already be str)."""

    __slots__ = ("_metric", "_cache")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._cache.get(labels)
        if child is None:
            child = self._metric.labels(*labels)
            if len(self._cache) < _MAX_CACHED:
                self._cache[labels] = child
        return child


requests = Children(REQUESTS)
duration = Children(DURATION)
ttfb = Children(TTFB)
upstream_attempts = Children(UPSTREAM_ATTEMPTS)
fallbacks = Children(FALLBACKS)
tokens = Children(TOKENS)
cost = Children(COST)
deployment_up = Children(DEPLOYMENT_UP)


def multiprocess_dir() -> str | None:
    """The directory the workers' metric files are in, or None when in-process."""
    return os.environ.get(MULTIPROC_ENV) or None


def metrics_text() -> tuple[bytes, str]:
    """The Prometheus text exposition (body, content type): summed over all workers in
    multiprocess mode, else this process's registry."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE_LATEST
