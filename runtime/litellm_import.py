"""Catalogue entries from LiteLLM's published price map (model_prices_and_context_window.json).

Contract: `catalogue_models(price_map)` takes that JSON (model key -> {litellm_provider,
input_cost_per_token, output_cost_per_token, max_input_tokens, max_output_tokens, mode, ...})
and returns providers.yaml `models` entries (id -> entry) for the chat and embedding models
of providers TokModel has a descriptor for, with prices per million tokens as exact decimal
strings. Entries of other providers or modes, or without prices, are skipped. Nothing here
decides what a deployment sells: `tokmodel catalogue import` only prints the entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# LiteLLM provider name -> TokModel provider id (specs/providers/<id>.yaml).
PROVIDERS = {
    "openai": "openai", "anthropic": "anthropic", "gemini": "google", "mistral": "mistral",
    "groq": "groq", "deepseek": "deepseek", "xai": "xai", "together_ai": "together",
    "fireworks_ai": "fireworks", "openrouter": "openrouter", "perplexity": "perplexity",
}
MODES = {"chat": "chat", "embedding": "embeddings"}


def _per_mtok(value: Any) -> float | int | None:
    """A per-token USD cost as a per-million price; Decimal first, so 1.5e-07 -> 0.15."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    price = (Decimal(repr(value)) * 1_000_000).normalize()
    return int(price) if price == price.to_integral_value() else float(price)


def catalogue_models(price_map: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for key, entry in price_map.items():
        if not isinstance(entry, dict):
            continue   # e.g. LiteLLM's "sample_spec"
        provider = PROVIDERS.get(entry.get("litellm_provider", ""))
        kind = MODES.get(entry.get("mode", ""))
        if provider is None or kind is None:
            continue
        # LiteLLM keys are either the bare upstream name or "<provider>/<name>".
        upstream = key.split("/", 1)[1] if key.startswith(f"{entry['litellm_provider']}/") \
            else key
        pricing = {name: price for name, field in (
            ("input_per_mtok", "input_cost_per_token"),
            ("output_per_mtok", "output_cost_per_token"),
            ("cached_input_per_mtok", "cache_read_input_token_cost"),
            ("cache_write_per_mtok", "cache_creation_input_token_cost"))
            if (price := _per_mtok(entry.get(field))) is not None}
        if "input_per_mtok" not in pricing or (kind == "chat" and "output_per_mtok" not in
                                               pricing):
            continue
        if kind == "embeddings":
            pricing = {"input_per_mtok": pricing["input_per_mtok"]}
        model: dict[str, Any] = {"provider": provider}
        if "/" in upstream:
            model["upstream"] = upstream
        model["endpoints"] = [kind, "messages"] if provider == "anthropic" else [kind]
        for name, field in (("context_window", "max_input_tokens"),
                            ("max_output_tokens", "max_output_tokens")):
            value = entry.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                model[name] = value
        model["pricing"] = pricing
        models[f"{provider}/{upstream.rsplit('/', 1)[-1] if '/' in upstream else upstream}"] \
            = model
    return dict(sorted(models.items()))
