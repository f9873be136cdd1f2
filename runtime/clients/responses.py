"""POST /v1/responses and POST /v1/responses/compact (OpenAI Responses API) for every chat model.

The pipeline (runtime/pipeline/run.py) runs the request; this module says how Responses
clients are held, translated and answered.

Native: when the provider's descriptor lists a `responses` endpoint, the body is passed through
with the upstream model name (the gateway's own compaction items become developer messages);
stream events are forwarded one by one as they arrive, parsed only to put back the client's
model id and to read usage from response.completed / response.incomplete / response.failed
(input tokens include cached ones; output tokens include reasoning). `usage.cost` (credits)
is added to the answer and the terminal event.

Translated: any other provider gets the request as OpenAI chat through its chat adapter
(runtime/clients/responses_translation.py), and the answer or stream comes back as Responses.
Conversations are stored and continued with `previous_response_id` on every model
(runtime/clients/stored_responses.py).
Namespaced tools are flattened and their names restored in the answer; a hosted `web_search`
tool the provider cannot run is dropped, and the answer says so in `x-tokmodel-dropped-tools`
(comma-separated tool types).

Compact: the answer is OpenAI's `response.compaction` object, which the openai SDK's
`client.responses.compact` expects (kept user messages, then one `compaction` item). A provider
whose descriptor lists `responses.compact` compacts natively; for the others the chat model
writes a summary, carried in the gateway's own compaction item, which /v1/responses turns back
into context for any model. It is charged from the usage of that call like any chat call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from runtime import fastjson
from runtime.billing.meter import Meter
from runtime.billing.metered_stream import MeteredStream
from runtime.billing.pricing import Usage, nano_to_credits, token_cost
from runtime.billing.prompt_estimate import lazy_prompt, stream_prompt
from runtime.catalogue import Model
from runtime.clients import hosted_search
from runtime.clients import responses_translation as ri
from runtime.clients import stored_responses as stored
from runtime.clients.chat import chat_adapter, chat_hold, is_sse, max_output, with_usage
from runtime.errors import BadRequest, GatewayError
from runtime.gateway import provider_body
from runtime.pipeline.route import Answer, Request
from runtime.providers import CHAT_ADAPTERS
from runtime.providers.base import StreamBroken, UpstreamCall, json_headers, query_auth
from runtime.redaction import mask_json
from runtime.sse import iter_events
from runtime.upstream import UpstreamResponse, read_json

log = logging.getLogger("tokmodel.responses")


TERMINAL = ("response.completed", "response.incomplete", "response.failed")
COMPACT_MAX_OUTPUT = 4096


def usage_of(raw: Any, output: Any = None) -> Usage:
    """Responses usage -> Usage (input includes cached and cache-write tokens), with the
    hosted web searches the response's `output` lists (one `web_search_call` item each)."""
    searches = sum(1 for item in output if isinstance(item, dict)
                   and item.get("type") == "web_search_call") if isinstance(output, list) else 0
    if not isinstance(raw, dict):
        raw = {}
    details = raw.get("input_tokens_details") or {}
    return Usage.from_openai({"prompt_tokens": raw.get("input_tokens"),
                              "completion_tokens": raw.get("output_tokens"),
                              "prompt_tokens_details": {
                                  "cached_tokens": details.get("cached_tokens"),
                                  "cache_write_tokens": details.get("cache_write_tokens")},
                              "server_tool_use": {"web_search_requests": searches}})


def hold(request: Request, model: Model) -> int:
    """As chat (runtime/clients/chat.py), plus the stored conversation `previous_response_id`
    brings into the prompt."""
    limit = max_output({"max_completion_tokens": request.body.get("max_output_tokens")},
                       model.max_output_tokens)
    return chat_hold(model, request.raw, request.body, limit,
                     stored.context_tokens(stored.previous(request)))


def compact_hold(request: Request, model: Model) -> int:
    context = (stored.context_tokens(stored.previous(request))
               + len(ri.COMPACT_INSTRUCTIONS))
    return chat_hold(model, request.raw, request.body,
                     max_output({}, model.max_output_tokens), context)


def _continuation(request: Request, model: Model, native: bool,
                  shown: str) -> tuple[dict[str, Any], str | None, int]:
    """(the body to serve, the deployment it must go to, the tokens of stored context the
    provider adds to it) for `previous_response_id`: on a native model the stored id must be
    this provider's (and goes where it is stored); on a translated one the stored
    conversation is put before the new input."""
    body = dict(request.body)
    earlier = stored.previous(request)
    if earlier is None:
        return body, None, 0
    if native:
        if not earlier.native or earlier.provider != model.provider.id:
            raise BadRequest(f"The response '{earlier.id}' was not stored by the provider of "
                             f"'{shown}'; continue it with the model that answered it "
                             f"('{earlier.model}').", param="previous_response_id")
        return body, earlier.deployment, stored.context_tokens(earlier)
    body["input"] = stored.continued_input(earlier, body.get("input"))
    del body["previous_response_id"]
    return body, None, 0


