"""Forwarding one chat stream to an OpenAI-format client, chunk by chunk, and charging it.

`ChatStream` is the WSGI body iterable: it pulls OpenAI chunks from an adapter as the
upstream sends them, rewrites `model` to the id the client used, keeps the upstream's usage,
adds `cost` to the usage chunk when the client asked for usage (and strips usage when it did
not), and ends with `data: [DONE]`. It settles exactly once, in every outcome:
- normal end: the upstream's usage at catalogue prices;
- upstream error mid-stream: an error event is sent, and what was produced is charged;
- client gone (close() before the end): the upstream is closed at once and what was
  produced is charged.
When a stream ends without usage, tokens are estimated at 4 characters per token from the
prompt text and the text actually produced; a stream that produced nothing costs nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage, charge_micro, micro_to_credits, token_cost
from runtime.billing.settling_body import SettlingBody
from runtime.catalogue import Model
from runtime.errors import GatewayError
from runtime.providers.base import StreamBroken
from runtime.upstream import broken_off

log = logging.getLogger("tokmodel.stream")

DONE = b"data: [DONE]\n\n"
CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


class MeteredStream(SettlingBody):
    """A stream charged from the upstream's usage when it reports one, else from the text it
    produced (see settle_produced); `charged_usage` is what was charged, once settled."""

    def __init__(self, *, model: Model, meter: Meter, prompt_chars: int,
                 on_close: Callable[[], None]) -> None:
        self._model = model
        self._prompt_chars = prompt_chars
        self._on_close = on_close
        self._usage: Usage | None = None
        self._produced_chars = 0
        self.charged_usage = Usage()
        super().__init__(meter)

    def _observe(self, chunk: dict[str, Any]) -> None:
        """Count what an OpenAI chunk produced and keep its usage, if it has one."""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                self._produced_chars += delta_chars(delta)
        if isinstance(chunk.get("usage"), dict):
            self._usage = Usage.from_openai(chunk["usage"])

    def _finish(self) -> None:
        if self._meter.settled:
            return
        try:
            self._on_close()
        finally:
            self.charged_usage = settle_produced(self._meter, self._model, self._usage,
                                                 self._prompt_chars, self._produced_chars,
                                                 self._status)


class ChatStream(MeteredStream):
    def __init__(self, chunks: Iterator[dict[str, Any]], *, model: Model, client_model: str,
                 meter: Meter, include_usage: bool, prompt_chars: int,
                 on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._client_model = client_model
        self._include_usage = include_usage
        super().__init__(model=model, meter=meter, prompt_chars=prompt_chars,
                         on_close=on_close)

    def _run(self) -> Iterator[bytes]:
        # Settle before the last bytes go out, so a client that has seen the end of its
        # stream also sees the charge; `finally` covers a client that left early.
        try:
            for chunk in self._chunks:
                out = self._forward(chunk)
                if out is not None:
                    yield out
        except StreamBroken as exc:
            self._status = 502
            self._finish()
            yield _error_event(exc.message, exc.type)
        except GatewayError as exc:
            self._status = exc.status
            self._finish()
            yield _error_event(exc.message, exc.type)
        else:
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
            if self._include_usage:
                cost = token_cost(self._model, self._usage)
                usage["cost"] = micro_to_credits(charge_micro(cost))
            elif not choices:
                return None
            else:
                chunk["usage"] = None
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def settle_produced(meter: Meter, model: Model, usage: Usage | None, prompt_chars: int,
                    produced_chars: int, status: int) -> Usage:
    """Settle a stream once from the upstream's usage, or, without it, from the estimate
    (nothing produced costs nothing); returns the usage charged. Never raises: the client
    already has its stream."""
    if usage is None or usage.empty:
        usage = Usage(prompt_tokens=estimate_tokens(prompt_chars),
                      completion_tokens=estimate_tokens(produced_chars))
        if produced_chars == 0:
            usage = Usage()
    cost = token_cost(model, usage) if not usage.empty else Decimal(0)
    try:
        meter.settle(usage, cost, status)
    except Exception:
        log.exception("settling stream %s failed", meter.request_id)
    return usage


def body_chunks(upstream: Any) -> Iterator[bytes]:
    """The upstream body as it arrives; read failures become a broken stream."""
    try:
        yield from upstream.iter_content(chunk_size=None)
    except Exception as exc:
        err = broken_off(exc)
        raise StreamBroken(err.message, err.type) from exc


def delta_chars(delta: dict[str, Any]) -> int:
    n = 0
    for key in ("content", "reasoning_content", "refusal"):
        value = delta.get(key)
        if isinstance(value, str):
            n += len(value)
    for call in delta.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            n += len(fn.get("arguments") or "") + len(fn.get("name") or "")
    return n


def _error_event(message: str, type: str) -> bytes:
    payload = {"error": {"message": message, "type": type, "param": None, "code": None}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
