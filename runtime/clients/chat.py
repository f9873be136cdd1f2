"""OpenAI chat clients (`POST /v1/chat/completions`) to any chat model: the route's hold
policy, its exchange with a provider's chat adapter, and the stream in OpenAI's framing.

Hold: every prompt token (bounded by the request body, runtime/billing/prompt_bound.py, with
every image, inline or by URL, at the model's per-image estimate) at the input price plus
`n` times the allowed output (`max_completion_tokens`, else `max_tokens`, else the model's
limit) at the output price, plus the fees of hosted web searches the request allows
(runtime/billing/hosted_tools.py), all read from the request as the client sent it.

Charge: the provider's usage, with the hosted web searches it reports (an OpenAI search
model's `web_search_options` request counts one); an answer without usage (whole or
streamed) is charged an estimate of the whole request's prompt plus what was produced
(runtime/billing/prompt_estimate.py), also when the client left before any text: the
provider bills a request it accepted.

The answer's `model` is the id the client used (or the fallback's id when a fallback
answered); `usage.cost` is the charge in credits. A stream forwards the adapter's chunks as
they arrive, strips usage unless the client asked for it (`stream_options.include_usage`),
adds `cost` when it did, ends with `data: [DONE]`, and settles once in every outcome
(runtime/billing/metered_stream.py). Usage an upstream reports on a content chunk (Mistral,
unasked) is charged, and reaches a client that asked for usage in a last `choices: []`
chunk of its own, as OpenAI sends it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from runtime import fastjson
from runtime.billing.hosted_tools import hosted_tools_hold
from runtime.billing.image_tokens import image_tokens
from runtime.billing.meter import Meter
from runtime.billing.metered_stream import (
    MeteredStream,
    PromptEstimate,
    delta_chars,
    estimate_tokens,
)
from runtime.billing.pricing import (
    WEB_SEARCHES,
    Usage,
    charge_nano,
    chat_worst_case,
    hold_nano,
    nano_to_credits,
    token_cost,
)
from runtime.billing.prompt_bound import prompt_token_bound
from runtime.billing.prompt_estimate import lazy_prompt, stream_prompt
from runtime.catalogue import Model
from runtime.errors import GatewayError
from runtime.pipeline.route import Answer, Request
from runtime.providers import CHAT_ADAPTERS, ChatAdapter
from runtime.providers.base import StreamBroken
from runtime.upstream import UpstreamResponse, read_json

DEFAULT_MAX_OUTPUT = 4096
DONE = b"data: [DONE]\n\n"


def max_output(body: Mapping[str, Any], model_max: int | None) -> int:
    """Output tokens the request allows in all: per choice (its own limit, at most the
    model's) times `n`."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    limit = model_max or DEFAULT_MAX_OUTPUT
    per_choice = min(asked, limit) if isinstance(asked, int) and asked > 0 else limit
    n = body.get("n")
    return per_choice * (n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)


def hold(request: Request, model: Model) -> int:
    return chat_hold(model, request.raw, request.body,
                     max_output(request.body, model.max_output_tokens))


def chat_hold(model: Model, raw: bytes, body: Mapping[str, Any], output: int,
              context_tokens: int = 0) -> int:
    """The hold of a chat-like request on `model`: its prompt bound (plus `context_tokens` the
    provider adds, e.g. a stored conversation), `output` tokens, and hosted tool fees."""
    prompt = prompt_token_bound(raw, body, image_tokens(model)) + context_tokens
    return (chat_worst_case(model, prompt, output)
            + hold_nano(hosted_tools_hold(model, body)))


def chat_adapter(model: Model, what: str, client_model: str) -> ChatAdapter:
    adapter = CHAT_ADAPTERS.get(model.provider.descriptor.dialect)
    if adapter is None:
        raise GatewayError(f"{what} with '{client_model}' is not available: this gateway "
                           f"cannot translate to the '{model.provider.descriptor.dialect}' "
                           "format yet.", status=501, type="not_implemented")
    return adapter


def is_sse(upstream: UpstreamResponse) -> bool:
    return upstream.headers.get("Content-Type", "").startswith("text/event-stream")


class ChatExchange:
    def __init__(self, request: Request, model: Model, shown: str) -> None:
        self.adapter = chat_adapter(model, "Chat", shown)
        self.model = model
        self.shown = shown
        self.body = request.body
        self.stream = request.stream
        self.call = self.adapter.build(request.body, model, self.stream)
        self.error = self.adapter.error
        # OpenAI's search models run one search per request that asks for it and bill it
        # without reporting it; other providers' adapters report the searches they ran
        self.searches = 1 if (model.provider.descriptor.dialect == "openai" and isinstance(
            request.body.get("web_search_options"), dict)) else 0

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return self.stream and is_sse(upstream)

    def whole(self, upstream: UpstreamResponse) -> Answer:
        payload = self.adapter.parse(read_json(upstream), self.model)
        payload["model"] = self.shown
        usage = Usage.from_openai(with_usage(payload, lazy_prompt(self.body, self.model)))
        if self.searches:
            usage.units.setdefault(WEB_SEARCHES, self.searches)

        def render(charged: int) -> bytes:
            if isinstance(payload.get("usage"), dict):
                payload["usage"]["cost"] = nano_to_credits(charged)
            return fastjson.dumps(payload)

        return Answer(usage, token_cost(self.model, usage), render)

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> ChatStream:
        options = self.body.get("stream_options")
        return ChatStream(self.adapter.stream(chunks, self.model), model=self.model,
                          client_model=self.shown, meter=meter,
                          include_usage=isinstance(options, dict)
                          and bool(options.get("include_usage")),
                          prompt=stream_prompt(self.body, self.model), on_close=upstream.close,
                          web_searches=self.searches)


def with_usage(completion: dict[str, Any], prompt: PromptEstimate) -> dict[str, Any]:
    """The completion's `usage`; when the provider sent none (some OpenAI-compatible servers),
    an estimate is put in its place, so the answer shows what is charged: the prompt's
    estimate and the text of its choices at 4 characters a token."""
    if not Usage.from_openai(completion.get("usage")).empty:
        return completion["usage"]
    produced = 0
    for choice in completion.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            produced += delta_chars(message)
    prompt_tokens, completion_tokens = prompt(), estimate_tokens(produced)
    completion["usage"] = {"prompt_tokens": prompt_tokens,
                           "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    return completion["usage"]


class ChatStream(MeteredStream):
    __slots__ = ("_chunks", "_client_model", "_include_usage", "_usage_chunk")

    def __init__(self, chunks: Iterator[dict[str, Any]], *, model: Model, client_model: str,
                 meter: Meter, include_usage: bool, prompt: PromptEstimate,
                 on_close: Any, web_searches: int = 0) -> None:
        self._chunks = chunks
        self._client_model = client_model
        self._include_usage = include_usage
        self._usage_chunk: dict[str, Any] | None = None
        super().__init__(model=model, meter=meter, prompt=prompt, on_close=on_close,
                         web_searches=web_searches)

    def _run(self) -> Iterator[bytes]:
        # Settle before the last bytes go out, so a client that has seen the end of its
        # stream also sees the charge; `finally` covers a client that left early.
        try:
            for chunk in self._chunks:
                out = self._forward(chunk)
                del chunk   # neither is kept while the next chunk is awaited: an open
                if out is not None:   # stream mostly waits, and thousands wait at once
                    yield out
                del out
        except (StreamBroken, GatewayError) as exc:
            self._status = exc.status
            self._produced_chars += getattr(exc, "received", 0)  # an over-cap event's bytes
            self._finish()
            yield error_event(exc.message, exc.type)
        else:
            final = self._final_usage()
            if final is not None:
                yield final
            self._finish()
            yield DONE
        finally:
            self._finish()

    def _forward(self, chunk: dict[str, Any]) -> bytes | None:
        chunk["model"] = self._client_model
        self._observe(chunk)
        choices = chunk.get("choices") or []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            if choices:
                # Usage on a content chunk (Mistral's last chunk, unasked): charged (kept by
                # _observe) but moved to a chunk of its own at the end, as OpenAI sends it,
                # or not shown at all when the client did not ask for it.
                if self._include_usage:
                    chunk["usage"] = None
                    self._usage_chunk = {key: chunk[key] for key in _USAGE_CHUNK_KEYS
                                         if key in chunk}
                    self._usage_chunk.update(choices=[], usage=usage)
                else:
                    del chunk["usage"]
            elif self._include_usage:
                self._usage_chunk = None  # the upstream's own usage chunk, sent as it comes
                usage["cost"] = self._cost()
            else:
                return None
        return _event(chunk)

    def _cost(self) -> float:
        return nano_to_credits(charge_nano(token_cost(self._model, self._reported())))

    def _final_usage(self) -> bytes | None:
        """The usage chunk still owed to a client that asked for one, if any."""
        chunk, self._usage_chunk = self._usage_chunk, None
        if chunk is None:
            return None
        chunk["usage"]["cost"] = self._cost()
        return _event(chunk)


# What a usage chunk made from a content chunk keeps of it (OpenAI's usage chunk fields).
_USAGE_CHUNK_KEYS = ("id", "object", "created", "model", "service_tier", "system_fingerprint")


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + fastjson.dumps(chunk) + b"\n\n"


def error_event(message: str, type: str) -> bytes:
    payload = {"error": {"message": message, "type": type, "param": None, "code": None}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
