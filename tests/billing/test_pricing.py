"""Exact money: prices from the catalogue, integer nano-credits, rounding once."""

import json
from decimal import Decimal

import pytest

from runtime.billing.credits import format_credits, parse_credits
from runtime.billing.pricing import Usage, charge_nano, chat_worst_case, token_cost
from runtime.catalogue import load_catalogue


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(env={})


def test_gpt4o_cost_is_usage_times_list_price(catalogue):
    model = catalogue.get("openai/gpt-4o")
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    # 800 fresh at $2.50/M, 200 cached at $1.25/M, 500 out at $10/M: 1000 nano-credits per
    # token per USD per million tokens
    expected = (Decimal(800) * Decimal("2.5") + 200 * Decimal("1.25") + 500 * Decimal(10)) * 1000
    assert token_cost(model, usage) == expected
    assert charge_nano(token_cost(model, usage)) == 7_250_000


def test_cache_writes_use_their_own_price(catalogue):
    model = catalogue.get("anthropic/claude-sonnet-4-5")
    usage = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=30,
                  cache_write_tokens=50)
    expected = 20 * Decimal(3) + 30 * Decimal("0.3") + 50 * Decimal("3.75") + 10 * Decimal(15)
    assert token_cost(model, usage) == expected * 1000


def test_cheap_requests_cost_their_exact_price(catalogue):
    # 0.02 USD per million tokens: 4 tokens cost 0.00000008 credit, which micro-credits
    # rounded to 0
    model = catalogue.get("openai/text-embedding-3-small")
    assert model.price("input_per_mtok") == Decimal("0.02")
    assert charge_nano(token_cost(model, Usage(prompt_tokens=4))) == 80
    assert format_credits(80) == "0.00000008"


def test_rounding_is_up_once_per_request(catalogue):
    model = catalogue.get("openai/gpt-4o-mini")  # 150 nano-credits per input token
    assert charge_nano(token_cost(model, Usage(prompt_tokens=3))) == 450
    assert charge_nano(Decimal("450.0001")) == 451
    assert charge_nano(Decimal(0)) == 0
    # cached input at 0.075 USD/M is 75 nano-credits a token: whole, so nothing to round
    assert charge_nano(token_cost(model, Usage(prompt_tokens=3, cached_tokens=3))) == 225


def test_hold_covers_any_outcome(catalogue):
    model = catalogue.get("openai/gpt-4o-mini")
    hold = chat_worst_case(model, prompt_bound=3, max_output=1)
    assert hold == 1050  # 3 * 150 + 600
    assert hold >= charge_nano(token_cost(model, Usage(prompt_tokens=3, completion_tokens=1)))


@pytest.mark.parametrize("text,nano", [("0", 0), ("12.5", 12_500_000_000),
                                       ("0.000000001", 1), ("0.00000008", 80),
                                       ("100", 100_000_000_000)])
def test_parse_credits(text, nano):
    assert parse_credits(text) == nano
    assert parse_credits(format_credits(nano)) == nano


@pytest.mark.parametrize("bad", ["-1", "abc", "0.0000000001", "nan", "inf"])
def test_parse_credits_refuses(bad):
    with pytest.raises(ValueError):
        parse_credits(bad)


def test_inline_images_count_a_bounded_number_of_tokens_not_their_bytes():
    from runtime.billing.prompt_bound import IMAGE_TOKENS, prompt_token_bound

    image = "data:image/png;base64," + "A" * 2_000_000
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": image}}]}]}
    anthropic = {"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/jpeg", "data": "B" * 1_000_000}}]}]}
    audio = {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "C" * 50_000, "format": "wav"}}]}]}
    for payload, images in ((body, 1), (anthropic, 1), (audio, 0)):
        raw = json.dumps(payload).encode()
        bound = prompt_token_bound(raw, payload)
        assert bound >= images * IMAGE_TOKENS
        if images:
            assert bound < len(raw) // 10
        else:
            assert bound == len(raw)  # audio tokens grow with its length: keep the bytes