def _native_call(model: Model, kind: str, body: Any, stream: bool) -> UpstreamCall:
    sent = provider_body(model, kind, body)
    if "input" in sent:
        sent["input"] = ri.own_reasoning_dropped(
            ri.own_compactions_to_messages(sent["input"]))
    headers = json_headers(model)
    if stream:
        headers["Accept"] = "text/event-stream"
    return UpstreamCall("POST", model.provider.url(kind, model.upstream), headers,
                        json.dumps(sent).encode(), query_auth(model))


def _answer(payload: dict[str, Any], model: Model, headers: dict[str, str] | None = None,
            usage: Usage | None = None) -> Answer:
    """A whole answer charged from `usage`, by default the response's own."""
    if usage is None:
        usage = usage_of(payload.get("usage"), payload.get("output"))

    def render(charged: int) -> bytes:
        if isinstance(payload.get("usage"), dict):
            payload["usage"]["cost"] = nano_to_credits(charged)
        return json.dumps(payload).encode()

    return Answer(usage, token_cost(model, usage), render, headers=headers or {})


def _checked(payload: Any) -> dict[str, Any]:
    """A native answer, with the upstream's words about a failed response masked."""
    if not isinstance(payload, dict):
        raise GatewayError("The upstream provider answered with an invalid response.",
                           status=502, type="upstream_error")
    if payload.get("error"):
        payload["error"] = mask_json(payload["error"])
    return payload


class ResponsesExchange:
    """`POST /v1/responses`: native passthrough or translated through chat; conversations
    stored and continued on every model (runtime/clients/stored_responses.py)."""

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        self.model = model
        self.shown = shown
        self.request = request
        self.body = request.body
        self.stream = request.stream
        self.headers: dict[str, str] = {}   # sent with the answer, whole or streamed
        self.names: dict[str, tuple[str, str]] = {}
        self.native = "responses" in model.provider.descriptor.endpoints
        self.store = stored.wants_storing(request.body)
        self.answered: str | None = None
        body, self.deployment, self.context = _continuation(request, model, self.native,
                                                            shown)
        if self.native:
            self.call = _native_call(model, "responses", body, self.stream)
            self.error = CHAT_ADAPTERS["openai"].error
            return
        self.input_items: list[Any] | None = None
        if self.store:
            items = body.get("input")
            self.input_items = ([{"type": "message", "role": "user", "content": items}]
                                if isinstance(items, str) else list(items or []))
        self.body = body
        self.adapter = chat_adapter(model, "The Responses API", shown)
        plan = ri.tool_plan(body, web_search=self.adapter.web_search)
        self.names = plan.names
        self.headers.update(hosted_search.dropped_headers(plan.dropped))
        dialect = model.provider.descriptor.dialect
        self.carry = dialect if ri.carries(body) else None
        chat = ri.to_chat(body, plan, dialect)
        if self.stream:
            chat["stream"] = True
        self.call = self.adapter.build(chat, model, self.stream)
        self.error = self.adapter.error

    def answered_on(self, deployment: str) -> None:
        self.answered = deployment

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return self.stream and is_sse(upstream)

    def whole(self, upstream: UpstreamResponse) -> Answer:
        payload = read_json(upstream)
        usage = None
        if self.native:
            payload = _checked(payload)
            payload["model"] = self.shown
        else:
            completion = self.adapter.parse(payload, self.model)
            # the chat usage: it also counts the hosted web searches the provider ran
            usage = Usage.from_openai(with_usage(completion, lazy_prompt(self.body,
                                                                         self.model)))
            payload = ri.from_chat(completion, ri.skeleton(self.request.body, self.shown,
                                                           ri.new_id("resp")), self.names,
                                  self.carry)
        self.kept(payload)
        return _answer(payload, self.model, self.headers, usage)

    def kept(self, response: dict[str, Any]) -> None:
        """Store a finished response as the client asked (native: owner and location)."""
        if not self.store or response.get("status") == "failed":
            return
        if self.native:
            stored.keep(self.request, self.model, response, None, self.answered)
        else:
            stored.keep(self.request, self.model, response, self.input_items)

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> MeteredStream:
        prompt = stream_prompt(self.body, self.model, self.context if self.native else 0)
        if self.native:
            return NativeStream(iter_events(chunks), model=self.model,
                                client_model=self.shown, meter=meter, prompt=prompt,
                                on_close=upstream.close, on_done=self.kept)
        response = ri.skeleton(self.request.body, self.shown, ri.new_id("resp"))
        return TranslatedStream(self.adapter.stream(chunks, self.model),
                                ri.ResponseEvents(response, self.names, self.carry),
                                model=self.model,
                                meter=meter, prompt=prompt, on_close=upstream.close,
                                on_done=self.kept)


