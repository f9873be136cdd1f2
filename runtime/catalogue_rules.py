"""Rules a catalogue (providers.yaml) must follow beyond its JSON Schema, and its normal form.

Shared by codegen (which compiles the default catalogue into generated/catalogue.py) and by
the runtime (which loads another file when TOKMODEL_PROVIDERS names one), so both accept and
reject exactly the same files. Works on plain dicts; imports nothing from generated/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _price_strings(value: Any) -> Any:
    """USD prices as decimal strings, so money is computed exactly (never via floats)."""
    if isinstance(value, dict):
        return {k: _price_strings(v) for k, v in value.items()}
    if isinstance(value, bool):
        raise TypeError("a price cannot be a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value


# Provider keys that describe its one implicit deployment; with `deployments` they belong in
# each deployment instead, so check() refuses the mix rather than guess which one wins.
SINGLE_DEPLOYMENT_KEYS = ("base_url", "base_url_env", "api_key_env")


def _deployments(pid: str, conf: dict[str, Any]) -> list[dict[str, Any]]:
    """Every provider as a list of deployments; without `deployments`, one named 'default'
    reading <ID>_BASE_URL and <ID>_API_KEY (or the provider's own keys), as before."""
    if "deployments" in conf:
        return [{**dep, "weight": dep.get("weight", 1)} for dep in conf["deployments"]]
    env_id = pid.upper().replace("-", "_")
    dep = {"name": "default",
           "base_url_env": conf.pop("base_url_env", f"{env_id}_BASE_URL"),
           "api_key_env": conf.pop("api_key_env", f"{env_id}_API_KEY"), "weight": 1}
    if "base_url" in conf:
        dep["base_url"] = conf.pop("base_url")
    return [dep]


def normalize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Fill implied fields: descriptor ids, deployments, upstream names, owners, prices as
    strings, and `aliases` (alias -> model id: automatic ones from upstream names, then the
    catalogue's own, which win). Timeouts, retry and cool-down are left as written: their
    defaults come from the environment at run time."""
    providers = {}
    for pid, conf in (raw.get("providers") or {}).items():
        conf = dict(conf or {})
        conf.setdefault("descriptor", pid)
        conf["deployments"] = _deployments(pid, conf)
        providers[pid] = conf
    models = {}
    for mid, conf in (raw.get("models") or {}).items():
        conf = dict(conf)
        prefix, _, rest = mid.partition("/")
        conf.setdefault("upstream", rest)
        conf.setdefault("owned_by", prefix)
        conf.setdefault("created", 0)
        conf["endpoints"] = list(conf["endpoints"])
        conf["pricing"] = _price_strings(conf["pricing"])
        if "fallbacks" in conf:
            conf["fallbacks"] = list(conf["fallbacks"])
        models[mid] = conf
    return {"providers": providers, "defaults": dict(raw.get("defaults") or {}),
            "models": models, "aliases": _aliases(models, raw.get("aliases") or {})}


def automatic_aliases(models: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each model's upstream name (what a client talking to the provider directly sends,
    e.g. 'gpt-4o' for 'openai/gpt-4o') as an alias of it; a name several models share is
    ambiguous (the same llama on two hosts) and a name that is itself a model id would
    shadow nothing, so neither is aliased."""
    by_name: dict[str, list[str]] = {}
    for mid, model in models.items():
        by_name.setdefault(model["upstream"], []).append(mid)
    return {name: mids[0] for name, mids in by_name.items()
            if len(mids) == 1 and name not in models}


def _aliases(models: Mapping[str, Mapping[str, Any]],
             explicit: Mapping[str, Any]) -> dict[str, str]:
    """Automatic aliases, then the catalogue's own `aliases`, which win (and which check()
    validates: the automatic ones are valid by construction)."""
    return {**automatic_aliases(models), **explicit}


def check(catalogue: Mapping[str, Any], descriptors: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every cross-reference problem of a normalized catalogue, as 'path: message' lines."""
    errors = []
    providers = catalogue["providers"]
    for pid, conf in providers.items():
        desc = descriptors.get(conf["descriptor"])
        if desc is None:
            errors.append(f"providers.{pid}: no descriptor specs/providers/"
                          f"{conf['descriptor']}.yaml")
        elif desc.get("abstract"):
            errors.append(f"providers.{pid}: descriptor '{conf['descriptor']}' is an abstract "
                          "family and cannot be served")
        errors += _deployment_errors(pid, conf, desc)
    for mid, model in catalogue["models"].items():
        pid = model["provider"]
        if pid not in providers:
            errors.append(f"models.{mid}.provider: '{pid}' is not an enabled provider")
            continue
        desc = descriptors.get(providers[pid]["descriptor"])
        if desc is None or desc.get("abstract"):
            continue
        for kind in model["endpoints"]:
            if kind not in desc.get("endpoints", {}):
                errors.append(f"models.{mid}.endpoints: provider '{pid}' has no '{kind}' "
                              "endpoint in its descriptor")
        if "chat" in model["endpoints"] and not {"input_per_mtok", "output_per_mtok"} <= set(
                model["pricing"]):
            errors.append(f"models.{mid}.pricing: a chat model needs input_per_mtok and "
                          "output_per_mtok")
    errors += _fallback_errors(catalogue["models"])
    for alias, target in catalogue.get("aliases", {}).items():
        if alias in catalogue["models"]:
            errors.append(f"aliases.{alias}: '{alias}' is a model id; an alias cannot "
                          "replace a model")
        elif target not in catalogue["models"]:
            errors.append(f"aliases.{alias}: unknown model '{target}' (an alias names a "
                          "model id, not another alias)")
    for kind, mid in catalogue["defaults"].items():
        model = catalogue["models"].get(mid)
        if model is None:
            errors.append(f"defaults.{kind}: unknown model '{mid}'")
        elif kind not in model["endpoints"]:
            errors.append(f"defaults.{kind}: model '{mid}' does not serve '{kind}'")
    return errors


def _deployment_errors(pid: str, conf: Mapping[str, Any],
                       desc: Mapping[str, Any] | None) -> list[str]:
    errors = []
    mixed = [key for key in SINGLE_DEPLOYMENT_KEYS if key in conf]
    if mixed:
        errors.append(f"providers.{pid}: {', '.join(mixed)} cannot be combined with "
                      "deployments; set them on each deployment")
    first: dict[str, int] = {}
    for i, dep in enumerate(conf["deployments"]):
        name = dep["name"]
        if name in first:
            errors.append(f"providers.{pid}.deployments[{i}].name: '{name}' is already the "
                          f"name of deployments[{first[name]}]")
        else:
            first[name] = i
        if "api_key_env" not in dep and desc is not None and not desc.get("keyless"):
            # Such a deployment could never be used: say so now, not at the first request.
            errors.append(f"providers.{pid}.deployments[{i}].api_key_env: required, the "
                          f"'{conf['descriptor']}' descriptor is not keyless")
    return errors


def _fallback_errors(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    errors = []
    for mid, model in models.items():
        for i, other_id in enumerate(model.get("fallbacks", ())):
            where = f"models.{mid}.fallbacks[{i}]"
            other = models.get(other_id)
            if other_id == mid:
                errors.append(f"{where}: a model cannot fall back to itself")
            elif other is None:
                errors.append(f"{where}: unknown model '{other_id}'")
            elif not set(model["endpoints"]) & set(other["endpoints"]):
                errors.append(f"{where}: '{other_id}' serves none of this model's endpoints "
                              f"({', '.join(model['endpoints'])})")
    return errors
