"""Anthropic Messages clients (`POST /v1/messages`) to every chat model of the catalogue.

Every error is answered in Anthropic's envelope `{"type":"error","error":{"type","message"}}`.

- Provider of the anthropic dialect (`PassthroughExchange`): the body passes through with the
  upstream model name and the provider's own credentials and `anthropic-version` (the client's
  `anthropic-beta` is forwarded; other providers never see it). Two changes: thinking blocks
  in which the gateway carried another provider's reasoning state (a conversation begun on a
  Gemini model) are left out, as Anthropic would refuse their signatures
  (`carried_thinking_restored`); and the Messages API documents only user and assistant
  roles, so a `system` turn inside `messages` (Claude Code
  sends them) is folded into the conversation as a user-side note at that point, its text
  wrapped in `<system>` tags (`fold_system_turns`): appended to the neighbouring user turn,
  the previous one when there is one (after any tool results, which must come first), else
  a user turn of its own, so roles keep alternating and the cached prefix before it stays
  unchanged; the answer comes back as sent, with `model` set to the id
  shown to the client and `usage.cost` added. Stream events are forwarded one by one as they
  arrive; only message_start (model, usage), content_block_delta (what was produced, for a cut
  stream), message_delta (cumulative usage; `cost` added) and error are read. Upstream error
  answers keep their status and Anthropic body; a refused gateway key is a 502 for the
  operator.
- Any other provider (`TranslatedExchange`): the request goes through
  runtime/clients/messages_translation.py to the OpenAI chat form, then the provider's chat
  adapter; answers, streams and errors come back the same way, with the tools the provider
  cannot run named in `x-tokmodel-dropped-tools`. Mid-stream failures end the
  stream with an Anthropic `error` event.

Hold: as for chat, from the request as received (`max_tokens` is required by the format),
its output part capped at the model's catalogue `max_output_tokens`; a translated request's
`max_tokens` is clamped to that same limit (Claude Code asks for 64000 whatever the model),
and its `reasoning_effort` (from `thinking` / `output_config.effort`) is dropped unless the
model's catalogue entry declares `reasoning: true`.
Charging: prompt = input + cache reads + cache writes at the catalogue's cache prices,
completion = output tokens. A stream cut by the upstream or the client is charged for what
was produced (usage reported so far; missing output estimated at 4 characters a token), and
always for its prompt, which the provider bills once it accepted the request: from
message_start's input usage (read from the first bytes even when the client left before the
stream was started), else estimated from the whole request (runtime/billing/prompt_estimate.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from runtime import fastjson
from runtime.billing.meter import Meter
from runtime.billing.metered_stream import (
    MeteredStream,
    PromptEstimate,
    estimate_tokens,
    settle_produced,
)
from runtime.billing.pricing import Usage, charge_nano, nano_to_credits, token_cost
from runtime.billing.prompt_estimate import lazy_prompt, stream_prompt
from runtime.billing.settling_body import SettlingBody
from runtime.catalogue import Model
from runtime.clients import hosted_search
from runtime.clients import messages_translation as inbound
from runtime.clients.chat import chat_adapter, is_sse, with_usage
from runtime.clients.reasoning_state import decode_carried, thinking_blocks
from runtime.errors import BadRequest, GatewayError, UpstreamError
from runtime.gateway import ErrorMapper, provider_body
from runtime.pipeline.route import Answer, Request
from runtime.providers.anthropic_chat import error_of, openai_usage
from runtime.providers.base import (
    StreamBroken,
    UpstreamCall,
    credential_error,
    json_headers,
    message_from,
    retry_headers,
)
from runtime.redaction import mask_json
from runtime.sse import Event, encode, iter_events
from runtime.upstream import UpstreamResponse, read_json

PASSTHROUGH_DIALECT = "anthropic"


def exchange(request: Request, model: Model,
             shown: str) -> PassthroughExchange | TranslatedExchange:
    descriptor = model.provider.descriptor
    if descriptor.dialect == PASSTHROUGH_DIALECT and "messages" in descriptor.endpoints:
        return PassthroughExchange(request, model, shown)
    return TranslatedExchange(request, model, shown)


def _answer(payload: dict[str, Any]) -> bytes:
    # a lone surrogate in the upstream's text goes out as its JSON escape (runtime/sse.py)
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace")


class PassthroughExchange:
    """Same dialect: the body passes through."""

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        self.model = model
        self.shown = shown
        self.stream = request.stream
        self.body = request.body
        native = provider_body(model, "messages",
                               fold_system_turns(carried_thinking_restored(request.body)))
        headers = json_headers(model)
        beta = request.headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        if self.stream:
            headers["Accept"] = "text/event-stream"
        self.call = UpstreamCall("POST", model.provider.url("messages", model.upstream), headers,
                                 json.dumps(native, ensure_ascii=False).encode())
        self.error = passthrough_error

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return self.stream and is_sse(upstream)

    def whole(self, upstream: UpstreamResponse) -> Answer:
        payload = read_json(upstream)
        if not isinstance(payload, dict) or not isinstance(payload.get("content"), list):
            raise UpstreamError("The upstream provider answered without content.")
        payload["model"] = self.shown
        raw_usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        usage = Usage.from_openai(openai_usage(raw_usage))

        def render(charged: int) -> bytes:
            if isinstance(payload.get("usage"), dict):
                payload["usage"]["cost"] = nano_to_credits(charged)
            return _answer(payload)

        return Answer(usage, token_cost(self.model, usage), render)

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> PassthroughStream:
        return PassthroughStream(iter_events(chunks), model=self.model, client_model=self.shown,
                                 meter=meter, on_close=upstream.close,
                                 prompt=stream_prompt(self.body, self.model))


def carried_thinking_restored(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without the thinking blocks in which this gateway carried another provider's
    reasoning state (Anthropic would refuse their signatures); blocks it carried for
    Anthropic itself become those blocks again. The same object when there is none."""
    turns = body["messages"]
    if not any(_carrier(block) for turn in turns for block in _blocks(turn)):
        return body
    out = []
    for turn in turns:
        if not _blocks(turn):
            out.append(turn)
            continue
        content: list[Any] = []
        for block in _blocks(turn):
            state = _carrier(block)
            if state is None:
                content.append(block)
            elif state["dialect"] == PASSTHROUGH_DIALECT:
                content += thinking_blocks(state)
        if content:                 # a turn left empty is left out (Anthropic refuses it)
            out.append(dict(turn, content=content))
    return dict(body, messages=out)


