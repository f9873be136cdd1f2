"""Charging a chat stream, whatever format the client reads it in.

`MeteredStream` is the base of every chat stream body (OpenAI chat, Anthropic Messages and
Responses clients): it counts what OpenAI chunks produced, keeps the upstream's usage, and
settles exactly once, in every outcome:
- normal end: the upstream's usage at catalogue prices;
- upstream error mid-stream: an error event is sent, and what was produced is charged;
- client gone (close() before the end): the upstream is closed at once and what was
  produced is charged.
Usage an adapter reports early (a chunk's `EARLY_USAGE`, e.g. Anthropic's exact input count
from message_start) is taken off the chunk before the client sees it and, until the final
usage arrives, stands for the prompt: a cut then charges that input exactly, plus the larger
of the output counted so far and the text produced.
A stream exists only once the provider accepted the request (answered with a success
status), and from then on the provider bills the whole prompt, so the prompt is charged even
when nothing was produced: from the provider's usage when it arrived, else from an estimate
of the whole request (runtime/billing/prompt_estimate.py, computed when the stream starts, so
that the stream does not keep the request body) plus the text actually produced at 4
characters a token. A request the provider never accepted (an error
status, a connection failure) never becomes a stream and costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from runtime.billing.hold_progress import CutNow
from runtime.billing.meter import Meter
from runtime.billing.pricing import WEB_SEARCHES, Usage, token_cost
from runtime.billing.prompt_estimate import estimate_tokens
from runtime.billing.settling_body import SettlingBody
from runtime.catalogue import Model
from runtime.providers.chat_parts import EARLY_USAGE

log = logging.getLogger("tokmodel.stream")

DONE = b"data: [DONE]\n\n"
PromptEstimate = Callable[[], int]

__all__ = ["MeteredStream", "PromptEstimate", "delta_chars", "estimate_tokens",
           "settle_produced"]


class MeteredStream(SettlingBody):
    """A stream charged from the upstream's usage when it reports one, else from the text it
    produced (see settle_produced); `charged_usage` is what was charged, once settled."""

    __slots__ = ("_web_searches", "_model", "_prompt", "_on_close", "_usage", "_early",
                 "_produced_chars", "charged_usage")

    def __init__(self, *, model: Model, meter: Meter, prompt: PromptEstimate,
                 on_close: Callable[[], None], web_searches: int = 0) -> None:
        # searches a provider bills per request without reporting them (OpenAI's chat
        # web_search_options): charged unless the usage counts its own
        self._web_searches = web_searches
        self._model = model
        self._prompt = prompt
        self._on_close = on_close
        self._usage: Usage | None = None
        self._early: Usage | None = None
        self._produced_chars = 0
        self.charged_usage = Usage()
        super().__init__(meter)

    def _observe(self, chunk: dict[str, Any]) -> None:
        """Count what an OpenAI chunk produced and keep its usage, if it has one."""
        early = chunk.pop(EARLY_USAGE, None)
        if isinstance(early, dict):
            self._early = Usage.from_openai(early)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                self._produced_chars += delta_chars(delta)
        if isinstance(chunk.get("usage"), dict):
            self._usage = Usage.from_openai(chunk["usage"])

    def produced(self) -> tuple[Usage, Decimal]:
        """The usage and exact cost a cut now would be charged (settle_produced's rule),
        without settling, and at least the prompt estimate: the provider accepted the
        request. Recorded on the hold while the stream runs (billing/hold_progress.py)."""
        cut = CutNow(self._meter.request_id)
        settle_produced(cut, self._model, self._reported(), self._prompt,  # type: ignore[arg-type]
                        self._produced_chars, 499)
        return cut.usage, cut.cost

    def _finish(self) -> None:
        if self._meter.settled:
            return
        self._note_interruption()
        try:
            self._on_close()
        finally:
            self.charged_usage = settle_produced(self._meter, self._model, self._reported(),
                                                 self._prompt, self._produced_chars,
                                                 self._status)

    def _reported(self) -> Usage | None:
        """The upstream's final usage, else its early usage with the output produced so far,
        with the searches billed per request."""
        usage, early = self._usage, self._early
        if usage is None and early is not None and early.prompt_tokens:
            usage = Usage(prompt_tokens=early.prompt_tokens,
                          completion_tokens=max(early.completion_tokens,
                                                estimate_tokens(self._produced_chars)),
                          cached_tokens=early.cached_tokens,
                          cache_write_tokens=early.cache_write_tokens, units=early.units)
        if self._web_searches:
            usage = usage or Usage()
            usage.units.setdefault(WEB_SEARCHES, self._web_searches)
        return usage


def settle_produced(meter: Meter, model: Model, usage: Usage | None, prompt: PromptEstimate,
                    produced_chars: int, status: int) -> Usage:
    """Settle an accepted stream once from the upstream's usage, or, without it, from the
    estimate of the whole prompt and of what was produced; returns the usage charged. Never
    raises: the client already has its stream."""
    try:
        if usage is None or not (usage.prompt_tokens or usage.completion_tokens):
            # no token counts: estimated; other units reported (web searches) are kept
            usage = Usage(prompt_tokens=prompt(),
                          completion_tokens=estimate_tokens(produced_chars),
                          units=dict(usage.units) if usage else {})
        elif not usage.prompt_tokens:
            # usage that counts only the output (an upstream's partial report)
            usage.prompt_tokens = prompt()
    except Exception:
        log.exception("estimating the prompt of %s failed", meter.request_id)
        usage = usage or Usage()
    cost = token_cost(model, usage) if not usage.empty else Decimal(0)
    try:
        meter.settle(usage, cost, status)
    except Exception:
        log.exception("settling stream %s failed", meter.request_id)
    return usage


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
