"""What an accepted request's prompt is estimated at when the provider reports no usage, and
what the hold counts before the call: the whole request, images at their provider's
per-image estimate, hosted web searches at their catalogue price."""

from __future__ import annotations

import gc
import json
from decimal import Decimal

import pytest

from runtime.billing.hosted_tools import WEB_SEARCHES_HOLD, hosted_tools_hold, web_searches
from runtime.billing.image_tokens import image_tokens
from runtime.billing.prompt_bound import IMAGE_TOKENS, prompt_token_bound
from runtime.billing.prompt_estimate import lazy_prompt, prompt_tokens, stream_prompt
from runtime.catalogue import load_catalogue


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(env={})


def test_tools_system_and_tool_results_are_prompt(catalogue):
    model = catalogue.get("openai/gpt-4o")
    description = "d" * 400_000
    body = {"model": "openai/gpt-4o", "stream": True, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f",
                                                        "description": description}}]}
    assert lazy_prompt(body, model)() >= 100_000
    anthropic = {"model": "m", "max_tokens": 10, "system": "s" * 4000,
                 "messages": [{"role": "user", "content": [
                     {"type": "tool_result", "tool_use_id": "t", "content": "r" * 8000}]}]}
    assert prompt_tokens(anthropic, lambda detail: 0) >= 3000


def test_settings_are_not_prompt():
    body = {"model": "x" * 1000, "stream": True, "temperature": 0.5, "metadata": {"k": "v" * 99},
            "input": "abcd"}
    assert prompt_tokens(body, lambda detail: 0) == 1


@pytest.mark.parametrize("model_id, per_image", [
    ("openai/gpt-4o", 85 + 8 * 170),              # tile formula, worst case
    ("openai/gpt-4o-mini", 2833 + 8 * 5667),
    ("openai/gpt-5-mini", 2489),                  # 1,536 patches x 1.62
    ("anthropic/claude-sonnet-4-5", 1600),
    ("google/gemini-2.5-flash", 1120),
])
def test_images_count_their_providers_estimate(catalogue, model_id, per_image):
    model = catalogue.get(model_id)
    assert image_tokens(model) == per_image
    url = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    inline = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                          "data": "A" * 100_000}}
    body = {"messages": [{"role": "user", "content": [url, inline]}]}
    text = {"messages": [{"role": "user", "content": []}]}
    assert (lazy_prompt(body, model)() - lazy_prompt(text, model)()) == 2 * per_image


def test_a_stream_keeps_the_same_estimate_and_not_the_body(catalogue):
    # a stream's estimate is computed when it starts (it then keeps one number, not the
    # request body): the charge of a cut stream is the lazy estimate's, to the token
    model = catalogue.get("openai/gpt-4o-mini")
    url = {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                              "detail": "low"}}
    bodies = [
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Say hi"}]},
        {"model": "m", "stream": True, "max_tokens": 9, "tools": [{"type": "function",
         "function": {"name": "f", "description": "d" * 999, "parameters": {
             "type": "object", "properties": {"q": {"type": "string"}}}}}],
         "messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": ["look", url]}]},
        {"model": "m", "max_tokens": 10, "system": "s" * 4000, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                          "content": "r" * 8000}]}]},
        {"model": "m", "input": [{"role": "user", "content": "abc"}], "instructions": "x"},
    ]
    for body in bodies:
        for extra in (0, 1234):
            known = stream_prompt(body, model, extra)
            assert known() == known() == lazy_prompt(body, model, extra)() > extra
            assert not any(ref is body for ref in gc.get_referents(known))


def test_low_detail_openai_image_is_the_base_only(catalogue):
    assert image_tokens(catalogue.get("openai/gpt-4o"), "low") == 85


def test_hold_counts_images_by_url_and_inline_at_the_per_image_count(catalogue):
    urls = [{"type": "image_url", "image_url": {"url": f"https://example.com/{i}.png"}}
            for i in range(3)]
    inline = {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 50_000}
    body = {"model": "m", "messages": [{"role": "user", "content": [*urls, inline]}]}
    raw = json.dumps(body).encode()
    plain = {"model": "m", "messages": [{"role": "user", "content": []}]}
    text_bound = prompt_token_bound(json.dumps(plain).encode(), plain)
    bound = prompt_token_bound(raw, body)
    assert text_bound + 4 * IMAGE_TOKENS <= bound < text_bound + 4 * IMAGE_TOKENS + 400
    mini = image_tokens(catalogue.get("openai/gpt-4o-mini"))
    assert prompt_token_bound(raw, body, mini) >= 4 * mini


def test_web_searches_are_held_at_their_price(catalogue):
    claude = catalogue.get("anthropic/claude-sonnet-4-5")
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    assert web_searches({"tools": [tool]}) == 3
    assert web_searches({"tools": [{"type": "web_search"}]}) == WEB_SEARCHES_HOLD
    assert web_searches({"web_search_options": {}}) == WEB_SEARCHES_HOLD
    assert hosted_tools_hold(claude, {"tools": [tool]}) == 3 * Decimal("0.01") * 1_000_000_000
    # OpenAI's searching models are held at their call price; a model without one adds nothing
    assert hosted_tools_hold(catalogue.get("openai/gpt-4o"), {"tools": [tool]}) == (
        3 * Decimal("0.025") * 1_000_000_000)
    assert hosted_tools_hold(catalogue.get("deepseek/deepseek-chat"), {"tools": [tool]}) == 0
