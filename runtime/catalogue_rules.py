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


def normalize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Fill implied fields: descriptor ids, upstream names, owners, prices as strings."""
    providers = {}
    for pid, conf in (raw.get("providers") or {}).items():
        conf = dict(conf or {})
        conf.setdefault("descriptor", pid)
        env_id = pid.upper().replace("-", "_")
        conf.setdefault("base_url_env", f"{env_id}_BASE_URL")
        conf.setdefault("api_key_env", f"{env_id}_API_KEY")
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
        models[mid] = conf
    return {"providers": providers, "defaults": dict(raw.get("defaults") or {}),
            "models": models}


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
    for kind, mid in catalogue["defaults"].items():
        model = catalogue["models"].get(mid)
        if model is None:
            errors.append(f"defaults.{kind}: unknown model '{mid}'")
        elif kind not in model["endpoints"]:
            errors.append(f"defaults.{kind}: model '{mid}' does not serve '{kind}'")
    return errors
