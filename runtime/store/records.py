"""Immutable records the store returns and accepts.

Money is integer nano-credits (1 credit = 1,000,000,000). Timestamps are timezone-aware UTC
datetimes. Records never hold a key secret: `KeyRecord.display_prefix` is all that is shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runtime.limits.policy import KeyLimits


@dataclass(frozen=True, slots=True)
class Account:
    """`balance_nano` is what the account can spend; `debt_nano` what it owes (requests that
    cost more than their hold and the balance): requests are refused while it is not 0."""

    id: int
    name: str
    balance_nano: int
    created_at: datetime
    debt_nano: int = 0
    disabled_at: datetime | None = None  # set: every key of the account is refused


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    account_id: int
    account_name: str
    name: str
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    manage: bool = False            # may open the console and manage the account's keys
    account_disabled: bool = False  # the account is disabled: the key is refused (403)
    # None: no limit of any kind is set (runtime/limits/)
    limits: KeyLimits | None = None
    version: int = 0                # api_keys.version when read (schema.py)
    cached: bool = False            # from the process's cache: see runtime/store/key_cache.py


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One settled request. `details` holds the other priced units (images, audio seconds,
    characters, searches ...); `cost_nano` is what was charged (the whole cost, debt included)."""

    request_id: str
    account_id: int
    key_id: str | None
    endpoint: str
    model: str
    provider: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    cost_nano: int = 0
    latency_ms: int = 0
    created_at: datetime | None = None

    def details_json(self) -> str:
        """`details` as the usage log stores it: strict JSON, which the database parses when
        it sums the units (usage_rollup.py). NaN and infinities, which only Python's parser
        accepts, are stored as null."""
        if not self.details:   # most requests: tokens only
            return "{}"
        try:
            return json.dumps(self.details, separators=(",", ":"), sort_keys=True,
                              allow_nan=False)
        except ValueError:
            return json.dumps(_finite(self.details), separators=(",", ":"), sort_keys=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Responses API answer kept for its account. `native`: the provider stored it (on
    `deployment`) and only its ownership is here; otherwise `input_items` (the whole input,
    history included) and `response` (the response object) are JSON kept by the gateway."""

    id: str
    account_id: int
    model: str
    provider: str
    native: bool
    deployment: str | None = None
    input_items: list[Any] | None = None
    response: dict[str, Any] | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
