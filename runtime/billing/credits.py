"""Credit amounts as people type them ("12.5") <-> exact integer micro-credits."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICRO_PER_CREDIT = 1_000_000


def parse_credits(text: str) -> int:
    """'12.5' -> 12500000; refuses negatives, non-numbers and sub-micro precision."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount of credits: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not an amount of credits: {text!r}")
    micro = value * MICRO_PER_CREDIT
    if micro != micro.to_integral_value():
        raise ValueError(f"{text} has more precision than one micro-credit (0.000001)")
    return int(micro)


def format_credits(micro: int) -> str:
    """12500000 -> '12.5' (exact, no float)."""
    text = f"{Decimal(micro) / MICRO_PER_CREDIT:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
