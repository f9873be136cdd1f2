"""Fees of the tools a provider runs itself during a chat request, for the hold.

A hosted web search is billed per call on top of tokens (the catalogue's `per_web_search`,
USD per search); the charge counts the searches the provider reports (pricing.token_cost).
A request may ask for it as chat's `web_search_options`, as a Responses
`web_search*` tool, or as an Anthropic `web_search_*` server tool; the hold covers the
tool's `max_uses` when the request sets one, else WEB_SEARCHES_HOLD searches. A model
without a `per_web_search` price adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from runtime.billing.pricing import web_search_cost
from runtime.catalogue import Model

WEB_SEARCHES_HOLD = 5


def web_searches(body: Mapping[str, Any]) -> int:
    """Hosted web searches the request allows at most (as held)."""
    count = WEB_SEARCHES_HOLD if isinstance(body.get("web_search_options"), dict) else 0
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search"):
            uses = tool.get("max_uses")
            count += (uses if isinstance(uses, int) and not isinstance(uses, bool)
                      and uses > 0 else WEB_SEARCHES_HOLD)
    return count


def hosted_tools_hold(model: Model, body: Mapping[str, Any]) -> Decimal:
    """Nano-credits (unrounded) the request's hosted tools may cost at most on `model`."""
    if not model.price("per_web_search"):
        return Decimal(0)
    return web_search_cost(model, web_searches(body))
