"""The contract every chat adapter fulfils, and the parts they share.

An adapter is stateless; per-request state of a stream lives in the generator it returns.
`build` maps a validated OpenAI chat request into one upstream HTTP call (the descriptor's
generated field mapping is applied there); `parse` turns a whole native answer into an
OpenAI `chat.completion`; `chunks` turns native stream events into OpenAI
`chat.completion.chunk` dicts (usage, when known, on a chunk with `"choices": []`);
`error` turns a native error answer into a GatewayError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.catalogue import Model
from runtime.errors import GatewayError, UpstreamError
from runtime.sse import Event, iter_events


@dataclass(slots=True)
class UpstreamCall:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | Iterable[bytes]
    params: dict[str, str] = field(default_factory=dict)
    # image URLs still to download into `body` once credits are held (pending_images.py)
    images: tuple[Any, ...] = ()


class StreamBroken(Exception):
    """The upstream reported an error in the middle of a stream."""

    def __init__(self, message: str, type: str = "upstream_error", status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status


class EventTooLarge(StreamBroken):
    """One event of an upstream stream is larger than the cap (runtime/sse.py); `received`
    bytes of it were read, charged as output produced."""

    def __init__(self, cap: int, received: int) -> None:
        super().__init__(f"The upstream provider sent a stream event larger than this "
                         f"gateway's limit of {cap} bytes (TOKMODEL_MAX_STREAM_EVENT_BYTES).")
        self.received = received


class SSEFraming:
    """Stream framing of providers that stream Server-Sent Events. A provider with another
    framing (AWS event-stream, JSON lines) overrides `events` in its adapter, and nothing
    outside the adapter changes."""

    # True where the adapter turns chat's `web_search_options` into the provider's own web
    # search; the Responses translation drops the hosted web_search tool elsewhere.
    web_search = False

    def events(self, chunks: Iterator[bytes]) -> Iterator[Event]:
        return iter_events(chunks)

    def stream(self, chunks: Iterator[bytes], model: Model) -> Iterator[dict[str, Any]]:
        """The upstream's stream bytes -> OpenAI chat chunks."""
        return self.chunks(self.events(chunks), model)  # type: ignore[attr-defined]


class ChatAdapter(Protocol):
    web_search: bool

    def build(self, body: Mapping[str, Any], model: Model, stream: bool) -> UpstreamCall:
        """The upstream call for a validated OpenAI chat request; never changes `body`."""
        ...

    def events(self, chunks: Iterator[bytes]) -> Iterator[Event]: ...

    def stream(self, chunks: Iterator[bytes], model: Model) -> Iterator[dict[str, Any]]: ...

    def parse(self, payload: Any, model: Model) -> dict[str, Any]: ...

    def chunks(self, events: Iterator[Event], model: Model) -> Iterator[dict[str, Any]]: ...

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              model: Model) -> GatewayError: ...


def json_headers(model: Model) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(model.provider.descriptor.headers)
    headers.update(model.provider.auth_headers())
    return headers


def query_auth(model: Model) -> dict[str, str]:
    desc = model.provider.descriptor
    if desc.auth_scheme == "query" and model.provider.api_key:
        return {desc.auth_name: model.provider.api_key}
    return {}


def retry_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in ("Retry-After", "retry-after-ms")
            if headers.get(name)}


def mapped_status(status: int, model: Model) -> int:
    return model.provider.descriptor.error_status.get(status, status)


def credential_error(model: Model) -> UpstreamError:
    """The provider refused the gateway's own key: an operator problem, not the client's."""
    provider = model.provider
    err = UpstreamError(
        f"The provider '{provider.id}' rejected the gateway's credentials; the operator "
        f"must check {provider.api_key_env}.", code="upstream_credentials")
    err.retryable = False
    return err


def message_from(raw: bytes) -> str | None:
    """The human message of any common error envelope, if the body has one."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    err = payload.get("error", payload)
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    return payload.get("message") if isinstance(payload.get("message"), str) else None
