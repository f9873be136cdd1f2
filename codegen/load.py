"""Read the inputs of codegen: YAML files of specs/ and the catalogue, with their file names.

Descriptors are resolved here: `extends` chains are merged (the child wins, mappings merge
key by key, `abstract` is never inherited) so later steps see one flat descriptor each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class LoadError(Exception):
    """A file that cannot be read or parsed; the message names the file."""


@dataclass(frozen=True)
class Inputs:
    root: Path
    descriptors: dict[str, dict[str, Any]]     # id -> raw descriptor as written
    descriptor_files: dict[str, Path]
    catalogue: dict[str, Any]
    catalogue_file: Path
    endpoints: dict[str, Any]
    dialects: dict[str, Any]                   # dialect -> {endpoints: [...]}
    openapi_files: list[Path]


def read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise LoadError(f"{path}: invalid YAML: {exc}") from exc


def load_inputs(root: Path, catalogue_file: Path | None = None) -> Inputs:
    specs = root / "specs"
    files = {p.stem: p for p in sorted((specs / "providers").glob("*.yaml"))}
    catalogue_file = catalogue_file or root / "providers.yaml"
    return Inputs(
        root=root,
        descriptors={pid: read_yaml(path) or {} for pid, path in files.items()},
        descriptor_files=files,
        catalogue=read_yaml(catalogue_file) or {},
        catalogue_file=catalogue_file,
        endpoints=read_yaml(specs / "endpoints.yaml") or {},
        dialects=read_yaml(specs / "dialects.yaml") or {},
        openapi_files=sorted((specs / "openapi").glob("*.yaml")),
    )


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve(descriptors: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Flatten `extends` chains; returns (resolved descriptors, errors)."""
    resolved: dict[str, dict[str, Any]] = {}
    errors: list[str] = []

    def flat(pid: str, seen: tuple[str, ...]) -> dict[str, Any] | None:
        if pid in resolved:
            return resolved[pid]
        raw = descriptors[pid]
        parent_id = raw.get("extends")
        if parent_id is None:
            resolved[pid] = dict(raw)
            return resolved[pid]
        if parent_id in seen:
            errors.append(f"specs/providers/{pid}.yaml: extends: cycle {' -> '.join(seen)}")
            return None
        if parent_id not in descriptors:
            errors.append(f"specs/providers/{pid}.yaml: extends: no descriptor '{parent_id}'")
            return None
        parent = flat(parent_id, (*seen, parent_id))
        if parent is None:
            return None
        merged = _merge({k: v for k, v in parent.items() if k != "abstract"}, raw)
        merged.pop("extends", None)
        resolved[pid] = merged
        return merged

    for pid in descriptors:
        flat(pid, (pid,))
    return resolved, errors
