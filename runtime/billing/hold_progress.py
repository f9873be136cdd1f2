"""What a running stream has produced, recorded on its hold so a lost worker's stream is still
charged for it.

When the provider accepts a streamed request (its first chunk arrived), `watch_stream`
registers a reporter with the store's open holds; the worker's heartbeat
(runtime/billing/sweeper.py) calls it once per interval and records the answer on the hold
when it changed. Nothing is done per chunk. The reporter asks the stream body's `produced()`
for the usage and exact cost a cut now would be charged: the body's own settlement rule, so
the sweeper charges what the worker itself would have charged had the client left at that
moment (at least the prompt estimate: the provider accepted the request). Bodies without
`produced()` record nothing, and their hold is given back if the worker is lost.

`CutNow` stands in for a Meter to learn what a settlement function would charge, without
settling.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage, charge_nano


class CutNow:
    """A Meter's `settle` that only keeps what it was asked to charge."""

    settled = False

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.usage = Usage()
        self.cost = Decimal(0)

    def settle(self, usage: Usage | None, exact_cost: Decimal | int, status: int) -> int:
        self.usage, self.cost = usage or Usage(), Decimal(exact_cost)
        return 0


def reporter(meter: Meter, body: Any) -> Callable[[], dict[str, Any] | None] | None:
    """The progress reporter of a stream body (None when the body cannot say)."""
    produced = getattr(body, "produced", None)
    if produced is None:
        return None

    def report() -> dict[str, Any] | None:
        if meter.settled:
            return None
        usage, exact = produced()
        return {"cost": charge_nano(Decimal(exact)), "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens, "units": dict(usage.units),
                "endpoint": meter.endpoint, "model": meter.model, "provider": meter.provider,
                "key_id": meter.key.id}

    return report


def watch_stream(meter: Meter, body: Any) -> None:
    """The provider accepted this streamed request: report its progress on the hold."""
    open_holds = getattr(meter.store, "open_holds", None)
    report = reporter(meter, body)
    if open_holds is not None and report is not None:
        open_holds.watch(meter.request_id, report)