def _blocks(turn: dict[str, Any]) -> list[Any]:
    content = turn.get("content")
    return content if isinstance(content, list) else []


def _carrier(block: Any) -> dict[str, Any] | None:
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return None
    return decode_carried(block.get("signature"))


def fold_system_turns(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with each `system` turn of `messages` folded into a user turn as a text note
    (see the module docstring); the same object when there is none."""
    turns = body["messages"]
    if not any(turn.get("role") == "system" for turn in turns):
        return body
    out: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []             # notes not yet placed in a user turn
    for turn in turns:
        if turn.get("role") == "system":
            held.extend(_notes(turn.get("content")))
            if out and out[-1]["role"] == "user":
                out[-1] = _with_blocks(out[-1], held)
                held = []
            continue
        if held and turn.get("role") == "user":
            turn = _with_blocks(turn, held)
            held = []
        elif held:
            out.append({"role": "user", "content": held})
            held = []
        out.append(turn)
    if held:
        out.append({"role": "user", "content": held})
    return dict(body, messages=out)


def _notes(content: Any) -> list[dict[str, Any]]:
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    notes = []
    for block in blocks or ():
        if isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
            notes.append(dict(block, text=f"<system>\n{block['text']}\n</system>"))
        elif isinstance(block, dict) and block.get("type") != "text":
            raise BadRequest("A system turn in 'messages' can hold text blocks only.",
                             param="messages")
    return notes


def _with_blocks(turn: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, Any]:
    content = turn["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    return dict(turn, content=[*content, *blocks])


class TranslatedExchange:
    """Other dialects: translate through OpenAI chat."""

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        self.adapter = chat_adapter(model, "Messages", shown)
        self.model = model
        self.shown = shown
        self.stream = request.stream
        self.body = request.body
        # The provider's own reasoning state rides in thinking blocks (see
        # messages_translation): out with the answer, back in with the next request.
        self.carry = model.provider.descriptor.dialect
        dropped: list[str] = []
        self.chat_body = inbound.to_openai(request.body, self.carry, self.adapter.web_search,
                                           dropped)
        self.headers = hosted_search.dropped_headers(dropped)  # sent whole or streamed
        limit = model.max_output_tokens
        if limit and self.chat_body["max_completion_tokens"] > limit:
            self.chat_body["max_completion_tokens"] = limit
        if not model.reasoning:
            # A tuning of how much the model thinks: moot where it cannot think.
            self.chat_body.pop("reasoning_effort", None)
        self.call = self.adapter.build(self.chat_body, model, self.stream)
        self.error = anthropic_facing(self.adapter.error)

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return self.stream and is_sse(upstream)

    def whole(self, upstream: UpstreamResponse) -> Answer:
        completion = self.adapter.parse(read_json(upstream), self.model)
        usage = Usage.from_openai(with_usage(completion, lazy_prompt(self.body, self.model)))
        return Answer(usage, token_cost(self.model, usage), lambda charged: _answer(
            inbound.to_message(completion, self.shown, usage, nano_to_credits(charged),
                               self.carry)), headers=self.headers)

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> TranslatedStream:
        return TranslatedStream(self.adapter.stream(chunks, self.model), model=self.model,
                                client_model=self.shown, carry=self.carry, meter=meter,
                                prompt=stream_prompt(self.body, self.model),
                                on_close=upstream.close)


# -- errors -----------------------------------------------------------------------------------

def passthrough_error(status: int, raw: bytes, headers: Mapping[str, str],
                      model: Model) -> GatewayError:
    """An Anthropic upstream's error for an Anthropic client: its status and body are kept
    (529 stays 529); the provider refusing the gateway's own key is a 502 for the operator."""
    kind, message = error_of(raw)
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return credential_error(model)
    if kind is not None and message is not None:
        return GatewayError(message, status=status, type=kind, body=raw,
                            headers=retry_headers(headers))
    message = message or f"The upstream provider returned HTTP {status}."
    if status >= 500:
        return UpstreamError(message, status=status, headers=retry_headers(headers))
    return GatewayError(message, status=status, type=inbound.error_type(status),
                        headers=retry_headers(headers))


def anthropic_facing(mapper: ErrorMapper) -> ErrorMapper:
    """An adapter's error mapping, with an upstream envelope kept for OpenAI clients replaced
    by its message, so the error is rendered in Anthropic's envelope."""
    def error(status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError:
        err = mapper(status, raw, headers, model)
        if err.body is not None:
            err.message = message_from(err.body) or err.message
            err.body = None
        return err
    return error


# -- streams ----------------------------------------------------------------------------------

class TranslatedStream(MeteredStream):
    """OpenAI chunks of a provider's adapter in, Anthropic events out; settles once."""

    def __init__(self, chunks: Iterator[dict[str, Any]], *, model: Model, client_model: str,
                 carry: str | None, meter: Meter, prompt: PromptEstimate,
                 on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._writer = inbound.EventWriter(client_model, carry)
        super().__init__(model=model, meter=meter, prompt=prompt, on_close=on_close)

    def _run(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                self._observe(chunk)
                out = self._writer.chunk(chunk)
                if out:
                    yield b"".join(out)
        except (StreamBroken, GatewayError) as exc:
            self._status = exc.status
            self._produced_chars += getattr(exc, "received", 0)  # an over-cap event's bytes
            self._finish()
            yield inbound.error_event(exc.status, exc.message, exc.type)
        else:
            self._finish()
            yield b"".join(self._writer.end(self.charged_usage,
                                            nano_to_credits(self._meter.charged)))
        finally:
            self._finish()


class PassthroughStream(SettlingBody):
    """An Anthropic upstream's events forwarded one by one; settles once from their usage."""

    def __init__(self, events: Iterator[Event], *, model: Model, client_model: str,
                 meter: Meter, on_close: Callable[[], None], prompt: PromptEstimate) -> None:
        self._events = events
        self._model = model
        self._client_model = client_model
        self._on_close = on_close
        self._prompt = prompt
        self._started = False
        self._usage: dict[str, Any] = {}
        self._counted_output = False
        self._produced_chars = 0
        self._ended = False
        super().__init__(meter)

    def _run(self) -> Iterator[bytes]:
        self._started = True
        try:
            for ev in self._events:
                out = self._forward(ev)
                if out:
                    yield out
                if self._ended:
                    return
        except StreamBroken as exc:
            self._status = exc.status
            self._produced_chars += getattr(exc, "received", 0)  # an over-cap event's bytes
            self._finish()
            yield inbound.error_event(exc.status, exc.message, exc.type)
        else:
            if not self._ended:
                self._status = 502
                self._finish()
                yield inbound.error_event(502, "The upstream provider ended the stream early.")
        finally:
            self._finish()

    def _forward(self, ev: Event) -> bytes:
        name = ev.event
        if name not in ("message_start", "content_block_delta", "message_delta",
                        "message_stop", "error"):
            return encode(ev.data, name)
        try:
            data = fastjson.loads(ev.data)
        except ValueError:
            return encode(ev.data, name)
        if not isinstance(data, dict):
            return encode(ev.data, name)
        if name == "message_start" and isinstance(data.get("message"), dict):
            data["message"]["model"] = self._client_model
            self._usage.update(data["message"].get("usage") or {})
            return encode(fastjson.dumps(data), name)
        if name == "content_block_delta":
            delta = data.get("delta") or {}
            for field in ("text", "thinking", "partial_json"):
                if isinstance(delta.get(field), str):
                    self._produced_chars += len(delta[field])
            return encode(ev.data, name)
        if name == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict):
                # Cumulative totals: the newest value replaces the earlier one.
                self._usage.update({k: v for k, v in usage.items() if v is not None})
                self._counted_output = "output_tokens" in usage
                cost = token_cost(self._model, self._current())
                usage["cost"] = nano_to_credits(charge_nano(cost))
            return encode(fastjson.dumps(data), name)
        if name == "error":
            err = data.get("error") if isinstance(data.get("error"), dict) else {}
            self._status = 529 if err.get("type") == "overloaded_error" else 502
            self._ended = True
            self._finish()
            # the upstream's words go to the client: masked, as every error is
            return encode(json.dumps(mask_json(data), separators=(",", ":")), name)
        self._ended = True                      # message_stop: charge before the last bytes
        self._finish()
        return encode(ev.data, name)

    def produced(self) -> tuple[Usage, Decimal]:
        """The usage and exact cost a cut now would be charged, without settling (recorded
        on the hold while the stream runs: billing/hold_progress.py); the prompt is known
        exactly from message_start."""
        usage = self._current() if self._usage else Usage()
        return usage, token_cost(self._model, usage)

    def _current(self) -> Usage:
        usage = dict(self._usage)
        if not self._counted_output:
            counted = usage.get("output_tokens")
            usage["output_tokens"] = max(counted if isinstance(counted, int) else 0,
                                         estimate_tokens(self._produced_chars))
        return Usage.from_openai(openai_usage(usage))

    def _finish(self) -> None:
        if self._meter.settled:
            return
        self._note_interruption()
        try:
            if not self._started:
                self._read_start()
            self._on_close()
        finally:
            usage = self._current() if self._usage else None
            settle_produced(self._meter, self._model, usage, self._prompt,
                            self._produced_chars, self._status)

    def _read_start(self) -> None:
        """The input usage of message_start, when the stream was closed before it was read
        (a client gone right after the headers): Anthropic sends it first, so it is in the
        bytes read before the answer was committed. Only the first event is looked at."""
        try:
            ev = next(self._events, None)
            if ev is not None and ev.event == "message_start":
                message = json.loads(ev.data).get("message")
                if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                    self._usage.update(message["usage"])
        except Exception:  # a stream already running or broken: the estimate then
            return
