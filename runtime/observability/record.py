"""One request's record: what the access log line and the request metrics are made of.

Contract
--------
`RequestRecords` (middleware.py) creates a `RequestRecord` per request as
``req.context.record``; the pipeline fills in who asked (account, key), what answered
(model, provider, deployment, attempts), usage and cost as it learns them. `finish(status)`
is idempotent: the first call emits exactly one JSON access-log line (unless
TOKMODEL_ACCESS_LOG=0) and the request metrics (requests_total, duration, time to first
byte for streams, tokens, cost); later calls do nothing. The middleware calls it when the
response leaves Falcon, unless ``deferred`` is set: then a stream took ownership of the
record and calls `finish` itself when its body ends or is closed. A ``quiet`` record
(health checks, console, /metrics) finishes without a line or a metric.

The log line's fields, in order: time (ISO-8601 UTC, ms), request_id, client_request_id,
account (account id), key_id, endpoint, model, provider, deployment, attempts, status,
latency_ms, ttfb_ms (null unless a first byte was marked), prompt_tokens, completion_tokens,
cached_tokens, cost (credits as an exact decimal number from integer nano-credits), stream.
Nothing else: never a key secret, an upstream credential or prompt text.

Events that are not one request's end are plain functions: `attempt` (one call to a
provider deployment, with its outcome: ok, error_status, timeout, connect_error,
credentials, ...), `fallback`, `deployment_up`, `stream_opened` / `stream_closed` (the open
streams gauge; call them in pairs, `stream_closed` from the body's close/finally).
Observability never fails a request: an error while finishing is logged and swallowed.
"""

from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass

from runtime import fastjson
from runtime.billing.credits import NANO_PER_CREDIT, format_credits
from runtime.observability import access_log, metrics

_log = logging.getLogger("tokmodel")
def _dumps(obj: dict) -> str:
    return fastjson.dumps(obj).decode()



@dataclass(slots=True)
class RequestRecord:
    request_id: str
    client_request_id: str | None
    endpoint: str
    """Endpoint kind ("chat", "messages", ...), or the route/path for non-/v1 routes."""
    started: float
    """time.monotonic() at arrival."""
    time: float
    """time.time() at arrival (logged as ISO-8601 UTC)."""
    account_id: int | None = None
    key_id: str | int | None = None
    """The key's public id (the store's ids are strings like key_0123456789ab)."""
    model: str | None = None
    """Catalogue id of the model that answered (or was asked); never a client's free text."""
    provider: str | None = None
    deployment: str | None = None
    attempts: int = 0
    status: int | None = None
    first_byte: float | None = None
    """time.monotonic() when the first byte of the answer was ready."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int = 0
    """Integer nano-credits charged."""
    stream: bool = False
    finished: bool = False
    deferred: bool = False
    """True: a stream owns the record and calls finish() when it ends (not the middleware)."""
    quiet: bool = False
    """True: finish() neither logs nor counts (routes outside /v1)."""

    def mark_first_byte(self) -> None:
        """Remember when the first byte of the answer was ready (first call wins)."""
        if self.first_byte is None:
            self.first_byte = _time.monotonic()

    def attempt(self, provider: str, deployment: str, outcome: str) -> None:
        """Record one upstream call: counts it, and this record's answer is now from it."""
        self.attempts += 1
        self.provider = provider
        self.deployment = deployment
        attempt(provider, deployment, outcome)

    def finish(self, status: int) -> None:
        """End the request with `status`: one log line and the request metrics, once."""
        if self.finished:
            return
        self.finished = True
        self.status = status
        if self.quiet:
            return
        try:
            latency = _time.monotonic() - self.started
            self._count(latency)
            if access_log.enabled():
                access_log.write(self.log_line(latency))
        except Exception:  # a metrics file or a log pipe must not turn an answer into a 500
            _log.exception("could not record request %s", self.request_id)

    def _count(self, latency: float) -> None:
        endpoint = self.endpoint
        model = self.model or ""
        metrics.requests(endpoint, model, self.provider or "", str(self.status)).inc()
        metrics.duration(endpoint).observe(latency)
        if self.stream and self.first_byte is not None:
            metrics.ttfb(endpoint).observe(self.first_byte - self.started)
        if self.prompt_tokens:
            metrics.tokens(model, "prompt").inc(self.prompt_tokens)
        if self.completion_tokens:
            metrics.tokens(model, "completion").inc(self.completion_tokens)
        if self.cached_tokens:
            metrics.tokens(model, "cached").inc(self.cached_tokens)
        if self.cost_nano:
            metrics.cost(model).inc(self.cost_nano / NANO_PER_CREDIT)

    def log_line(self, latency: float | None = None) -> str:
        """The access-log JSON object (one line, no newline)."""
        if latency is None:
            latency = _time.monotonic() - self.started
        ttfb = None if self.first_byte is None else round((self.first_byte - self.started)
                                                          * 1000, 3)
        head = _dumps({
            "time": iso_utc(self.time),
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "account": self.account_id,
            "key_id": self.key_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "provider": self.provider,
            "deployment": self.deployment,
            "attempts": self.attempts,
            "status": self.status,
            "latency_ms": round(latency * 1000, 3),
            "ttfb_ms": ttfb,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        })
        # cost is spliced in as an exact decimal literal: a float would print 1e-06
        return (f'{head[:-1]},"cost":{format_credits(self.cost_nano)},'
                f'"stream":{"true" if self.stream else "false"}}}')


def iso_utc(t: float) -> str:
    """`t` (seconds since the epoch) as ISO-8601 UTC with milliseconds, e.g.
    2026-01-02T03:04:05.678Z."""
    secs, ms = divmod(int(t * 1000), 1000)
    global _second
    if _second[0] != secs:  # strftime is most of the cost; many lines share a second
        _second = (secs, _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(secs)))
    return f"{_second[1]}.{ms:03d}Z"


_second: tuple[int, str] = (-1, "")


def attempt(provider: str, deployment: str, outcome: str) -> None:
    """Count one call to a provider deployment; outcome: ok, error_status, timeout,
    connect_error, credentials, ..."""
    metrics.upstream_attempts(provider, deployment, outcome).inc()


def fallback(from_model: str, to_model: str) -> None:
    """Count a request moving on from one catalogue model to its fallback."""
    metrics.fallbacks(from_model, to_model).inc()


def deployment_up(provider: str, deployment: str, up: bool) -> None:
    """Set this worker's view of a deployment's health (aggregate: minimum over workers)."""
    metrics.deployment_up(provider, deployment).set(1 if up else 0)


def stream_opened() -> None:
    """A streamed answer started; pair with `stream_closed` in the body's close/finally."""
    metrics.OPEN_STREAMS.inc()


def stream_closed() -> None:
    """A streamed answer ended (completed, failed or cut by the client)."""
    metrics.OPEN_STREAMS.dec()
