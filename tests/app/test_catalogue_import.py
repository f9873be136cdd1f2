"""`tokmodel catalogue import`: LiteLLM's price-map format in, providers.yaml models out, which
load as a catalogue file and price exactly what LiteLLM lists."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import yaml

from runtime.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parents[2]

PRICE_MAP = {
    "sample_spec": "documentation, not a model",
    "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat",
                    "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                    "cache_read_input_token_cost": 7.5e-08,
                    "max_input_tokens": 128000, "max_output_tokens": 16384},
    "claude-opus-4-8": {"litellm_provider": "anthropic", "mode": "chat",
                        "input_cost_per_token": 5e-06, "output_cost_per_token": 2.5e-05,
                        "cache_read_input_token_cost": 5e-07,
                        "cache_creation_input_token_cost": 6.25e-06},
    "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo": {
        "litellm_provider": "together_ai", "mode": "chat",
        "input_cost_per_token": 8.8e-07, "output_cost_per_token": 8.8e-07},
    "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding",
                               "input_cost_per_token": 2e-08, "output_cost_per_token": 0},
    "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation"},
    "bedrock/some-model": {"litellm_provider": "bedrock", "mode": "chat",
                           "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
}


def test_import_prints_models_that_load_as_a_catalogue(tmp_path):
    source = tmp_path / "model_prices_and_context_window.json"
    source.write_text(json.dumps(PRICE_MAP))
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "catalogue", "import",
                             str(source)], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    models = yaml.safe_load(result.stdout)["models"]
    assert sorted(models) == ["anthropic/claude-opus-4-8", "openai/gpt-4o-mini",
                              "openai/text-embedding-3-small",
                              "together/Llama-3.3-70B-Instruct-Turbo"]
    assert models["openai/gpt-4o-mini"]["pricing"] == {
        "input_per_mtok": 0.15, "output_per_mtok": 0.6, "cached_input_per_mtok": 0.075}
    assert models["together/Llama-3.3-70B-Instruct-Turbo"]["upstream"] == \
        "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    catalogue_file = tmp_path / "providers.yaml"
    catalogue_file.write_text(yaml.safe_dump({
        "providers": {"openai": None, "anthropic": None, "together": None},
        "models": models}))
    catalogue = load_catalogue(str(catalogue_file), env={})
    opus = catalogue.get("claude-opus-4-8")
    assert opus.id == "anthropic/claude-opus-4-8" and opus.endpoints == ("chat", "messages")
    assert (opus.price("input_per_mtok"), opus.price("output_per_mtok"),
            opus.price("cached_input_per_mtok"), opus.price("cache_write_per_mtok")) == (
        Decimal(5), Decimal(25), Decimal("0.5"), Decimal("6.25"))
    assert catalogue.get("gpt-4o-mini").max_output_tokens == 16384


def test_import_of_an_unreadable_file_fails_with_its_name(tmp_path):
    missing = tmp_path / "nope.json"
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "catalogue", "import",
                             str(missing)], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 1 and str(missing) in result.stderr
