"""Credit amounts as people type them ("12.5") <-> exact integer nano-credits.

1 credit = 1 USD of list price = 1,000,000,000 nano-credits. Typed amounts accept up to 9
decimals; anything finer, negative or not a number is refused (never rounded).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

NANO_PER_CREDIT = 1_000_000_000


def parse_credits(text: str) -> int:
    """'12.5' -> 12500000000; refuses negatives, non-numbers and sub-nano precision."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount of credits: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not an amount of credits: {text!r}")
    nano = value * NANO_PER_CREDIT
    if nano != nano.to_integral_value():
        raise ValueError(f"{text} has more precision than one nano-credit (0.000000001)")
    return int(nano)


def format_credits(nano: int) -> str:
    """12500000000 -> '12.5', 80 -> '0.00000008' (exact, no float, no exponent)."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(int(nano)), NANO_PER_CREDIT)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")


def nano_to_credits(nano: int) -> float:
    """For JSON answers (`usage.cost`): a float carries 9 decimals exactly below 10^6 credits."""
    return nano / NANO_PER_CREDIT
