"""The limit flags of `tokmodel keys create` and `tokmodel keys update`, and how keys show
their limits and spend in `tokmodel keys list --json`.

Amounts are typed in credits (runtime/billing/credits.py) and stored in nano-credits; an
expiry is `--expires-in DURATION` (from now) or `--expires ISO8601` (UTC when no offset).
`update` also takes `--clear-NAME` to remove one limit.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from runtime.billing.credits import format_credits, parse_credits
from runtime.limits.policy import parse_duration, parse_models

# flag -> (api_keys column, parse(text) -> stored value)
_FLAGS: dict[str, tuple[str, Any]] = {
    "models": ("models", lambda text: ",".join(parse_models(text))),
    "rpm": ("rpm", lambda text: _positive(text, "--rpm")),
    "tpm": ("tpm", lambda text: _positive(text, "--tpm")),
    "spend-limit": ("spend_limit_nano", parse_credits),
    "daily-limit": ("daily_limit_nano", parse_credits),
    "monthly-limit": ("monthly_limit_nano", parse_credits),
}
_CREDIT_COLUMNS = ("spend_limit_nano", "daily_limit_nano", "monthly_limit_nano")


def _positive(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{flag} must be a positive whole number, not {text!r}")
    return value


def _expiry(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--expires must be an ISO 8601 time (2027-01-31T00:00:00Z), "
                         f"not {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def add_flags(parser: argparse.ArgumentParser, *, clearing: bool) -> None:
    """The limit flags (and, for `update`, their --clear-* forms)."""
    parser.add_argument("--models", metavar="PATTERNS",
                        help="comma-separated model ids and globs the key may use")
    parser.add_argument("--rpm", metavar="N", help="requests per minute")
    parser.add_argument("--tpm", metavar="N",
                        help="prompt + completion tokens per minute")
    parser.add_argument("--spend-limit", metavar="CREDITS", help="spend in all")
    parser.add_argument("--daily-limit", metavar="CREDITS", help="spend per UTC day")
    parser.add_argument("--monthly-limit", metavar="CREDITS", help="spend per UTC month")
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DURATION", help="e.g. 90s, 15m, 12h, 30d")
    expiry.add_argument("--expires", metavar="ISO8601", help="e.g. 2027-01-31T00:00:00Z")
    if clearing:
        for flag in (*_FLAGS, "expires"):
            parser.add_argument(f"--clear-{flag}", action="store_true",
                                help=f"remove the key's {flag.replace('-', ' ')}")


def changes(args: argparse.Namespace, now: datetime | None = None) -> dict[str, Any]:
    """The columns the flags set (None: cleared); ValueError naming a bad value."""
    out: dict[str, Any] = {}
    for flag, (column, parse) in _FLAGS.items():
        attr = flag.replace("-", "_")
        value = getattr(args, attr, None)
        cleared = getattr(args, f"clear_{attr}", False)
        if value is not None and cleared:
            raise ValueError(f"--{flag} and --clear-{flag} contradict each other")
        if value is not None:
            out[column] = parse(value)
        elif cleared:
            out[column] = None
    if args.expires_in is not None:
        out["expires_at"] = (now or datetime.now(UTC)) + parse_duration(args.expires_in)
    elif args.expires is not None:
        out["expires_at"] = _expiry(args.expires)
    if getattr(args, "clear_expires", False):
        if "expires_at" in out:
            raise ValueError("--expires/--expires-in and --clear-expires contradict each other")
        out["expires_at"] = None
    return out


def limits_json(key: Any, spend: Any) -> dict[str, Any]:
    """A key's limits and spend (Store.spend_by_key) for `keys list --json` (credits as exact
    strings, and the integer nano-credits)."""
    limits = key.limits
    out: dict[str, Any] = {
        "expires_at": limits.expires_at.isoformat() if limits and limits.expires_at else None,
        "models": list(limits.models) if limits and limits.models is not None else None,
        "rpm": limits.rpm if limits else None,
        "tpm": limits.tpm if limits else None,
    }
    for column in _CREDIT_COLUMNS:
        value = getattr(limits, column) if limits else None
        out[column.removesuffix("_nano")] = None if value is None else format_credits(value)
        out[column] = value
    if spend is not None:
        out["spend"] = {name: format_credits(getattr(spend, name))
                        for name in ("total", "today", "month")}
        out["spend_nano"] = {name: getattr(spend, name) for name in ("total", "today", "month")}
    return out
