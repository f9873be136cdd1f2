"""Reserve -> forward -> settle, for one request.

`Meter` holds the worst-case cost before the upstream is called (403 when it cannot be
held), and settles exactly once: the actual cost from the upstream's usage and the
catalogue prices, in the same transaction as the usage-log row (under the gevent worker
that write runs behind the answer: settle_behind.py). A request that fails
before producing anything settles at zero, which releases the whole hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

from runtime.billing import settle_behind
from runtime.billing.credits import format_credits
from runtime.billing.pricing import Usage, charge_nano
from runtime.errors import AccountInDebt, GatewayError, InsufficientCredits
from runtime.limits.admission import SpendLimitReached
from runtime.request_ids import new_request_id
from runtime.store import KeyRecord, Store, UsageRecord


def refusal(store: Store, account_id: int) -> GatewayError:
    """The 403 for an account that cannot pay: naming its debt when it owes one."""
    account = store.get_account_by_id(account_id)
    if account is not None and account.debt_nano:
        return AccountInDebt(format_credits(account.debt_nano))
    return InsufficientCredits()


class Meter:
    def __init__(self, store: Store, key: KeyRecord, endpoint: str, model: str,
                 provider: str, request_id: str | None = None) -> None:
        self.store = store
        self.key = key
        self.endpoint = endpoint
        self.model = model
        self.provider = provider
        self.request_id = request_id or new_request_id()
        self.started = time.monotonic()
        self.held = 0
        self.spend_key: str | None = None   # the key whose spend limits the hold reserved
        self.settled = False
        self.charged = 0
        # Called once settled, with (status, usage, charged): the request's record.
        self.on_settled: Callable[[int, Usage, int], None] | None = None

    def reserve(self, amount_nano: int) -> None:
        """Hold `amount_nano`; 403 naming the debt when the account owes credits, else 403
        insufficient credits, when it cannot be held. A key from the cache is checked by the
        hold: a key changed since it was read is refused the same way (the pipeline then
        reads it afresh)."""
        key = self.key
        limited = key.limits is not None and key.limits.limits_spend
        if limited:
            # the key's spend limits take part in the hold like the balance (limits/spend.py)
            passed = self.store.reserve_key_spend(key.id, amount_nano)
            if passed is not None:
                raise SpendLimitReached(passed, amount_nano)
        if not self.store.hold(self.request_id, key.account_id, amount_nano,
                               key.id if limited else None,
                               (key.id, key.version) if key.cached else None):
            if limited:
                self.store.unreserve_key_spend(key.id, amount_nano)
            raise refusal(self.store, key.account_id)
        self.held = amount_nano
        self.spend_key = key.id if limited else None

    def settle(self, usage: Usage | None, exact_cost: Decimal | int, status: int) -> int:
        """Charge once; returns nano-credits charged (0 on every call after the first). The
        exact cost is rounded once, up to the nano-credit (pricing.charge_nano)."""
        if self.settled:
            return 0
        self.settled = True
        usage = usage or Usage()
        cost = charge_nano(Decimal(exact_cost))
        record = UsageRecord(
            request_id=self.request_id, account_id=self.key.account_id, key_id=self.key.id,
            endpoint=self.endpoint, model=self.model, provider=self.provider, status=status,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens, details=dict(usage.units),
            cost_nano=cost, latency_ms=int((time.monotonic() - self.started) * 1000))
        store, request_id, spend_key = self.store, self.request_id, self.spend_key
        written = settle_behind.submit(
            request_id, lambda behind: store.settle(request_id, cost, record, spend_key,
                                                    behind=behind))
        # behind the answer (None) the write records exactly `cost`: store.settle returns
        # less only for a request a sweeper settled already, taking its worker for lost
        self.charged = cost if written is None else written
        if self.on_settled is not None:
            self.on_settled(status, usage, self.charged)
        return self.charged

    @contextmanager
    def releasing_on_failure(self) -> Iterator[None]:
        """Any failure inside settles at zero (status of a GatewayError, else 500) and is
        raised again: the client pays nothing for an answer it did not get."""
        try:
            yield
        except GatewayError as exc:
            self.fail(exc.status)
            raise
        except Exception:
            self.fail(500)
            raise

    def fail(self, status: int) -> None:
        """Nothing was produced: release the hold, log the failure, charge nothing."""
        self.settle(None, 0, status)
