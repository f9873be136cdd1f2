"""`POST /v1/messages/count_tokens`: the input tokens of an Anthropic Messages request (the
body of /v1/messages without `max_tokens`), for every chat model of the catalogue, answered
as `{"input_tokens": N}`; every error in Anthropic's envelope.

Authenticated (401 without a valid key) and validated against `CountTokensRequest` (400
naming the field); the model must be a chat model of the catalogue (404 otherwise). Never
charged and never holds credits: counting is free, as it is at Anthropic.

- Providers with a counter (runtime/providers/token_count.py): Anthropic receives the body
  with the upstream model name, the gateway's credentials and the client's `anthropic-beta`;
  Gemini receives the request translated as for /v1/messages (Messages -> OpenAI chat ->
  the Gemini chat adapter) at `:countTokens`. One call to the provider's first usable
  deployment, without retries (a count is cheap to ask again); upstream errors are mapped as
  for /v1/messages (Anthropic's kept with their status, others in Anthropic's envelope).
- Other providers (the OpenAI format has no counter): an estimate, flagged by the response
  header `x-tokmodel-estimate: true` — 4 characters a token (rounded up) over the system
  prompt, the texts, thinking, tool inputs and results of the messages and the tool
  definitions as JSON, plus `MEDIA_TOKENS` per image or non-text document. The body is still
  translated as for /v1/messages, so a field that model cannot take is the same 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

import falcon

from runtime.catalogue import Model
from runtime.clients.messages import (
    anthropic_facing,
    carried_thinking_restored,
    passthrough_error,
)
from runtime.clients.messages_translation import to_openai
from runtime.errors import ANTHROPIC
from runtime.gateway import Gateway, provider_body
from runtime.providers import CHAT_ADAPTERS
from runtime.providers.token_count import COUNTERS, KIND
from runtime.upstream import Timeout, read_body, read_json

CHARS_PER_TOKEN = 4
# An image costs Anthropic about (width x height) / 750 tokens, at most ~1,600 once resized
# to its 1.15-megapixel limit; the estimate takes that ceiling for every image or document.
MEDIA_TOKENS = 1_600
ESTIMATE_HEADER = "x-tokmodel-estimate"


class CountTokens:
    kind = KIND

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.dialect = ANTHROPIC
        record = getattr(req.context, "record", None)
        if record is not None:
            record.endpoint = self.kind
        key = self.gw.authenticate(req)
        if record is not None:
            record.account_id, record.key_id = key.account_id, key.id
        self.gw.admit_body(req, key)
        _, body = self.gw.json_body(req, self.kind)
        model = self.gw.model_for(body.get("model"), "chat")
        if record is not None:
            record.model, record.provider = model.id, model.provider.id
        counter = COUNTERS.get(model.provider.descriptor.dialect)
        if counter is None or KIND not in model.provider.descriptor.endpoints:
            chat_body(body)  # the same 400s as /v1/messages for what this model cannot take
            tokens = estimate_tokens(body)
            resp.set_header(ESTIMATE_HEADER, "true")
        else:
            tokens = self._counted(req, body, _first_usable(model))
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps({"input_tokens": tokens}).encode()

    def _counted(self, req: falcon.Request, body: dict[str, Any], model: Model) -> int:
        dialect = model.provider.descriptor.dialect
        counter = COUNTERS[dialect]
        if counter.takes == "messages":
            call = counter.build(provider_body(model, KIND, carried_thinking_restored(body)),
                                 model)
            beta = req.get_header("anthropic-beta")
            if beta:
                call.headers["anthropic-beta"] = beta
            error = passthrough_error
        else:
            call = counter.build(chat_body(body), model)
            error = anthropic_facing(CHAT_ADAPTERS[dialect].error)
        timeouts = model.provider.timeouts
        upstream = self.gw.upstream.send(
            call.method, call.url, headers=call.headers, body=call.body, params=call.params,
            timeout=Timeout(connect=timeouts.connect, read=timeouts.first_byte))
        if upstream.status_code >= 400:
            raise error(upstream.status_code, read_body(upstream), upstream.headers, model)
        return counter.count(read_json(upstream))


def _first_usable(model: Model) -> Model:
    for deployment in model.provider.deployments:
        if deployment.usable:
            return model.at(deployment)
    return model


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat form of a count request, as /v1/messages would translate it; a count
    has no output, so no output cap and no stream."""
    request = {k: v for k, v in body.items() if k not in ("max_tokens", "stream")}
    out = to_openai(dict(request, max_tokens=1))
    out.pop("max_completion_tokens", None)
    return out


def estimate_tokens(body: dict[str, Any]) -> int:
    """The documented estimate for providers without a counter (see the module doc)."""
    chars, media = _walk(body.get("system"))
    for message in body.get("messages") or ():
        more, pictures = _walk(message.get("content") if isinstance(message, dict) else None)
        chars, media = chars + more, media + pictures
    for tool in body.get("tools") or ():
        chars += len(json.dumps(tool, ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN) + media * MEDIA_TOKENS


def _walk(node: Any) -> tuple[int, int]:
    """(characters of text, images and non-text documents) in system or message content."""
    if isinstance(node, str):
        return len(node), 0
    if isinstance(node, list):
        chars = media = 0
        for item in node:
            more, pictures = _walk(item)
            chars, media = chars + more, media + pictures
        return chars, media
    if not isinstance(node, dict):
        return 0, 0
    kind = node.get("type")
    if kind in ("image", "document"):
        source = node.get("source") if isinstance(node.get("source"), dict) else {}
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return len(source["data"]), 0
        return 0, 1
    if kind == "tool_use":
        return len(json.dumps(node.get("input"), ensure_ascii=False)) + len(
            str(node.get("name", ""))), 0
    if kind == "tool_result":
        return _walk(node.get("content"))
    for field in ("text", "thinking"):
        if isinstance(node.get(field), str):
            return len(node[field]), 0
    return 0, 0