class CompactExchange:
    """`POST /v1/responses/compact`: native, or a summary written by the chat model."""

    stream = False

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        self.model = model
        self.body = request.body
        self.native = "responses.compact" in model.provider.descriptor.endpoints
        body, self.deployment, _ = _continuation(request, model, self.native, shown)
        self.body = body
        if self.native:
            self.call = _native_call(model, "responses.compact", body, False)
            self.error = CHAT_ADAPTERS["openai"].error
            return
        self.adapter = chat_adapter(model, "The Responses API", shown)
        chat = ri.compact_request(body)
        chat["max_completion_tokens"] = min(max_output({}, model.max_output_tokens),
                                            COMPACT_MAX_OUTPUT)
        self.call = self.adapter.build(chat, model, False)
        self.error = self.adapter.error

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return False

    def whole(self, upstream: UpstreamResponse) -> Answer:
        payload = read_json(upstream)
        if self.native:
            payload = _checked(payload)
        else:
            payload = ri.compacted(self.body, self.adapter.parse(payload, self.model))
        return _answer(payload, self.model)

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> MeteredStream:
        raise AssertionError("compaction is never streamed")


def _done(on_done: Callable[[dict[str, Any]], None], response: dict[str, Any]) -> None:
    """Hand a finished stream's response on (to be stored); the client has its stream, so a
    failure here is logged, never raised."""
    try:
        on_done(response)
    except Exception:
        log.exception("could not store a streamed response")


class NativeStream(MeteredStream):
    """A native Responses stream forwarded event by event."""

    def __init__(self, events: Iterator[Any], *, client_model: str,
                 on_done: Callable[[dict[str, Any]], None], **kw: Any) -> None:
        self._events = events
        self._client_model = client_model
        self._on_done = on_done
        super().__init__(**kw)

    def _run(self) -> Iterator[bytes]:
        try:
            for event in self._events:
                try:
                    data = fastjson.loads(event.data)
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
                    yield ri.sse(mask_json(data), kind)   # masked, as every error is
                    return
                if kind in TERMINAL and isinstance(response, dict):
                    if kind == "response.failed":
                        self._status = 502
                        response["error"] = mask_json(response.get("error"))
                    usage = usage_of(response.get("usage"), response.get("output"))
                    if not usage.empty:
                        self._usage = usage
                    self._finish()
                    if isinstance(response.get("usage"), dict):
                        response["usage"]["cost"] = nano_to_credits(self._meter.charged)
                    _done(self._on_done, response)
                yield ri.sse(data, kind)
                if kind in TERMINAL:
                    return  # the upstream is closed: nothing follows a terminal event
        except (StreamBroken, GatewayError) as exc:
            self._status = exc.status
            self._produced_chars += getattr(exc, "received", 0)  # an over-cap event's bytes
            self._finish()
            yield ri.sse(_error_data(exc.message, "upstream_error"))
        finally:
            self._finish()


class TranslatedStream(MeteredStream):
    """Chat chunks from a chat adapter, sent as Responses events."""

    def __init__(self, chunks: Iterator[dict[str, Any]], machine: ri.ResponseEvents, *,
                 on_done: Callable[[dict[str, Any]], None], **kw: Any) -> None:
        self._chunks = chunks
        self._machine = machine
        self._reasoning = 0
        self._on_done = on_done
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
            self._status = exc.status
            self._produced_chars += getattr(exc, "received", 0)  # an over-cap event's bytes
            self._finish()
            code = getattr(exc, "type", None) or "upstream_error"
            for event in machine.fail(exc.message, code, self._usage_out()):
                yield ri.sse(event)
        else:
            self._finish()
            events = machine.finish(self._usage_out())
            _done(self._on_done, events[-1]["response"])
            for event in events:
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
        usage["cost"] = nano_to_credits(self._meter.charged)
        return usage


def _error_data(message: str, code: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "param": None,
            "error": {"type": code, "code": code, "message": message, "param": None}}

