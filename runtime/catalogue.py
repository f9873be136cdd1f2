"""The deployment's catalogue at run time: which models exist, who serves them, at what price.

Built from the compiled default catalogue (generated/catalogue.py) or, when
TOKMODEL_PROVIDERS names a file, from that YAML file validated with the same schemas and
rules codegen uses.

Models are found by id or by alias (`aliases`: each model's upstream name when no other model
shares it, and the catalogue's own entries); `get` returns the canonical Model for either, so
everything recorded about a request (usage rows, metrics, logs) uses the catalogue id.

A provider is served by one or more deployments (accounts, regions or servers of the same
API), each with its own base URL and key read from the environment; without `deployments`
in the catalogue it has exactly one, named 'default', from <ID>_BASE_URL and <ID>_API_KEY.
A deployment is usable when its key is set or the descriptor is keyless; a provider is
usable when any of its deployments is. `Provider.base_url`, `api_key` and `api_key_env` are
those of the deployment the Provider object stands for: the first one for the catalogue's
own Provider, the chosen one for the view `Model.at(deployment)` returns, so adapters that
build calls from `model.provider` reach whichever deployment was picked.

Each provider also carries its timeouts, retry and cool-down policies: the catalogue entry's
values, else TOKMODEL_* environment defaults, else built-in defaults. Invalid environment
values raise CatalogueError naming the variable.
"""

from __future__ import annotations

import functools
import math
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



@functools.lru_cache(maxsize=4096)
def _decimal(text: str) -> Decimal:
    """A catalogue price string as a Decimal, made once (prices are read on every request)."""
    return Decimal(text)

@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: to connect, from sending to the first byte of the answer, between two bytes."""

    connect: float = 10.0
    first_byte: float = 60.0
    idle: float = 120.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts on one provider per request, and the longest Retry-After worth waiting for."""

    attempts: int = 3
    max_retry_after: float = 10.0


