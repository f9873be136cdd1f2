"""Catalogue deployments, per-provider policies and model fallbacks: parsing, defaults from the
environment, rejection messages, and the per-deployment views adapters build calls from."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from generated import registry
from runtime import catalogue_rules
from runtime.catalogue import (
    Catalogue,
    CatalogueError,
    Cooldown,
    RetryPolicy,
    Timeouts,
    load_catalogue,
)

CHAT_PRICE = {"input_per_mtok": 1, "output_per_mtok": 2}

BASE: dict[str, Any] = {
    "providers": {
        "openai": {
            "deployments": [
                {"name": "east", "base_url_env": "OPENAI_EAST_BASE_URL",
                 "api_key_env": "OPENAI_EAST_API_KEY", "weight": 3},
                {"name": "west", "base_url": "https://west.example/v1",
                 "api_key_env": "OPENAI_WEST_API_KEY"},
            ],
            "timeouts": {"connect": 5, "first_byte": 30.5},
            "retry": {"attempts": 2},
            "cooldown": {"failures": 1, "seconds": 5},
        },
        "anthropic": None,
        "ollama": {"deployments": [{"name": "gpu-1", "base_url": "http://gpu1:11434/v1"},
                                   {"name": "gpu_2"}]},
    },
    "models": {
        "openai/gpt-4o": {"provider": "openai", "endpoints": ["chat"], "pricing": CHAT_PRICE,
                          "fallbacks": ["anthropic/claude-sonnet-4-5"]},
        "anthropic/claude-sonnet-4-5": {"provider": "anthropic", "endpoints": ["chat"],
                                        "pricing": CHAT_PRICE},
        "openai/text-embedding-3-small": {"provider": "openai", "endpoints": ["embeddings"],
                                          "pricing": {"input_per_mtok": 0.02}},
        "ollama/llama3": {"provider": "ollama", "endpoints": ["chat"], "pricing": CHAT_PRICE},
    },
}

ENV = {"OPENAI_EAST_BASE_URL": "https://east.example/v1", "OPENAI_EAST_API_KEY": "k-east",
       "OPENAI_WEST_API_KEY": "k-west", "ANTHROPIC_API_KEY": "k-ant"}


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def load(tmp_path: Path, data: dict[str, Any] | None = None,
         env: dict[str, str] | None = None) -> Catalogue:
    return load_catalogue(write(tmp_path, data or BASE), env=ENV if env is None else env)


def problems(tmp_path: Path, data: dict[str, Any], env: dict[str, str] | None = None
             ) -> list[str]:
    with pytest.raises(CatalogueError) as caught:
        load(tmp_path, data, env)
    return caught.value.problems


def rule_errors(data: dict[str, Any]) -> list[str]:
    descriptors = {pid: {"endpoints": d.endpoints, "keyless": d.keyless}
                   for pid, d in registry.DESCRIPTORS.items()}
    return catalogue_rules.check(catalogue_rules.normalize(data), descriptors)


# -- parsing ---------------------------------------------------------------------------------

def test_deployments_are_read_with_urls_keys_and_weights(tmp_path):
    openai = load(tmp_path).providers["openai"]
    east, west = openai.deployments
    assert (east.name, east.provider_id, east.base_url, east.api_key, east.api_key_env,
            east.weight) == ("east", "openai", "https://east.example/v1", "k-east",
                             "OPENAI_EAST_API_KEY", 3)
    assert (west.name, west.base_url, west.api_key, west.weight) == (
        "west", "https://west.example/v1", "k-west", 1)
    assert east.key == "openai/east"
    # The Provider itself carries the first deployment's values, as before deployments.
    assert (openai.base_url, openai.api_key, openai.api_key_env) == (
        east.base_url, "k-east", "OPENAI_EAST_API_KEY")
    assert "k-east" not in repr(east) and "k-east" not in repr(openai)


def test_base_url_env_unset_falls_back_to_the_literal_then_the_descriptor(tmp_path):
    catalogue = load(tmp_path, env={"OPENAI_EAST_API_KEY": "k"})
    east = catalogue.providers["openai"].deployments[0]
    assert east.base_url == registry.DESCRIPTORS["openai"].base_url
    gpu1, gpu2 = catalogue.providers["ollama"].deployments
    assert gpu1.base_url == "http://gpu1:11434/v1"
    assert gpu2.base_url == registry.DESCRIPTORS["ollama"].base_url


def test_usable_per_deployment_and_per_provider(tmp_path):
    catalogue = load(tmp_path, env={"OPENAI_WEST_API_KEY": "k"})
    openai = catalogue.providers["openai"]
    assert [d.usable for d in openai.deployments] == [False, True]
    assert openai.usable
    assert not catalogue.providers["anthropic"].usable
    # Keyless servers need no api_key_env at all.
    ollama = catalogue.providers["ollama"]
    assert all(d.usable and d.api_key_env is None for d in ollama.deployments)
    assert {m.id for m in catalogue.usable_models()} == {
        "openai/gpt-4o", "openai/text-embedding-3-small", "ollama/llama3"}
    none = load(tmp_path, env={}).providers["openai"]
    assert not none.usable


def test_without_deployments_one_default_deployment_reads_id_base_url_and_api_key(tmp_path):
    catalogue = load_catalogue(env={"GROQ_BASE_URL": "http://groq.local/v1",
                                    "GROQ_API_KEY": "g-key"})
    groq = catalogue.providers["groq"]
    (only,) = groq.deployments
    assert (only.name, only.base_url, only.api_key, only.api_key_env, only.weight) == (
        "default", "http://groq.local/v1", "g-key", "GROQ_API_KEY", 1)
    assert (groq.base_url, groq.api_key, groq.api_key_env) == (
        "http://groq.local/v1", "g-key", "GROQ_API_KEY")
    assert groq.usable and groq.deployment is only
    openai = catalogue.providers["openai"]
    assert openai.base_url == registry.DESCRIPTORS["openai"].base_url and not openai.usable


def test_provider_level_env_names_and_base_url_still_work(tmp_path):
    data = copy.deepcopy(BASE)
    data["providers"]["anthropic"] = {"base_url": "https://proxy.example",
                                      "api_key_env": "CLAUDE_KEY"}
    catalogue = load(tmp_path, data, env={"CLAUDE_KEY": "c"})
    (only,) = catalogue.providers["anthropic"].deployments
    assert (only.name, only.base_url, only.api_key, only.api_key_env) == (
        "default", "https://proxy.example", "c", "CLAUDE_KEY")
    catalogue = load(tmp_path, data, env={"CLAUDE_KEY": "c",
                                          "ANTHROPIC_BASE_URL": "http://env.example"})
    assert catalogue.providers["anthropic"].base_url == "http://env.example"


def test_policies_from_the_entry_then_the_environment_then_the_defaults(tmp_path):
    env = {**ENV, "TOKMODEL_CONNECT_TIMEOUT": "7", "TOKMODEL_IDLE_TIMEOUT": "90.5",
           "TOKMODEL_RETRY_ATTEMPTS": "4", "TOKMODEL_MAX_RETRY_AFTER": "0",
           "TOKMODEL_COOLDOWN_FAILURES": "5", "TOKMODEL_COOLDOWN_SECONDS": "12"}
    catalogue = load(tmp_path, env=env)
    openai = catalogue.providers["openai"]
    assert openai.timeouts == Timeouts(connect=5.0, first_byte=30.5, idle=90.5)
    assert openai.retry == RetryPolicy(attempts=2, max_retry_after=0.0)
    assert openai.cooldown == Cooldown(failures=1, seconds=5.0)
    assert all(d.cooldown == openai.cooldown for d in openai.deployments)
    anthropic = catalogue.providers["anthropic"]
    assert anthropic.timeouts == Timeouts(connect=7.0, first_byte=60.0, idle=90.5)
    assert anthropic.retry == RetryPolicy(attempts=4, max_retry_after=0.0)
    assert anthropic.cooldown == Cooldown(failures=5, seconds=12.0)
    plain = load(tmp_path, env=ENV).providers["anthropic"]
    assert (plain.timeouts, plain.retry, plain.cooldown) == (
        Timeouts(10.0, 60.0, 120.0), RetryPolicy(3, 10.0), Cooldown(3, 30.0))


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("TOKMODEL_CONNECT_TIMEOUT", "0", "must be a number > 0"),
    ("TOKMODEL_FIRST_BYTE_TIMEOUT", "soon", "must be a number > 0"),
    ("TOKMODEL_IDLE_TIMEOUT", "inf", "must be a number > 0"),
    ("TOKMODEL_RETRY_ATTEMPTS", "0", "must be an integer >= 1"),
    ("TOKMODEL_RETRY_ATTEMPTS", "2.5", "must be an integer >= 1"),
    ("TOKMODEL_MAX_RETRY_AFTER", "-1", "must be a number >= 0"),
    ("TOKMODEL_COOLDOWN_FAILURES", "x", "must be an integer >= 1"),
    ("TOKMODEL_COOLDOWN_SECONDS", "nan", "must be a number >= 0"),
])
def test_invalid_policy_environment_names_the_variable(tmp_path, name, value, expected):
    found = problems(tmp_path, BASE, {**ENV, name: value})
    assert found == [f"{name}: {expected}, not {value!r}"]
    with pytest.raises(CatalogueError, match=name):
        load_catalogue(env={name: value})


def test_fallbacks_are_kept_in_order(tmp_path):
    data = copy.deepcopy(BASE)
    data["models"]["openai/gpt-4o"]["fallbacks"] = ["ollama/llama3", "anthropic/claude-sonnet-4-5"]
    catalogue = load(tmp_path, data)
    assert catalogue.get("openai/gpt-4o").fallbacks == (
        "ollama/llama3", "anthropic/claude-sonnet-4-5")
    assert catalogue.get("ollama/llama3").fallbacks == ()


# -- rejections ------------------------------------------------------------------------------

def test_unknown_self_and_incompatible_fallbacks_are_rejected(tmp_path):
    data = copy.deepcopy(BASE)
    data["models"]["openai/gpt-4o"]["fallbacks"] = [
        "anthropic/claude-sonnet-4-5", "openai/gpt-4o", "nobody/nothing",
        "openai/text-embedding-3-small"]
    expected = [
        "models.openai/gpt-4o.fallbacks[1]: a model cannot fall back to itself",
        "models.openai/gpt-4o.fallbacks[2]: unknown model 'nobody/nothing'",
        "models.openai/gpt-4o.fallbacks[3]: 'openai/text-embedding-3-small' serves none of "
        "this model's endpoints (chat)",
    ]
    assert rule_errors(data) == expected
    assert problems(tmp_path, data) == expected


def test_duplicate_deployment_names_are_rejected(tmp_path):
    data = copy.deepcopy(BASE)
    data["providers"]["openai"]["deployments"][1]["name"] = "east"
    expected = ["providers.openai.deployments[1].name: 'east' is already the name of "
                "deployments[0]"]
    assert rule_errors(data) == expected
    assert problems(tmp_path, data) == expected


def test_provider_keys_cannot_be_mixed_with_deployments(tmp_path):
    data = copy.deepcopy(BASE)
    data["providers"]["openai"]["api_key_env"] = "OPENAI_API_KEY"
    expected = ["providers.openai: api_key_env cannot be combined with deployments; set them "
                "on each deployment"]
    assert rule_errors(data) == expected
    assert problems(tmp_path, data) == expected


def test_a_deployment_of_a_keyed_provider_needs_its_key_variable(tmp_path):
    data = copy.deepcopy(BASE)
    del data["providers"]["openai"]["deployments"][1]["api_key_env"]
    expected = ["providers.openai.deployments[1].api_key_env: required, the 'openai' "
                "descriptor is not keyless"]
    assert rule_errors(data) == expected
    assert problems(tmp_path, data) == expected


@pytest.mark.parametrize(("deployment", "path"), [
    ({"name": "East"}, "providers.openai.deployments[0].name"),
    ({"base_url": "https://x.example"}, "providers.openai.deployments[0]"),
    ({"name": "a", "weight": 0}, "providers.openai.deployments[0].weight"),
    ({"name": "a", "weight": 1.5}, "providers.openai.deployments[0].weight"),
    ({"name": "a", "api_key_env": "lower"}, "providers.openai.deployments[0].api_key_env"),
    ({"name": "a", "region": "eu"}, "providers.openai.deployments[0]"),
])
def test_malformed_deployments_are_rejected_with_their_path(tmp_path, deployment, path):
    data = copy.deepcopy(BASE)
    data["providers"]["openai"]["deployments"] = [deployment]
    found = problems(tmp_path, data)
    assert any(p.startswith(path + ":") for p in found), found


@pytest.mark.parametrize(("section", "values", "path"), [
    ("timeouts", {"connect": 0}, "providers.openai.timeouts.connect"),
    ("timeouts", {"total": 3}, "providers.openai.timeouts"),
    ("retry", {"attempts": 0}, "providers.openai.retry.attempts"),
    ("retry", {"max_retry_after": -1}, "providers.openai.retry.max_retry_after"),
    ("cooldown", {"failures": 0}, "providers.openai.cooldown.failures"),
    ("cooldown", {"seconds": -5}, "providers.openai.cooldown.seconds"),
])
def test_malformed_policies_are_rejected_with_their_path(tmp_path, section, values, path):
    data = copy.deepcopy(BASE)
    data["providers"]["openai"][section] = values
    found = problems(tmp_path, data)
    assert any(p.startswith(path + ":") for p in found), found


def test_empty_deployment_list_is_rejected(tmp_path):
    data = copy.deepcopy(BASE)
    data["providers"]["openai"]["deployments"] = []
    assert any(p.startswith("providers.openai.deployments:") for p in problems(tmp_path, data))


# -- views per deployment --------------------------------------------------------------------

def test_model_at_a_deployment_targets_its_url_and_key(tmp_path):
    catalogue = load(tmp_path)
    model = catalogue.get("openai/gpt-4o")
    east, west = model.provider.deployments
    at_west = model.at(west)
    assert at_west.provider.url("chat", at_west.upstream) == (
        "https://west.example/v1/chat/completions")
    assert at_west.provider.auth_headers() == {"Authorization": "Bearer k-west"}
    assert (at_west.provider.api_key, at_west.provider.api_key_env) == (
        "k-west", "OPENAI_WEST_API_KEY")
    assert at_west.provider.deployment is west
    assert at_west.provider.descriptor is model.provider.descriptor
    assert at_west.provider.timeouts == model.provider.timeouts
    assert at_west.provider.deployments == model.provider.deployments
    assert (at_west.id, at_west.upstream, at_west.pricing, at_west.fallbacks) == (
        model.id, model.upstream, model.pricing, model.fallbacks)
    assert model.provider.url("chat", model.upstream) == "https://east.example/v1/chat/completions"
    assert model.provider.auth_headers() == {"Authorization": "Bearer k-east"}


def test_model_at_is_cached_and_round_trips(tmp_path):
    model = load(tmp_path).get("openai/gpt-4o")
    east, west = model.provider.deployments
    assert model.at(east) is model
    at_west = model.at(west)
    assert model.at(west) is at_west
    assert at_west.at(west) is at_west
    assert at_west.at(east) is model
    # Models of one provider share its provider views.
    embed = load(tmp_path).get("openai/text-embedding-3-small")
    assert embed.at(embed.provider.deployments[1]).provider.base_url == "https://west.example/v1"


def test_model_at_refuses_another_providers_deployment(tmp_path):
    catalogue = load(tmp_path)
    with pytest.raises(ValueError, match="anthropic/default"):
        catalogue.get("openai/gpt-4o").at(catalogue.providers["anthropic"].deployments[0])


def test_keyless_deployment_sends_no_auth(tmp_path):
    model = load(tmp_path).get("ollama/llama3")
    gpu2 = model.provider.deployments[1]
    assert model.at(gpu2).provider.auth_headers() == {}
    assert model.at(gpu2).provider.url("chat", "llama3") == (
        registry.DESCRIPTORS["ollama"].base_url.rstrip("/") + "/chat/completions")


def test_providers_check_shows_each_deployment(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "providers", "check", "--file",
         write(tmp_path, BASE)], capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "OPENAI_EAST_API_KEY": "k"})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "usable (1 of 2 deployments)" in lines["openai"]
    assert "usable (OPENAI_EAST_API_KEY set)" in lines["openai/east:"]
    assert "weight 3" in lines["openai/east:"]
    assert "not usable: set OPENAI_WEST_API_KEY" in lines["openai/west:"]
    assert "usable (keyless local server)" in lines["ollama/gpu-1:"]
    assert "not usable: set ANTHROPIC_API_KEY" in lines["anthropic"]
    assert "k-east" not in result.stdout
