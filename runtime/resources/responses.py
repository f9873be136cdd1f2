"""POST /v1/responses and POST /v1/responses/compact (OpenAI Responses API) for every chat model.

Order of work, as for chat: authenticate (401), read and validate the body (400/413), resolve
the model as a chat model (404/400), prepare the upstream call (400 for what cannot be
served), hold the worst case (403), call the upstream, answer whole or stream, and settle
exactly once from usage (upstream usage at catalogue prices; a stream without usage is
estimated from the text, one that produced nothing costs nothing).

Native: when the provider's descriptor lists a `responses` endpoint, the body is passed through
with the upstream model name (the gateway's own compaction items become developer messages);
stream events are forwarded one by one as they arrive, parsed only to put back the client's
model id and to read usage from response.completed / response.incomplete / response.failed
(input tokens include cached ones; output tokens include reasoning). `usage.cost` (credits)
is added to the answer and the terminal event.

Translated: any other provider gets the request as OpenAI chat through its chat adapter
(runtime/clients/responses.py), and the answer or stream comes back as Responses.
`previous_response_id` is a 400 there (it needs stored responses; the gateway is stateless)
and `store` is dropped.

Compact: the answer is OpenAI's `response.compaction` object, which the openai SDK's
`client.responses.compact` expects (kept user messages, then one `compaction` item). A provider
whose descriptor lists `responses.compact` compacts natively; for the others the chat model
writes a summary, carried in the gateway's own compaction item, which /v1/responses turns back
into context for any model. It is charged from the usage of that call like any chat call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import falcon

from runtime.billing.meter import Meter
from runtime.billing.metered_stream import MeteredStream, body_chunks
from runtime.billing.pricing import Usage, chat_worst_case, micro_to_credits, token_cost
from runtime.billing.prompt_bound import prompt_token_bound
from runtime.catalogue import Model
from runtime.clients import responses as ri
from runtime.errors import BadRequest, GatewayError
from runtime.gateway import Gateway, provider_body
from runtime.ops import MappingError
from runtime.providers import CHAT_ADAPTERS
from runtime.providers.base import (
    ChatAdapter,
    StreamBroken,
    UpstreamCall,
    json_headers,
    query_auth,
)
from runtime.resources.chat import max_output
from runtime.sse import iter_events
from runtime.upstream import read_json

log = logging.getLogger("tokmodel.responses")

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
COMPACT_MAX_OUTPUT = 4096


def usage_of(raw: Any) -> Usage:
    """Responses usage -> Usage (input includes cached and cache-write tokens)."""
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("input_tokens_details") or {}
    return Usage.from_openai({"prompt_tokens": raw.get("input_tokens"),
                              "completion_tokens": raw.get("output_tokens"),
                              "prompt_tokens_details": {
                                  "cached_tokens": details.get("cached_tokens"),
                                  "cache_write_tokens": details.get("cache_write_tokens")}})


def _stream_headers(resp: falcon.Response) -> None:
    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")


class _Base:
    kind = "responses"

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def _start(self, req: falcon.Request) -> tuple[Any, bytes, dict[str, Any], str, Model]:
        gw = self.gw
        key = gw.authenticate(req)
        raw, body = gw.json_body(req, self.kind)
        client_model = body["model"]
        model = gw.model_for(client_model, "chat")
        return key, raw, body, client_model, model

    def _adapter(self, model: Model, client_model: str) -> ChatAdapter:
        adapter = CHAT_ADAPTERS.get(model.provider.descriptor.dialect)
        if adapter is None:
            raise GatewayError(f"The Responses API with '{client_model}' is not available: "
                               "this gateway cannot translate to the "
                               f"'{model.provider.descriptor.dialect}' format yet.",
                               status=501, type="not_implemented")
        return adapter

    def _native_call(self, model: Model, kind: str, body: dict[str, Any],
                     stream: bool) -> UpstreamCall:
        sent = provider_body(model, kind, body)
        if "input" in sent:
            sent["input"] = ri.own_compactions_to_messages(sent["input"])
        headers = json_headers(model)
        if stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamCall("POST", model.provider.url(kind, model.upstream), headers,
                            json.dumps(sent).encode(), query_auth(model))

    def _answer(self, resp: falcon.Response, payload: dict[str, Any], meter: Meter,
                model: Model) -> None:
        usage = usage_of(payload.get("usage"))
        meter.settle(usage, token_cost(model, usage), 200)
        if isinstance(payload.get("usage"), dict):
            payload["usage"]["cost"] = micro_to_credits(meter.charged)
        resp.data = json.dumps(payload).encode()
        resp.content_type = falcon.MEDIA_JSON


class Responses(_Base):
    kind = "responses"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        gw = self.gw
        key, raw, body, client_model, model = self._start(req)
        stream = body.get("stream") is True
        native = "responses" in model.provider.descriptor.endpoints
        limit = max_output({"max_completion_tokens": body.get("max_output_tokens")},
                           model.max_output_tokens)
        prompt_bound = prompt_token_bound(raw, body)
        if native:
            call = self._native_call(model, "responses", body, stream)
            error = CHAT_ADAPTERS["openai"].error
        else:
            if body.get("previous_response_id"):
                raise BadRequest(
                    f"'previous_response_id' is not supported with '{client_model}': it needs "
                    "responses stored on the server, and this gateway keeps no state for "
                    "models whose provider does not serve the Responses API natively. Send "
                    "the whole conversation in 'input' instead.", param="previous_response_id")
            adapter = self._adapter(model, client_model)
            chat = ri.to_chat(body)
            if stream:
                chat["stream"] = True
            try:
                call = adapter.build(chat, model, stream)
            except MappingError as exc:
                raise BadRequest(exc.message, param=exc.param) from None
            error = adapter.error

        meter = Meter(gw.store, key, self.kind, client_model, model.provider.id)
        meter.reserve(chat_worst_case(model, prompt_bound, limit))
        resp.set_header("X-Request-Id", meter.request_id)
        chars = ri.prompt_chars(body)
        with meter.releasing_on_failure():
            upstream = gw.forward(call, model, error)
            is_sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            if stream and is_sse:
                _stream_headers(resp)
                events = iter_events(body_chunks(upstream))
                if native:
                    resp.stream = NativeStream(events, model=model, client_model=client_model,
                                               meter=meter, prompt_chars=chars,
                                               on_close=upstream.close)
                else:
                    response = ri.skeleton(body, client_model, ri.new_id("resp"))
                    resp.stream = TranslatedStream(
                        adapter.chunks(events, model), ri.ResponseEvents(response),
                        model=model, meter=meter, prompt_chars=chars, on_close=upstream.close)
                return
            payload = read_json(upstream)
            if native:
                if not isinstance(payload, dict):
                    raise GatewayError("The upstream provider answered with an invalid "
                                       "response.", status=502, type="upstream_error")
                payload["model"] = client_model
            else:
                completion = adapter.parse(payload, model)
                payload = ri.from_chat(completion, ri.skeleton(body, client_model,
                                                               ri.new_id("resp")))
        self._answer(resp, payload, meter, model)


class ResponsesCompact(_Base):
    kind = "responses.compact"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        gw = self.gw
        key, raw, body, client_model, model = self._start(req)
        native = "responses.compact" in model.provider.descriptor.endpoints
        limit = max_output({}, model.max_output_tokens)
        if native:
            call = self._native_call(model, "responses.compact", body, False)
            error = CHAT_ADAPTERS["openai"].error
        else:
            if body.get("previous_response_id"):
                raise BadRequest(
                    f"'previous_response_id' is not supported with '{client_model}': this "
                    "gateway keeps no stored responses; send the conversation in 'input'.",
                    param="previous_response_id")
            adapter = self._adapter(model, client_model)
            chat = ri.compact_request(body)
            chat["max_completion_tokens"] = limit = min(limit, COMPACT_MAX_OUTPUT)
            try:
                call = adapter.build(chat, model, False)
            except MappingError as exc:
                raise BadRequest(exc.message, param=exc.param) from None
            error = adapter.error

        meter = Meter(gw.store, key, self.kind, client_model, model.provider.id)
        meter.reserve(chat_worst_case(
            model, prompt_token_bound(raw, body) + len(ri.COMPACT_INSTRUCTIONS), limit))
        resp.set_header("X-Request-Id", meter.request_id)
        with meter.releasing_on_failure():
            upstream = gw.forward(call, model, error)
            payload = read_json(upstream)
            if native:
                if not isinstance(payload, dict):
                    raise GatewayError("The upstream provider answered with an invalid "
                                       "response.", status=502, type="upstream_error")
            else:
                payload = ri.compacted(body, adapter.parse(payload, model))
        self._answer(resp, payload, meter, model)


class NativeStream(MeteredStream):
    """A native Responses stream forwarded event by event."""

    def __init__(self, events: Iterator[Any], *, client_model: str, **kw: Any) -> None:
        self._events = events
        self._client_model = client_model
        super().__init__(**kw)

    def _run(self) -> Iterator[bytes]:
        try:
            for event in self._events:
                try:
                    data = json.loads(event.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                kind = data.get("type") or event.event
                response = data.get("response")
                if isinstance(response, dict) and "model" in response:
                    response["model"] = self._client_model
                if isinstance(data.get("delta"), str):
                    self._produced_chars += len(data["delta"])
                if kind == "error":  # the end of the stream: charge before it goes out
                    self._status = 502
                    self._finish()
                    yield ri.sse(data, kind)
                    return
                if kind in TERMINAL and isinstance(response, dict):
                    if kind == "response.failed":
                        self._status = 502
                    usage = usage_of(response.get("usage"))
                    if not usage.empty:
                        self._usage = usage
                    self._finish()
                    if isinstance(response.get("usage"), dict):
                        response["usage"]["cost"] = micro_to_credits(self._meter.charged)
                yield ri.sse(data, kind)
                if kind in TERMINAL:
                    return  # the upstream is closed: nothing follows a terminal event
        except (StreamBroken, GatewayError) as exc:
            self._status = getattr(exc, "status", 502)
            self._finish()
            yield ri.sse(_error_data(exc.message, "upstream_error"))
        finally:
            self._finish()


class TranslatedStream(MeteredStream):
    """Chat chunks from a chat adapter, sent as Responses events."""

    def __init__(self, chunks: Iterator[dict[str, Any]], machine: ri.ResponseEvents,
                 **kw: Any) -> None:
        self._chunks = chunks
        self._machine = machine
        self._reasoning = 0
        super().__init__(**kw)

    def _run(self) -> Iterator[bytes]:
        machine = self._machine
        try:
            for event in machine.start():
                yield ri.sse(event)
            for chunk in self._chunks:
                self._observe(chunk)
                if isinstance(chunk.get("usage"), dict):
                    self._reasoning = ri.response_usage(chunk["usage"])[
                        "output_tokens_details"]["reasoning_tokens"]
                for event in machine.feed(chunk):
                    yield ri.sse(event)
        except (StreamBroken, GatewayError) as exc:
            self._status = getattr(exc, "status", 502)
            self._finish()
            code = getattr(exc, "type", None) or "upstream_error"
            for event in machine.fail(exc.message, code, self._usage_out()):
                yield ri.sse(event)
        else:
            self._finish()
            for event in machine.finish(self._usage_out()):
                yield ri.sse(event)
        finally:
            self._finish()

    def _usage_out(self) -> dict[str, Any]:
        u = self.charged_usage
        usage = ri.response_usage({
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens,
                                      "cache_write_tokens": u.cache_write_tokens}})
        usage["output_tokens_details"]["reasoning_tokens"] = self._reasoning
        usage["cost"] = micro_to_credits(self._meter.charged)
        return usage


def _error_data(message: str, code: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "param": None,
            "error": {"type": code, "code": code, "message": message, "param": None}}

