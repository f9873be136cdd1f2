"""What an endpoint declares to the pipeline, and what it hands back per candidate model.

A `Route` is an endpoint's whole contribution: which catalogue endpoint its models must serve,
which error envelope its clients read, how its body arrives (JSON or multipart), its hold
policy (`hold(request, model)`, computed from the client's request as received, never from a
translated copy), and `exchange(request, model, shown_model)`, which builds the `Exchange` for
one candidate model. The pipeline (runtime/pipeline/run.py) does everything else.

An `Exchange` translates once, when it is built (a value the provider cannot take is a 400
then), and is read-only afterwards: `call` is the upstream call for the model's first
deployment (the pipeline re-targets it to another deployment), `error` maps an upstream error
answer, and the answer is read either whole (`whole` returns an `Answer` whose body is
rendered once the charge is known) or as a stream (`stream_body` returns a settling WSGI body).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from runtime import multipart
from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage
from runtime.billing.settling_body import SettlingBody
from runtime.catalogue import Model
from runtime.errors import GatewayError
from runtime.providers.base import UpstreamCall
from runtime.upstream import UpstreamResponse

JSON = "application/json"


@dataclass(slots=True)
class Request:
    """The client's request as received. Nothing downstream may change it: adapters copy."""

    model_id: Any
    raw: bytes = b""
    body: Mapping[str, Any] = field(default_factory=dict)
    form: multipart.Form | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)   # a form's text fields
    headers: Mapping[str, str] = field(default_factory=dict)  # the few a route forwards
    fallbacks: tuple[str, ...] | None = None                  # the client's `models` list
    account_id: int | None = None                             # the authenticated account
    gateway: Any = None         # runtime.gateway.Gateway: the store, for stateful routes

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


@dataclass(slots=True)
class Answer:
    """A whole answer: what to charge, and how to render the body once the charge is known
    (`render(charged_nano) -> bytes`)."""

    usage: Usage
    cost: Decimal | int
    render: Callable[[int], bytes]
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


class Exchange(Protocol):
    """Optional members: `deployment` (a name: only that deployment may answer, e.g. where
    the provider stored the conversation being continued) and `answered_on(name)` (told
    which deployment answered, before the answer is read)."""

    call: UpstreamCall
    stream: bool

    def error(self, status: int, raw: bytes, headers: Mapping[str, str],
              target: Model) -> GatewayError: ...

    def is_stream(self, upstream: UpstreamResponse) -> bool: ...

    def whole(self, upstream: UpstreamResponse) -> Answer: ...

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> SettlingBody: ...


HoldPolicy = Callable[[Request, Model], int]
# A form route's hold before its files are read: (the text fields sent before the files, the
# most the body can hold in bytes, model) -> nano-credits (runtime/pipeline/form_hold.py).
PreHoldPolicy = Callable[[Mapping[str, Any], int, Model], int]
ExchangeFactory = Callable[[Request, Model, str], Exchange]


@dataclass(frozen=True, slots=True)
class Route:
    kind: str                           # the endpoint kind of specs/endpoints.yaml
    hold: HoldPolicy
    exchange: ExchangeFactory
    serves: str = ""                    # the catalogue endpoint its models serve (default: kind)
    errors: str = "openai"              # the error envelope its clients read
    form: bool = False                  # multipart/form-data instead of JSON
    fallbacks: bool = False             # may fall back to other models (chat-like routes)
    forward_headers: tuple[str, ...] = ()   # client headers an exchange may pass on
    default_model: bool = False             # `model` may be omitted: the catalogue default
    check: Callable[[Request], None] | None = None  # before the model: required parts
    # headers naming the request besides x-request-id (Anthropic's SDKs read request-id)
    id_headers: tuple[str, ...] = ()
    prehold: PreHoldPolicy | None = None    # form routes: the hold taken before files spill

    @property
    def catalogue_kind(self) -> str:
        return self.serves or self.kind
