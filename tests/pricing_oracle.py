"""An independent oracle for what a request must cost: list prices read straight from
providers.yaml, arithmetic with Decimal in nano-credits, rounded up once per request. Tests
compare the gateway's charges with it rather than with the gateway's own pricing code."""

import math
from decimal import Decimal
from pathlib import Path

import yaml

CATALOGUE = yaml.safe_load((Path(__file__).resolve().parent.parent / "providers.yaml")
                           .read_text())
NANO = Decimal(1_000_000_000)   # nano-credits per credit (per USD of list price)
PER_MUNIT = Decimal(1_000)      # a price per million units, in nano-credits per unit per USD


def price(model: str, name: str) -> Decimal | None:
    value = CATALOGUE["models"][model]["pricing"].get(name)
    return None if value is None else Decimal(str(value))


def chat_cost_nano(model: str, prompt: int, completion: int, cached: int = 0,
                   cache_write: int = 0) -> int:
    p_in = price(model, "input_per_mtok")
    p_cached = price(model, "cached_input_per_mtok") or p_in
    p_write = price(model, "cache_write_per_mtok") or p_in
    p_out = price(model, "output_per_mtok")
    exact = ((prompt - cached - cache_write) * p_in + cached * p_cached
             + cache_write * p_write + completion * p_out)
    return per_munit(exact)


def per_munit(usd_units: Decimal) -> int:
    """units x a price per million units (USD) -> nano-credits, rounded up once."""
    return nano(usd_units * PER_MUNIT)


def usd(amount: Decimal) -> int:
    """An amount in USD (per-image, per-second, per-search prices) -> nano-credits."""
    return nano(amount * NANO)


def nano(exact: Decimal) -> int:
    """An exact amount of nano-credits, rounded up once."""
    return math.ceil(exact)


def credits(nano_credits: int) -> float:
    return nano_credits / 1_000_000_000
