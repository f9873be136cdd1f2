"""POST /v1/chat/completions: OpenAI chat to any provider the catalogue serves it from.

Order of work: authenticate (401), read and validate the body (400/413), resolve the model
(404/400), map the request for the provider (400 for what it cannot take), hold the worst
case (403), call the upstream, then answer whole or stream, and settle from usage.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from runtime.billing.meter import Meter
from runtime.billing.metered_stream import ChatStream, body_chunks
from runtime.billing.pricing import Usage, chat_worst_case, micro_to_credits, token_cost
from runtime.billing.prompt_bound import prompt_token_bound
from runtime.errors import BadRequest, GatewayError
from runtime.gateway import Gateway
from runtime.ops import MappingError
from runtime.providers import CHAT_ADAPTERS
from runtime.sse import iter_events
from runtime.upstream import read_json

DEFAULT_MAX_OUTPUT = 4096


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text in the messages: the basis of the prompt estimate for a stream
    that ends without usage."""
    total = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p["text"]) for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return total


def max_output(body: dict[str, Any], model_max: int | None) -> int:
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    limit = model_max or DEFAULT_MAX_OUTPUT
    per_choice = min(asked, limit) if isinstance(asked, int) and asked > 0 else limit
    n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 0 else 1
    return per_choice * n


class ChatCompletions:
    kind = "chat"

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        gw = self.gw
        key = gw.authenticate(req)
        raw, body = gw.json_body(req, self.kind)
        client_model = body["model"]
        model = gw.model_for(client_model, self.kind)
        adapter = CHAT_ADAPTERS.get(model.provider.descriptor.dialect)
        if adapter is None:
            raise GatewayError(f"Chat with '{client_model}' is not available: this gateway "
                               f"cannot translate to the '{model.provider.descriptor.dialect}' "
                               "format yet.", status=501, type="not_implemented")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and bool(
            options.get("include_usage"))
        chars = prompt_chars(body)
        prompt_bound = prompt_token_bound(raw, body)
        try:
            call = adapter.build(body, model, stream)
        except MappingError as exc:
            raise BadRequest(exc.message, param=exc.param) from None

        meter = Meter(gw.store, key, self.kind, client_model, model.provider.id)
        meter.reserve(chat_worst_case(model, prompt_bound,
                                      max_output(body, model.max_output_tokens)))
        resp.set_header("X-Request-Id", meter.request_id)
        with meter.releasing_on_failure():
            upstream = gw.forward(call, model, adapter.error)
            if stream and upstream.headers.get("Content-Type", "").startswith(
                    "text/event-stream"):
                resp.content_type = "text/event-stream"
                resp.set_header("Cache-Control", "no-cache")
                resp.set_header("X-Accel-Buffering", "no")
                resp.stream = ChatStream(
                    adapter.chunks(iter_events(body_chunks(upstream)), model),
                    model=model, client_model=client_model, meter=meter,
                    include_usage=include_usage, prompt_chars=chars, on_close=upstream.close)
                return
            payload = adapter.parse(read_json(upstream), model)
        payload["model"] = client_model
        usage = Usage.from_openai(payload.get("usage"))
        meter.settle(usage, token_cost(model, usage), 200)
        if isinstance(payload.get("usage"), dict):
            payload["usage"]["cost"] = micro_to_credits(meter.charged)
        resp.data = json.dumps(payload).encode()
        resp.content_type = falcon.MEDIA_JSON
