"""The request pipeline: the one place a priced request goes from start to finish.

    authenticate -> read + validate -> resolve the model and its fallbacks -> admission
      -> hold (from the client's request as received; covers the dearest candidate; a form
         whose files outgrow memory is held before they are spooled: form_hold.py)
      -> attempts (deployments, retries, fallbacks; runtime/pipeline/attempts.py)
      -> answer whole or stream -> settle exactly once -> metrics and access log

Endpoints declare a `Route` (runtime/pipeline/route.py); `Pipeline.handle` runs it. Every
failure is a GatewayError rendered in the route's error envelope; any failure after the hold
settles at zero (nothing produced, nothing charged). A whole answer is settled here; a stream
settles itself when it ends, is cut, or the client leaves (runtime/billing/settling_body.py),
and finishes the request's record then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import falcon

from runtime.billing.hold_progress import watch_stream
from runtime.billing.meter import Meter
from runtime.billing.metered_stream import settle_produced
from runtime.billing.pricing import Usage
from runtime.billing.prompt_estimate import lazy_prompt
from runtime.catalogue import Model
from runtime.errors import BadRequest, GatewayError
from runtime.gateway import Gateway
from runtime.limits import admission, rates
from runtime.observability import record as observe
from runtime.ops import MappingError
from runtime.pipeline.attempts import Answered, Attempts
from runtime.pipeline.form_hold import FormHold
from runtime.pipeline.health import DeploymentHealth
from runtime.pipeline.route import Exchange, Request, Route
from runtime.providers import pending_images
from runtime.providers.base import StreamBroken
from runtime.request_ids import new_request_id
from runtime.store import KeyRecord
from runtime.upstream import AnswerTooLarge, broken_off

MAX_FALLBACKS = 5

log = logging.getLogger("tokmodel.limits")


class Pipeline:
    def __init__(self, gateway: Gateway, health: DeploymentHealth | None = None) -> None:
        self.gw = gateway
        self.health = health or DeploymentHealth()
        self.health.on_change(lambda d, up: observe.deployment_up(d.provider_id, d.name, up))
        for provider in gateway.catalogue.providers.values():
            for deployment in provider.deployments:
                if deployment.usable:
                    observe.deployment_up(provider.id, deployment.name, True)
        self.attempts = Attempts(gateway.upstream, self.health)
        self.rates = rates.counter(gateway.settings.redis_url, gateway.store.write)

    # -- the sequence ---------------------------------------------------------------------

    def handle(self, req: falcon.Request, resp: falcon.Response, route: Route) -> None:
        req.context.dialect = route.errors
        record = _record(req, route)
        # A form may be held while it streams in (form_hold.py), before its admission: its
        # key is read afresh. Any other request's may come from the cache, checked by the
        # hold (runtime/store/key_cache.py).
        key = _RequestKey(self.gw.authenticate(req, cached=not route.form))
        record.account_id, record.key_id = key.key.account_id, key.key.id
        try:
            self._handle(req, resp, route, record, key)
        except GatewayError:
            self._refresh(req, key, record)   # raises the fresh key's own 401 or 403, if any
            raise

    def _handle(self, req: falcon.Request, resp: falcon.Response, route: Route,
                record: observe.RequestRecord, key: _RequestKey) -> None:
        self.gw.admit_body(req, key.key)
        early = None
        if route.form and route.prehold is not None:
            early = FormHold(self.gw, key.key, route, record.request_id,
                             req.content_length or self.gw.settings.max_body_bytes)
        with _releasing(early), self._read(req, route, early) as request:
            request.account_id, request.gateway = key.key.account_id, self.gw
            if route.check is not None:
                route.check(request)
            candidates = self.candidates(request, route)
            record.model, record.provider = candidates[0].id, candidates[0].provider.id
            shown = request.model_id if isinstance(request.model_id, str) else candidates[0].id
            primary = _exchange(route, request, candidates[0], shown)
            record.stream = primary.stream
            held = early.meter if early is not None else None
            if held is not None:   # held before the form's files were spooled
                counted = self.admit(key.key, request, candidates)
                meter = held
                meter.model, meter.provider = candidates[0].id, candidates[0].provider.id
            else:
                counted, meter = self._admit_and_hold(req, route, request, candidates, record,
                                                      key)
            if counted is not None:
                for name, value in admission.rate_headers(counted).items():
                    resp.set_header(name, value)
            meter.on_settled = lambda status, usage, charged: _settled(
                record, status, usage, charged)
            if counted is not None and counted.tokens is not None:
                meter.on_settled = self._correcting_tokens(key.key, counted, meter.on_settled)
            for name in route.id_headers:
                resp.set_header(name, record.request_id)
            with meter.releasing_on_failure():
                _download_images(primary)
                self._answer(resp, route, request, candidates, primary, shown, meter, record)

    def _admit_and_hold(self, req: falcon.Request, route: Route, request: Request,
                        candidates: list[Model], record: observe.RequestRecord,
                        key: _RequestKey) -> tuple[rates.Admitted | None, Meter]:
        """Admission, then the hold (of the dearest candidate) on a Meter. A refusal of
        either on a key from the cache that has changed since is decided again with the
        key read afresh (its models, limits and version), once."""
        asked = list(candidates)
        while True:
            candidates[:] = asked   # admission drops fallbacks the key may not use
            counted = None
            try:
                counted = self.admit(key.key, request, candidates)
                # Usage rows and metrics carry the catalogue id, never the name the client
                # sent.
                meter = Meter(self.gw.store, key.key, route.kind, candidates[0].id,
                              candidates[0].provider.id, request_id=record.request_id)
                meter.reserve(max(route.hold(request, m) for m in candidates))
                key.unchecked = False   # the hold checked it
                return counted, meter
            except GatewayError:
                stale = key.key
                if counted is not None:   # admitted, not held: nothing will be used
                    self.rates.correct(stale.id, counted.minute, -counted.estimate)
                if not self._refresh(req, key, record):
                    raise
                if counted is not None:   # admitted again below: counted once
                    self.rates.correct(stale.id, counted.minute, 0, requests=-1)

    def _refresh(self, req: falcon.Request, key: _RequestKey,
                 record: observe.RequestRecord) -> bool:
        """After a refusal: whether the key, unchecked from the cache, had changed; it is
        then replaced by the fresh read (Gateway.refreshed), which raises its own refusal."""
        if not key.unchecked:
            return False
        key.unchecked = False
        fresh = self.gw.refreshed(req, key.key)
        if fresh is None:
            return False
        key.key = fresh
        record.account_id, record.key_id = fresh.account_id, fresh.id
        return True

    def candidates(self, request: Request, route: Route) -> list[Model]:
        """The asked model, then its fallbacks (the request's `models`, else the catalogue's);
        fallbacks that do not exist, are not usable or do not serve the route are skipped."""
        model_id = request.model_id
        if model_id in (None, "") and route.default_model:
            defaults = self.gw.catalogue.defaults
            model_id = defaults.get(route.kind) or defaults.get("images.generations")
            request.model_id = model_id
            if model_id is None:
                raise BadRequest("'model' is required: this gateway has no default model for "
                                 "this endpoint.", param="model")
        first = self.gw.model_for(model_id, route.catalogue_kind)
        if not route.fallbacks:
            return [first]
        names = request.fallbacks if request.fallbacks is not None else first.fallbacks
        found = [first]
        for name in names:
            model = self.gw.catalogue.get(name)
            if (model is not None and model.provider.usable and model not in found
                    and route.catalogue_kind in model.endpoints):
                found.append(model)
        return found[:MAX_FALLBACKS + 1]

    def admit(self, key: KeyRecord, request: Request, candidates: list[Model]
              ) -> rates.Admitted | None:
        """Admission: the key's limits (runtime/limits/), before anything is held or sent.
        Models outside the key's list: 403 for the model or a fallback the client named,
        catalogue fallbacks dropped. Over rpm or tpm: 429; else the request is counted and
        its count returned (for the rate-limit headers and the token correction). Expiry is
        checked with the key (Gateway.authenticate), spend limits with the hold
        (Meter.reserve). A key without limits costs nothing here."""
        limits = key.limits
        if limits is None:
            return None
        if limits.models is not None:
            named = [candidates[0], *(m for name in (request.fallbacks or ())
                                      if (m := self.gw.catalogue.get(name)) is not None)]
            admission.check_models(limits, named, candidates)
        if not limits.limits_rate:
            return None
        tokens = 0 if limits.tpm is None else admission.token_estimate(
            request.raw, request.body, candidates[0].max_output_tokens)
        return admission.check_rates(self.rates, key.id, limits, tokens, time.time())

    def _correcting_tokens(self, key: KeyRecord, counted: rates.Admitted,
                           then: Callable[[int, Usage, int], None]
                           ) -> Callable[[int, Usage, int], None]:
        """The settle's callback, also replacing the request's counted token estimate by
        the tokens it used."""
        def settled(status: int, usage: Usage, charged: int) -> None:
            used = usage.prompt_tokens + usage.completion_tokens
            try:
                self.rates.correct(key.id, counted.minute, used - counted.estimate)
            except Exception:   # the count stays at the estimate: never under
                log.exception("token count of key %s not corrected", key.id)
            then(status, usage, charged)
        return settled

    # -- attempts and the answer ----------------------------------------------------------

    def _answer(self, resp: falcon.Response, route: Route, request: Request,
                candidates: list[Model], primary: Exchange, shown: str, meter: Meter,
                record: observe.RequestRecord) -> None:
        failure: GatewayError | None = None
        for index, model in enumerate(candidates):
            if index == 0:
                exchange = primary
            else:
                try:
                    exchange = _exchange(route, request, model, model.id)
                except GatewayError:
                    continue   # this fallback cannot take the request as sent
                _download_images(exchange)
                observe.fallback(candidates[0].id, model.id)
            outcome = self.attempts.try_model(exchange, model, record)
            if isinstance(outcome, Answered):
                if index:
                    meter.model = model.id
                meter.provider = model.provider.id
                record.model, record.provider = meter.model, model.provider.id
                record.deployment = outcome.deployment.name
                answered = getattr(exchange, "answered_on", None)
                if answered is not None:   # an exchange that records where it was answered
                    answered(outcome.deployment.name)
                self._deliver(resp, request, exchange, outcome, meter, record)
                return
            failure = outcome.error
            if not outcome.fall_back:
                break
        raise failure  # type: ignore[misc]

    def _deliver(self, resp: falcon.Response, request: Request, exchange: Exchange,
                 answered: Answered, meter: Meter, record: observe.RequestRecord) -> None:
        upstream = answered.upstream
        if answered.first is not None:
            record.mark_first_byte()
            body = exchange.stream_body(_chunks(answered.first, upstream), upstream, meter)
            watch_stream(meter, body)   # accepted: its progress is recorded on the hold
            record.deferred = True
            observe.stream_opened()
            resp.content_type = body.content_type
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("X-Accel-Buffering", "no")
            # an exchange may name what it changed in the request (the whole answer's
            # headers travel in its Answer)
            for name, value in getattr(exchange, "headers", {}).items():
                resp.set_header(name, value)
            resp.stream = body
            return
        try:
            answer = exchange.whole(upstream)
        except AnswerTooLarge as exc:
            # produced (and billed by the provider) but not deliverable: charged as a cut
            # stream is, from the prompt and the bytes received
            settle_produced(meter, answered.target, None,
                            lazy_prompt(request.body or {}, answered.target),
                            exc.received, exc.status)
            raise
        record.mark_first_byte()
        meter.settle(answer.usage, answer.cost, 200)
        resp.data = answer.render(meter.charged)
        resp.content_type = answer.content_type
        for name, value in answer.headers.items():
            resp.set_header(name, value)

    # -- reading the request --------------------------------------------------------------

    @contextmanager
    def _read(self, req: falcon.Request, route: Route,
              early: FormHold | None = None) -> Iterator[Request]:
        headers = {name: value for name in route.forward_headers
                   if (value := req.get_header(name))}
        if route.form:
            with self.gw.form_body(req, early) as form:
                fields = form.text_fields()
                yield Request(model_id=_single(fields, "model"), form=form, fields=fields,
                              headers=headers)
            return
        raw, body = self.gw.json_body(req, route.kind)
        fallbacks = None
        if route.fallbacks and "models" in body:
            fallbacks = _models_field(body)
            body = {k: v for k, v in body.items() if k != "models"}
            if body.get("model") is None and fallbacks:
                body["model"], fallbacks = fallbacks[0], fallbacks[1:]
        yield Request(model_id=body.get("model"), raw=raw, body=body, headers=headers,
                      fallbacks=fallbacks)


class _RequestKey:
    """The request's key, and whether it is `unchecked`: read from the cache and not yet
    checked by its hold, so that a refusal decided on it may be out of date."""

    __slots__ = ("key", "unchecked")

    def __init__(self, key: KeyRecord) -> None:
        self.key = key
        self.unchecked = key.cached


def _releasing(early: FormHold | None) -> Any:
    return early.releasing() if early is not None else nullcontext()


def _exchange(route: Route, request: Request, model: Model, shown: str) -> Exchange:
    try:
        return route.exchange(request, model, shown)
    except MappingError as exc:
        raise BadRequest(exc.message, param=exc.param) from None


def _download_images(exchange: Exchange) -> None:
    """Image URLs the provider needs as bytes, downloaded now that credits are held (a
    translation only marks where they go: runtime/providers/pending_images.py)."""
    if exchange.call.images:
        exchange.call = pending_images.fetched(exchange.call)


def _chunks(first: bytes, upstream: Any) -> Iterator[bytes]:
    """The stream's bytes as they arrive, starting with the chunk read before committing; a
    read failure becomes a broken stream.

    One generator reading the answer directly: every generator level between the client's
    body and the socket keeps a suspended frame and ~0.6 KB of saved greenlet stack per open
    stream, and a piece already handed on is not kept while the next one is awaited."""
    read = upstream.next_piece
    piece, first = first, b""
    try:
        while piece:
            yield piece
            piece = b""
            piece = read()
    except Exception as exc:
        err = broken_off(exc)
        raise StreamBroken(err.message, err.type, err.status) from exc


def _record(req: falcon.Request, route: Route) -> observe.RequestRecord:
    record = getattr(req.context, "record", None)
    if record is None:   # an app without the RequestRecords middleware
        record = req.context.record = observe.RequestRecord(
            request_id=new_request_id(), client_request_id=None, endpoint=route.kind,
            started=time.monotonic(), time=time.time())
    record.endpoint = route.kind
    return record


def _settled(record: observe.RequestRecord, status: int, usage: Usage, charged: int) -> None:
    record.prompt_tokens = usage.prompt_tokens
    record.completion_tokens = usage.completion_tokens
    record.cached_tokens = usage.cached_tokens
    record.cost_nano = charged
    if record.deferred:
        observe.stream_closed()
        record.finish(status)


def _single(fields: Any, name: str) -> Any:
    value = fields.get(name)
    if isinstance(value, list):
        raise BadRequest(f"'{name}' must be sent once.", param=name)
    return value


def _models_field(body: Any) -> tuple[str, ...] | None:
    """The request's `models` (OpenRouter's fallback list; first = preferred): the fallbacks
    after `model`. Never forwarded."""
    models = body.get("models")
    if models is None:
        return None
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise BadRequest("'models' must be a list of model ids.", param="models")
    if len(models) > MAX_FALLBACKS + 1:
        raise BadRequest(f"'models' may list at most {MAX_FALLBACKS + 1} models.",
                         param="models")
    model = body.get("model")
    return tuple(m for m in models if m != model)

