"""The deployment's catalogue at run time: which models exist, who serves them, at what price.

Built from the compiled default catalogue (generated/catalogue.py) or, when
TOKMODEL_PROVIDERS names a file, from that YAML file validated with the same schemas and
rules codegen uses. Provider base URLs and keys come from the environment
(<ID>_BASE_URL, <ID>_API_KEY); a provider is usable when its key is set or it is keyless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from runtime import catalogue_rules


class CatalogueError(Exception):
    """The catalogue file is invalid; `problems` lists every error as 'path: message'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    descriptor: Any                    # generated.registry.Descriptor
    base_url: str
    api_key: str | None = field(repr=False)
    api_key_env: str

    @property
    def usable(self) -> bool:
        return bool(self.api_key) or self.descriptor.keyless

    def url(self, kind: str, model: str) -> str:
        return self.base_url.rstrip("/") + self.descriptor.endpoints[kind].replace(
            "{model}", model)

    def auth_headers(self) -> dict[str, str]:
        """Credentials for the upstream, per the descriptor's scheme (query auth is in url)."""
        if not self.api_key:
            return {}
        scheme = self.descriptor.auth_scheme
        if scheme == "bearer":
            return {"Authorization": f"Bearer {self.api_key}"}
        if scheme == "header":
            return {self.descriptor.auth_name: self.api_key}
        return {}


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    provider: Provider
    upstream: str
    owned_by: str
    created: int
    endpoints: tuple[str, ...]
    pricing: Mapping[str, Any]        # decimal strings, or size/quality maps of them
    context_window: int | None = None
    max_output_tokens: int | None = None
    dimensions: tuple[int, ...] = ()

    def price(self, name: str) -> Decimal | None:
        value = self.pricing.get(name)
        return Decimal(value) if isinstance(value, str) else None


class Catalogue:
    """Models by id, with the providers that serve them."""

    def __init__(self, data: Mapping[str, Any], descriptors: Mapping[str, Any],
                 env: Mapping[str, str]) -> None:
        self.providers: dict[str, Provider] = {}
        for pid, conf in data["providers"].items():
            desc = descriptors[conf["descriptor"]]
            base = env.get(conf["base_url_env"]) or conf.get("base_url") or desc.base_url
            self.providers[pid] = Provider(
                id=pid, descriptor=desc, base_url=base,
                api_key=env.get(conf["api_key_env"]) or None, api_key_env=conf["api_key_env"])
        self.models: dict[str, Model] = {}
        for mid, conf in data["models"].items():
            self.models[mid] = Model(
                id=mid, provider=self.providers[conf["provider"]], upstream=conf["upstream"],
                owned_by=conf["owned_by"], created=conf["created"],
                endpoints=tuple(conf["endpoints"]), pricing=conf["pricing"],
                context_window=conf.get("context_window"),
                max_output_tokens=conf.get("max_output_tokens"),
                dimensions=tuple(conf.get("dimensions", ())))
        self.defaults: dict[str, str] = dict(data.get("defaults") or {})

    def get(self, model_id: str) -> Model | None:
        return self.models.get(model_id)

    def usable_models(self) -> list[Model]:
        return [m for m in self.models.values() if m.provider.usable]


def _validate_file(path: Path, schemas: Mapping[str, Any],
                   descriptors: Mapping[str, Any]) -> dict[str, Any]:
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise CatalogueError(source, [f"cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(source, [f"invalid YAML: {exc}"]) from exc
    registry = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in schemas.values()]
        + [(name, Resource.from_contents(s)) for name, s in schemas.items()])
    validator = jsonschema.Draft202012Validator(schemas["catalogue.schema.json"],
                                                registry=registry)
    problems = [
        "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
        + f": {e.message}" for e in validator.iter_errors(raw)]
    if problems:
        raise CatalogueError(source, problems)
    data = catalogue_rules.normalize(raw)
    as_dicts = {pid: {"endpoints": d.endpoints} for pid, d in descriptors.items()}
    problems = catalogue_rules.check(data, as_dicts)
    if problems:
        raise CatalogueError(source, problems)
    return data


def load_catalogue(providers_file: str | None = None, env: Mapping[str, str] | None = None,
                   registry: Any = None) -> Catalogue:
    """The registry's compiled catalogue, or the file named (validated with the registry's
    schemas); raises CatalogueError."""
    if registry is None:
        from generated import registry

    env = os.environ if env is None else env
    data = registry.CATALOGUE
    if providers_file:
        data = _validate_file(Path(providers_file), registry.SCHEMAS, registry.DESCRIPTORS)
    return Catalogue(data, registry.DESCRIPTORS, env)
