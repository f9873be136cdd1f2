"""The attempt loop: one candidate model after another, each tried on its deployments with
retries, until one answers.

Per candidate model, up to `retry.attempts` attempts in all. Retryable: connection errors, a
timeout before the first byte, HTTP 408, 429, 500, 502, 503, 504 and 529, a whole answer
that breaks off or stalls before its end, and a stream that breaks before its first chunk. A
retry prefers another healthy deployment; back on the same one it honours `Retry-After`
(seconds or an HTTP date) up to `retry.max_retry_after` seconds, or without one pauses a
growing, jittered while (`backoff`); when the upstream asks for longer the next candidate
model is tried instead (without one, the client gets that answer with its `Retry-After`). An
upstream 401/403 means the operator's credential was refused: that deployment fails and
another is tried; with none left the client gets a 502 naming the variable to check. Any
other error answer is the client's, answered at once. Nothing is retried once a byte of the
answer has been passed on to the client, and failed attempts cost nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from runtime.catalogue import Deployment, Model
from runtime.errors import GatewayError, UpstreamError
from runtime.observability import record as observe
from runtime.pipeline.health import DeploymentHealth
from runtime.pipeline.route import Exchange
from runtime.pipeline.targets import retarget
from runtime.providers.base import UpstreamCall
from runtime.upstream import Timeout, Upstream, UpstreamResponse, broken_off, read_body

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
CREDENTIAL_STATUS = frozenset({401, 403})
# Pause before retrying the same deployment when the upstream named no delay.
BACKOFF_SECONDS = (0.05, 0.2, 0.5, 1.0)


def backoff(attempt: int, draw: Callable[[], float] = random.random) -> float:
    """The pause before retry `attempt` (0-based) when the upstream named no delay: between
    half and all of BACKOFF_SECONDS' step, at random, so that the requests an outage failed
    together do not all come back together."""
    step = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
    return step * (0.5 + 0.5 * draw())


@dataclass(slots=True)
class Answered:
    upstream: UpstreamResponse
    target: Model                       # the model bound to the deployment that answered
    deployment: Deployment
    first: bytes | None = None          # a stream's first chunk, read before committing


@dataclass(slots=True)
class Failed:
    error: GatewayError
    fall_back: bool                     # another candidate model may still answer
    tried: list[str] = field(default_factory=list)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds an upstream asked us to wait: `retry-after-ms`, else `Retry-After` in seconds
    or as an HTTP date (RFC 9110 10.2.3; a date in the past means now). None when absent or
    unreadable."""
    ms = headers.get("retry-after-ms")
    try:
        if ms:
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 850 and asctime dates carry no zone: they are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Attempts:
    def __init__(self, upstream: Upstream, health: DeploymentHealth) -> None:
        self.upstream = upstream
        self.health = health
        self._timeouts: dict[str, Timeout] = {}

    def _timeout(self, model: Model) -> Timeout:
        provider = model.provider
        found = self._timeouts.get(provider.id)
        if found is None:
            t = provider.timeouts
            found = self._timeouts[provider.id] = Timeout(connect=t.connect, read=t.first_byte)
        return found

    def try_model(self, exchange: Exchange, model: Model, record: observe.RequestRecord
                  ) -> Answered | Failed:
        provider = model.provider
        policy = provider.retry
        failed: dict[str, Deployment] = {}
        refused: set[str] = set()
        last: GatewayError | None = None
        last_wait: float | None = None
        pinned = getattr(exchange, "deployment", None)
        for attempt in range(policy.attempts):
            deployment = (self.health.pick(provider, exclude=failed) if pinned is None
                          else _pinned(provider, pinned, failed))
            if deployment is None:
                # Every deployment failed once already: go back to the last one that failed
                # for a reason other than its credentials.
                again = [d for name, d in failed.items() if name not in refused]
                if not again:
                    break
                deployment = again[-1]
                if last_wait is not None and last_wait > policy.max_retry_after:
                    return Failed(last, fall_back=True)  # type: ignore[arg-type]
                time.sleep(last_wait if last_wait is not None else backoff(attempt))
            record.attempts += 1
            target = model.at(deployment)
            outcome, error, wait = self._attempt(exchange, model, target, deployment)
            if isinstance(outcome, Answered):
                self.health.succeeded(deployment)
                observe.attempt(provider.id, deployment.name, "ok")
                return outcome
            observe.attempt(provider.id, deployment.name, outcome)
            if outcome == "rejected":            # the client's own error: no retry
                self.health.succeeded(deployment)
                return Failed(error, fall_back=False)
            self.health.failed(deployment)
            failed.pop(deployment.name, None)
            failed[deployment.name] = deployment   # keeps the most recent failure last
            if outcome == "credentials":
                refused.add(deployment.name)
            last, last_wait = error, wait
        if last is None:
            last = UpstreamError(f"No deployment of the provider '{provider.id}' is available.",
                                 status=503)
        return Failed(last, fall_back=True)

    def _attempt(self, exchange: Exchange, model: Model, target: Model,
                 deployment: Deployment
                 ) -> tuple[Answered | str, GatewayError, float | None]:
        call: UpstreamCall = retarget(exchange.call, model, target)
        try:
            upstream = self.upstream.send(call.method, call.url, headers=call.headers,
                                          body=call.body, params=call.params or None,
                                          timeout=self._timeout(model))
        except UpstreamError as exc:
            return ("timeout" if exc.status == 504 else "connect_error"), exc, None
        status = upstream.status_code
        if status >= 400:
            raw = read_body(upstream)
            error = exchange.error(status, raw, upstream.headers, target)
            if status in CREDENTIAL_STATUS or error.code == "upstream_credentials":
                return "credentials", error, None
            if status in RETRYABLE_STATUS:
                # an adapter may have read the delay from the body (Gemini's RetryInfo)
                return "error_status", error, retry_after(error.headers or upstream.headers)
            return "rejected", error, None
        idle = model.provider.timeouts.idle
        if not exchange.is_stream(upstream):
            upstream.set_read_timeout(idle)
            try:
                upstream.buffer()   # an answer that breaks off mid-body is retried too
            except OSError as exc:
                upstream.close()
                error = broken_off(exc)
                return _broken(error), error, None
            return Answered(upstream, target, deployment), None, None  # type: ignore[return-value]
        try:
            first = _first_chunk(upstream)
        except UpstreamError as exc:
            upstream.close()
            return _broken(exc), exc, None
        upstream.set_read_timeout(idle)
        return Answered(upstream, target, deployment, first), None, None  # type: ignore[return-value]


def _broken(error: UpstreamError) -> str:
    """The outcome of an answer that broke off before it was passed on: a stall (504) or a
    break."""
    return "timeout" if error.status == 504 else "broken"


def _pinned(provider: Any, name: str, failed: Mapping[str, Deployment]) -> Deployment | None:
    """The one deployment an exchange must use (where a provider stored what it continues);
    None once it failed in this request, or when it is no longer configured."""
    for deployment in provider.deployments:
        if deployment.name == name and deployment.usable:
            return deployment if not failed else None
    return None


def _first_chunk(upstream: UpstreamResponse) -> bytes:
    """The stream's first bytes, read under the first-byte timeout; a stream that ends or
    breaks before them failed as a whole and may be retried."""
    try:
        chunk = upstream.next_piece()
    except Exception as exc:
        raise broken_off(exc) from exc
    if not chunk:
        raise UpstreamError("The upstream provider ended the stream before sending anything.")
    return chunk
