"""Exact prices: usage and catalogue list prices in, integer nano-credits out.

1 credit = 1 USD of list price = 1,000,000,000 nano-credits, so a price of P USD per million
tokens is exactly 1000 * P nano-credits per token. Every unit of a request is priced with
Decimal, summed exactly, and the request's total is rounded once, up to the next whole
nano-credit (`charge_nano` for the charge, `hold_nano` for the hold: the same rule, so a
hold computed from the same usage always covers the charge). A 4-token request at 0.02 USD
per million tokens costs exactly 80 nano-credits (0.00000008 credit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from runtime.billing.credits import nano_to_credits
from runtime.catalogue import Model

__all__ = ["NANO", "WEB_SEARCHES", "Usage", "charge_nano", "chat_worst_case", "hold_nano",
           "nano_to_credits", "token_cost", "web_search_cost"]

NANO = Decimal(1_000_000_000)
# A price per million units is this many nano-credits per unit per USD.
NANO_PER_MUNIT = Decimal(1_000)
# The unit of Usage.units counting the hosted web searches a provider ran for the request.
WEB_SEARCHES = "web_searches"


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's sense: prompt includes cached and cache-write tokens,
    completion includes reasoning tokens. `units` holds non-token units (images, hosted web
    searches, ...). An OpenAI-shaped usage may carry Anthropic's `server_tool_use`
    (`{"web_search_requests": n}`): the adapters put the searches a provider reports there."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    units: dict[str, int | float] = field(default_factory=dict)

    @classmethod
    def from_openai(cls, usage: dict | None) -> Usage:
        if not isinstance(usage, dict):
            return cls()
        details = usage.get("prompt_tokens_details") or {}
        tools = usage.get("server_tool_use")
        searches = _int(tools.get("web_search_requests")) if isinstance(tools, dict) else 0
        return cls(prompt_tokens=_int(usage.get("prompt_tokens")),
                   completion_tokens=_int(usage.get("completion_tokens")),
                   cached_tokens=_int(details.get("cached_tokens")),
                   cache_write_tokens=_int(details.get("cache_write_tokens")),
                   units={WEB_SEARCHES: searches} if searches else {})

    @property
    def empty(self) -> bool:
        return not (self.prompt_tokens or self.completion_tokens or self.units)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def token_cost(model: Model, usage: Usage) -> Decimal:
    """Exact cost in nano-credits (a Decimal, not yet rounded) of the tokens and of the
    hosted web searches the usage counts."""
    price_in = model.price("input_per_mtok") or Decimal(0)
    price_cached = model.price("cached_input_per_mtok")
    price_write = model.price("cache_write_per_mtok")
    price_out = model.price("output_per_mtok") or Decimal(0)
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    fresh = usage.prompt_tokens - cached - written
    return (fresh * price_in
            + cached * (price_cached if price_cached is not None else price_in)
            + written * (price_write if price_write is not None else price_in)
            + usage.completion_tokens * price_out) * NANO_PER_MUNIT + web_search_cost(
        model, int(usage.units.get(WEB_SEARCHES, 0)))


def web_search_cost(model: Model, searches: int) -> Decimal:
    """Hosted web searches of a chat request (`per_web_search`, USD per search)."""
    return searches * (model.price("per_web_search") or Decimal(0)) * NANO


def charge_nano(exact: Decimal) -> int:
    """A request's exact total cost -> the nano-credits charged: rounded up, once."""
    return math.ceil(exact)


def hold_nano(exact: Decimal) -> int:
    """A request's exact worst-case cost -> the nano-credits held: rounded up, once."""
    return math.ceil(exact)


def chat_worst_case(model: Model, prompt_bound: int, max_output: int) -> int:
    """Hold for a chat request: every prompt token at the input price, every allowed output
    token at the output price."""
    return hold_nano(token_cost(model, Usage(prompt_tokens=prompt_bound,
                                              completion_tokens=max_output)))
