"""An independent oracle for what a request must cost: list prices read straight from
providers.yaml, arithmetic with Decimal, rounded half up once. Tests compare the gateway's
charges with it rather than with the gateway's own pricing code."""

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import yaml

CATALOGUE = yaml.safe_load((Path(__file__).resolve().parent.parent / "providers.yaml")
                           .read_text())


def price(model: str, name: str) -> Decimal | None:
    value = CATALOGUE["models"][model]["pricing"].get(name)
    return None if value is None else Decimal(str(value))


def chat_cost_micro(model: str, prompt: int, completion: int, cached: int = 0,
                    cache_write: int = 0) -> int:
    p_in = price(model, "input_per_mtok")
    p_cached = price(model, "cached_input_per_mtok") or p_in
    p_write = price(model, "cache_write_per_mtok") or p_in
    p_out = price(model, "output_per_mtok")
    exact = ((prompt - cached - cache_write) * p_in + cached * p_cached
             + cache_write * p_write + completion * p_out)
    return micro(exact)


def micro(exact: Decimal) -> int:
    """An exact amount of micro-credits, rounded half up once."""
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def credits(micro: int) -> float:
    return float(Decimal(micro) / Decimal(1_000_000))