@dataclass(frozen=True, slots=True)
class Cooldown:
    """After `failures` consecutive failures a deployment rests `seconds` (0: never rests)."""

    failures: int = 3
    seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a provider is served: base URL, credentials and share of the traffic."""

    name: str
    provider_id: str
    base_url: str
    api_key: str | None = field(repr=False)
    api_key_env: str | None
    weight: int = 1
    keyless: bool = False
    cooldown: Cooldown = Cooldown()
    # 'provider/name': the health tracker's dict key, built once instead of per request.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider_id}/{self.name}")

    @property
    def usable(self) -> bool:
        return bool(self.api_key) or self.keyless


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    descriptor: Any                    # generated.registry.Descriptor
    base_url: str
    api_key: str | None = field(repr=False)
    api_key_env: str | None
    deployments: tuple[Deployment, ...] = ()
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    cooldown: Cooldown = Cooldown()
    # The deployment whose base_url and key this object carries (default: the first).
    deployment: Deployment | None = field(default=None, repr=False, compare=False)
    # deployment name -> (deployment, view), shared by a provider and all its views.
    _views: dict[str, tuple[Deployment, Provider]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.deployments:
            # Built by hand (tests, tools) from one base URL and key: that is its deployment.
            object.__setattr__(self, "deployments", (Deployment(
                "default", self.id, self.base_url, self.api_key, self.api_key_env,
                keyless=bool(getattr(self.descriptor, "keyless", False)),
                cooldown=self.cooldown),))
        if self.deployment is None:
            object.__setattr__(self, "deployment", self.deployments[0])
        self._views[self.deployment.name] = (self.deployment, self)

    @property
    def usable(self) -> bool:
        return any(d.usable for d in self.deployments)

    def at(self, deployment: Deployment) -> Provider:
        """This provider as served by `deployment` (same descriptor and policies); cached."""
        entry = self._views.get(deployment.name)
        if entry is not None and entry[0] is deployment:
            return entry[1]
        if deployment.provider_id != self.id:
            raise ValueError(f"deployment '{deployment.key}' does not serve provider "
                             f"'{self.id}'")
        view = Provider(self.id, self.descriptor, deployment.base_url, deployment.api_key,
                        deployment.api_key_env, self.deployments, self.timeouts, self.retry,
                        self.cooldown, deployment)
        object.__setattr__(view, "_views", self._views)
        self._views[deployment.name] = (deployment, view)
        return view

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
    fallbacks: tuple[str, ...] = ()   # catalogue model ids, tried in order
    reasoning: bool = False           # has a reasoning setting (reasoning_effort)
    # deployment name -> (deployment, view), shared by a model and all its views.
    _at: dict[str, tuple[Deployment, Model]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        deployment = self.provider.deployment
        if deployment is not None:  # always, once Provider.__post_init__ ran
            self._at[deployment.name] = (deployment, self)

    def price(self, name: str) -> Decimal | None:
        value = self.pricing.get(name)
        return _decimal(value) if isinstance(value, str) else None

    def at(self, deployment: Deployment) -> Model:
        """This model served by `deployment`: `provider` carries that deployment's base URL and
        key. Cached: repeated calls return the same object without allocating."""
        if deployment is self.provider.deployment:
            return self
        entry = self._at.get(deployment.name)
        if entry is not None and entry[0] is deployment:
            return entry[1]
        view = Model(self.id, self.provider.at(deployment), self.upstream, self.owned_by,
                     self.created, self.endpoints, self.pricing, self.context_window,
                     self.max_output_tokens, self.dimensions, self.fallbacks,
                     self.reasoning)
        object.__setattr__(view, "_at", self._at)
        self._at[deployment.name] = (deployment, view)
        return view


# (section, field) -> environment variable, built-in default, integer?, minimum, exclusive?
_POLICY_ENV: dict[tuple[str, str], tuple[str, float, bool, float, bool]] = {
    ("timeouts", "connect"): ("TOKMODEL_CONNECT_TIMEOUT", 10.0, False, 0, True),
    ("timeouts", "first_byte"): ("TOKMODEL_FIRST_BYTE_TIMEOUT", 60.0, False, 0, True),
    ("timeouts", "idle"): ("TOKMODEL_IDLE_TIMEOUT", 120.0, False, 0, True),
    ("retry", "attempts"): ("TOKMODEL_RETRY_ATTEMPTS", 3, True, 1, False),
    ("retry", "max_retry_after"): ("TOKMODEL_MAX_RETRY_AFTER", 10.0, False, 0, False),
    ("cooldown", "failures"): ("TOKMODEL_COOLDOWN_FAILURES", 3, True, 1, False),
    ("cooldown", "seconds"): ("TOKMODEL_COOLDOWN_SECONDS", 30.0, False, 0, False),
}


def _policy_defaults(env: Mapping[str, str]) -> dict[tuple[str, str], float]:
    """The TOKMODEL_* policy defaults, else the built-in ones; raises CatalogueError."""
    values: dict[tuple[str, str], float] = {}
    problems = []
    for where, (name, default, integer, minimum, exclusive) in _POLICY_ENV.items():
        raw = env.get(name, "").strip()
        if not raw:
            values[where] = default
            continue
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        try:
            value: float = int(raw) if integer else float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            problems.append(f"{name}: must be {kind} {bound}, not {raw!r}")
        values[where] = value
    if problems:
        raise CatalogueError("environment", problems)
    return values


def _policies(conf: Mapping[str, Any], defaults: Mapping[tuple[str, str], float]
              ) -> tuple[Timeouts, RetryPolicy, Cooldown]:
    def get(section: str, name: str) -> float:
        return (conf.get(section) or {}).get(name, defaults[(section, name)])

    return (Timeouts(float(get("timeouts", "connect")), float(get("timeouts", "first_byte")),
                     float(get("timeouts", "idle"))),
            RetryPolicy(int(get("retry", "attempts")), float(get("retry", "max_retry_after"))),
            Cooldown(int(get("cooldown", "failures")), float(get("cooldown", "seconds"))))


def _deployment(pid: str, dep: Mapping[str, Any], desc: Any, cooldown: Cooldown,
                env: Mapping[str, str]) -> Deployment:
    base_env = dep.get("base_url_env")
    base = (env.get(base_env) if base_env else None) or dep.get("base_url") or desc.base_url
    key_env = dep.get("api_key_env")
    return Deployment(dep["name"], pid, base, (env.get(key_env) or None) if key_env else None,
                      key_env, int(dep.get("weight", 1)), bool(desc.keyless), cooldown)


class Catalogue:
    """Models by id, with the providers (and their deployments) that serve them."""

    def __init__(self, data: Mapping[str, Any], descriptors: Mapping[str, Any],
                 env: Mapping[str, str]) -> None:
        defaults = _policy_defaults(env)
        self.providers: dict[str, Provider] = {}
        for pid, conf in data["providers"].items():
            desc = descriptors[conf["descriptor"]]
            timeouts, retry, cooldown = _policies(conf, defaults)
            deployments = tuple(_deployment(pid, dep, desc, cooldown, env)
                                for dep in conf["deployments"])
            first = deployments[0]
            self.providers[pid] = Provider(
                id=pid, descriptor=desc, base_url=first.base_url, api_key=first.api_key,
                api_key_env=first.api_key_env, deployments=deployments, timeouts=timeouts,
                retry=retry, cooldown=cooldown)
        self.models: dict[str, Model] = {}
        for mid, conf in data["models"].items():
            self.models[mid] = Model(
                id=mid, provider=self.providers[conf["provider"]], upstream=conf["upstream"],
                owned_by=conf["owned_by"], created=conf["created"],
                endpoints=tuple(conf["endpoints"]), pricing=conf["pricing"],
                context_window=conf.get("context_window"),
                max_output_tokens=conf.get("max_output_tokens"),
                dimensions=tuple(conf.get("dimensions", ())),
                fallbacks=tuple(conf.get("fallbacks", ())),
                reasoning=conf.get("reasoning") is True)
        self.defaults: dict[str, str] = dict(data.get("defaults") or {})
        # alias -> model id (normalized: automatic upstream names plus the file's own).
        self.aliases: dict[str, str] = dict(data.get("aliases") or {})

    def get(self, model_id: str) -> Model | None:
        """The model with this id or alias (an alias is another name for the same Model)."""
        model = self.models.get(model_id)
        if model is None:
            target = self.aliases.get(model_id)
            if target is not None:
                model = self.models.get(target)
        return model

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
    as_dicts = {pid: {"endpoints": d.endpoints, "keyless": d.keyless}
                for pid, d in descriptors.items()}
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
