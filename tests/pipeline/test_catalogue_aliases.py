"""Model aliases in the catalogue: automatic ones from upstream names, the catalogue's own
`aliases`, the rules that reject bad ones (same rules for codegen and a TOKMODEL_PROVIDERS
file), and lookups through `Catalogue.get`."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from generated import registry
from runtime import catalogue_rules
from runtime.catalogue import CatalogueError, load_catalogue

PRICE = {"input_per_mtok": 1, "output_per_mtok": 2}

BASE: dict[str, Any] = {
    "providers": {"openai": None, "groq": None, "together": None, "openrouter": None},
    "models": {
        "openai/gpt-4o-mini": {"provider": "openai", "endpoints": ["chat"], "pricing": PRICE},
        # the same upstream name on two hosts: ambiguous, aliased by neither
        "groq/llama-3.3-70b": {"provider": "groq", "upstream": "llama-3.3-70b",
                               "endpoints": ["chat"], "pricing": PRICE},
        "together/llama-3.3-70b": {"provider": "together", "upstream": "llama-3.3-70b",
                                   "endpoints": ["chat"], "pricing": PRICE},
        # an upstream name that is another model's id is never an alias
        "openrouter/openai/gpt-4o-mini": {"provider": "openrouter", "endpoints": ["chat"],
                                          "pricing": PRICE},
    },
}

ENV = {"OPENAI_API_KEY": "k", "GROQ_API_KEY": "k", "TOGETHER_API_KEY": "k",
       "OPENROUTER_API_KEY": "k"}


def with_aliases(aliases: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["aliases"] = aliases
    return data


def load(tmp_path: Path, data: dict[str, Any]):
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_catalogue(str(path), env=ENV)


def problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    with pytest.raises(CatalogueError) as caught:
        load(tmp_path, data)
    return caught.value.problems


def rule_errors(data: dict[str, Any]) -> list[str]:
    descriptors = {pid: {"endpoints": d.endpoints, "keyless": d.keyless}
                   for pid, d in registry.DESCRIPTORS.items()}
    return catalogue_rules.check(catalogue_rules.normalize(data), descriptors)


def test_upstream_names_are_aliases_unless_ambiguous_or_a_model_id():
    aliases = catalogue_rules.normalize(BASE)["aliases"]
    assert aliases == {"gpt-4o-mini": "openai/gpt-4o-mini"}
    assert rule_errors(BASE) == []


def test_catalogue_aliases_add_names_and_win_over_automatic_ones():
    data = with_aliases({"gpt-4o-mini": "openrouter/openai/gpt-4o-mini",
                         "llama-3.3-70b": "groq/llama-3.3-70b",
                         "gpt-4o-mini-2024-07-18": "openai/gpt-4o-mini"})
    assert catalogue_rules.normalize(data)["aliases"] == {
        "gpt-4o-mini": "openrouter/openai/gpt-4o-mini",
        "llama-3.3-70b": "groq/llama-3.3-70b",
        "gpt-4o-mini-2024-07-18": "openai/gpt-4o-mini"}
    assert rule_errors(data) == []


def test_an_alias_to_an_unknown_model_is_rejected():
    data = with_aliases({"gpt-5": "openai/gpt-5"})
    assert rule_errors(data) == [
        "aliases.gpt-5: unknown model 'openai/gpt-5' (an alias names a model id, not "
        "another alias)"]


def test_an_alias_to_another_alias_is_rejected():
    data = with_aliases({"mini": "openai/gpt-4o-mini", "tiny": "mini"})
    assert any(e.startswith("aliases.tiny: unknown model 'mini'") for e in rule_errors(data))


def test_an_alias_equal_to_a_model_id_is_rejected():
    data = with_aliases({"openai/gpt-4o-mini": "groq/llama-3.3-70b"})
    assert rule_errors(data) == [
        "aliases.openai/gpt-4o-mini: 'openai/gpt-4o-mini' is a model id; an alias cannot "
        "replace a model"]


def test_a_providers_file_with_a_bad_alias_is_refused_with_its_path(tmp_path):
    assert problems(tmp_path, with_aliases({"x": "openai/nope"})) == [
        "aliases.x: unknown model 'openai/nope' (an alias names a model id, not another "
        "alias)"]
    # shape comes from the JSON Schema: a target is a model id, a string
    assert any(p.startswith("aliases.x:") for p in problems(tmp_path, with_aliases({"x": 3})))


def test_a_providers_file_takes_aliases_and_get_resolves_them(tmp_path):
    catalogue = load(tmp_path, with_aliases({"mini": "openai/gpt-4o-mini"}))
    mini = catalogue.get("openai/gpt-4o-mini")
    assert catalogue.get("mini") is mini and catalogue.get("gpt-4o-mini") is mini
    assert catalogue.get("llama-3.3-70b") is None
    assert catalogue.get("nope") is None
    # listing is by model id only: aliases add no models
    assert sorted(m.id for m in catalogue.usable_models()) == sorted(BASE["models"])


def test_the_shipped_catalogue_answers_the_names_clients_send():
    catalogue = load_catalogue(env={})
    expected = {
        "gpt-4o-mini": "openai/gpt-4o-mini",
        "gpt-4o": "openai/gpt-4o",
        "gpt-4o-mini-2024-07-18": "openai/gpt-4o-mini",
        "claude-sonnet-4-5-20250929": "anthropic/claude-sonnet-4-5",
        "claude-sonnet-4-5": "anthropic/claude-sonnet-4-5",
        "claude-haiku-4-5-20251001": "anthropic/claude-haiku-4-5",
        "claude-opus-4-8": "anthropic/claude-opus-4-8",
        "gemini-2.0-flash": "google/gemini-2.0-flash",
        "mistral-large-latest": "mistral/mistral-large-latest",
    }
    assert {name: catalogue.get(name).id for name in expected} == expected
    opus = catalogue.get("claude-opus-4-8")
    assert (opus.upstream, opus.price("input_per_mtok"), opus.price("output_per_mtok"),
            opus.price("cached_input_per_mtok"), opus.price("cache_write_per_mtok")) == (
        "claude-opus-4-8", 5, 25, Decimal("0.5"), Decimal("6.25"))
    # the OpenRouter copy of gpt-4o-mini never takes over the bare name
    assert catalogue.get("openai/gpt-4o-mini").provider.id == "openai"
