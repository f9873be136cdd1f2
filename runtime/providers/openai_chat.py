"""Chat to providers that speak the OpenAI chat format: the body passes through unchanged
except the upstream model name and the descriptor's mapping, and streams ask for usage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from runtime import fastjson
from runtime.catalogue import Model
from runtime.errors import GatewayError, UpstreamError
from runtime.providers.base import (
    SSEFraming,
    StreamBroken,
    UpstreamCall,
    credential_error,
    json_headers,
    mapped_status,
    message_from,
    query_auth,
    retry_headers,
)
from runtime.sse import Event


class OpenAIChat(SSEFraming):
    def build(self, body: Mapping[str, Any], model: Model, stream: bool) -> UpstreamCall:
        body = dict(body, model=model.upstream)  # the client's request stays as received
        if stream and model.provider.descriptor.stream_usage:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                      "include_usage": True}
        body = model.provider.descriptor.translate["chat"](body)
        headers = json_headers(model)
        if stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamCall("POST", model.provider.url("chat", model.upstream), headers,
                            fastjson.dumps(body), query_auth(model))

    def parse(self, payload: Any, model: Model) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
            raise UpstreamError("The upstream provider answered without choices.")
        finish = model.provider.descriptor.finish_reasons
        if finish:
            for choice in payload["choices"]:
                if isinstance(choice, dict) and choice.get("finish_reason") in finish:
                    choice["finish_reason"] = finish[choice["finish_reason"]]
        return payload

    def chunks(self, events: Iterator[Event], model: Model) -> Iterator[dict[str, Any]]:
        finish = model.provider.descriptor.finish_reasons
        for event in events:
            if event.data.startswith("[DONE]"):
                return
            try:
                chunk = fastjson.loads(event.data)
            except ValueError as exc:
                raise StreamBroken("The upstream provider sent an invalid stream event.") from exc
            if not isinstance(chunk, dict):
                continue
            error = chunk.get("error")
            if error:
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise StreamBroken(message or "The upstream provider failed mid-stream.")
            if finish:
                for choice in chunk.get("choices") or ():
                    if isinstance(choice, dict) and choice.get("finish_reason") in finish:
                        choice["finish_reason"] = finish[choice["finish_reason"]]
            yield chunk
            del chunk, event   # not kept while the next event is awaited

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError:
        return openai_error(status, raw, headers, model)


def openai_error(status: int, raw: bytes, headers: Mapping[str, str],
                 model: Model) -> GatewayError:
    """An error answer of an OpenAI-format upstream (any endpoint) for an OpenAI client: the
    body is kept when it is OpenAI's envelope; the provider refusing the gateway's own key is
    a 502 for the operator."""
    if status in (401, 403):
        return credential_error(model)
    status = mapped_status(status, model)
    if _is_openai_envelope(raw):
        return GatewayError("The upstream provider returned an error.", status=status,
                            body=raw, headers=retry_headers(headers))
    message = message_from(raw) or f"The upstream provider returned HTTP {status}."
    return GatewayError(message, status=status, type="upstream_error",
                        headers=retry_headers(headers))


def _is_openai_envelope(raw: bytes) -> bool:
    try:
        payload = json.loads(raw)
    except ValueError:
        return False
    return isinstance(payload, dict) and isinstance(payload.get("error"), dict) and isinstance(
        payload["error"].get("message"), str)
