"""The limits stored on a key (`KeyLimits`), read in the authentication query itself so that
a key without limits costs no extra statement, and the parsing of what operators type.

Model patterns are a comma-separated list of catalogue ids and shell-style globs (`*`, `?`,
`[...]`), matched against catalogue ids after aliases are resolved. Durations are a number
and a unit: `90s`, `15m`, `12h`, `30d`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What a key may do; None for a field means unlimited."""

    expires_at: datetime | None = None
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    spend_limit_nano: int | None = None
    daily_limit_nano: int | None = None
    monthly_limit_nano: int | None = None

    @property
    def limits_spend(self) -> bool:
        return (self.spend_limit_nano is not None or self.daily_limit_nano is not None
                or self.monthly_limit_nano is not None)

    @property
    def limits_rate(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def allows(self, model_id: str) -> bool:
        """The catalogue id `model_id` is allowed by the key's list (or there is none)."""
        return self.models is None or any(
            fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models)


def limits_from_row(values: tuple) -> KeyLimits | None:
    """(expires_at, models, rpm, tpm, spend, daily, monthly) as stored -> KeyLimits, or None
    when nothing is set."""
    if all(v is None for v in values):
        return None
    expires, models, *rest = values
    return KeyLimits(expires, parse_models(models) if models is not None else None, *rest)


def parse_models(text: str) -> tuple[str, ...]:
    """'openai/*, anthropic/claude-haiku-4-5' -> the patterns; ValueError when empty."""
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    if not patterns:
        raise ValueError("the model list is empty: name at least one model id or pattern")
    return patterns


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '12h', '30d' -> timedelta; ValueError naming the accepted forms."""
    match = _DURATION.match(text or "")
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: use a positive number followed by "
                         "s, m, h or d (90s, 15m, 12h, 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
