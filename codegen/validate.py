"""Validate every codegen input and report all problems at once, each with file and path.

JSON Schemas in specs/ check shape; the rules in runtime.catalogue_rules and the checks here
check meaning (references between files, operations that cannot apply). Nothing is written
when any error is found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from codegen.load import Inputs
from runtime import catalogue_rules

SCHEMA_FILES = ("provider.schema.json", "catalogue.schema.json", "endpoints.schema.json",
                "dialects.schema.json")


def load_schemas(specs: Path) -> dict[str, dict[str, Any]]:
    return {name: json.loads((specs / name).read_text(encoding="utf-8")) for name in SCHEMA_FILES}


def _registry(schemas: dict[str, dict[str, Any]]) -> Registry:
    pairs = []
    for name, schema in schemas.items():
        resource = Resource.from_contents(schema)
        pairs += [(schema["$id"], resource), (name, resource)]
    return Registry().with_resources(pairs)


def _path(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def schema_errors(schemas: dict[str, dict[str, Any]], name: str, document: Any,
                  label: str) -> list[str]:
    registry = _registry(schemas)
    validator = jsonschema.Draft202012Validator(schemas[name], registry=registry)
    found = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{label}: {_path(e).lstrip('.') or '<root>'}: {e.message}" for e in found]


def _dialect_errors(pid: str, desc: dict[str, Any], dialects: dict[str, Any]) -> list[str]:
    """A descriptor's dialect must exist and serve every endpoint the descriptor declares:
    otherwise the runtime would route a request to a dialect with no adapter for it."""
    label = f"specs/providers/{pid}.yaml"
    dialect = desc.get("dialect")
    if dialect is None:
        return []
    if dialect not in dialects:
        return [f"{label}: dialect: '{dialect}' is not a dialect of specs/dialects.yaml "
                f"(known: {', '.join(sorted(dialects))})"]
    served = dialects[dialect].get("endpoints") or []
    return [f"{label}: endpoints.{kind}: the '{dialect}' dialect cannot serve '{kind}' "
            f"(specs/dialects.yaml lists {', '.join(served)})"
            for kind in desc.get("endpoints") or {} if kind not in served]


def _descriptor_errors(pid: str, desc: dict[str, Any]) -> list[str]:
    label = f"specs/providers/{pid}.yaml"
    if desc.get("abstract"):
        return []
    errors = [f"{label}: {key}: required for a servable descriptor"
              for key in ("dialect", "base_url", "auth", "endpoints") if key not in desc]
    for kind, fields in (desc.get("request") or {}).items():
        if kind not in desc.get("endpoints", {}):
            errors.append(f"{label}: request.{kind}: the descriptor has no '{kind}' endpoint")
        for path, ops in fields.items():
            if "[]" in path and ({"rename", "nest"} & set(ops)):
                errors.append(f"{label}: request.{kind}.{path}: rename/nest cannot apply "
                              "inside a list")
    auth = desc.get("auth") or {}
    if auth.get("scheme") == "header" and "header" not in auth:
        errors.append(f"{label}: auth.header: required when scheme is header")
    if auth.get("scheme") == "query" and "param" not in auth:
        errors.append(f"{label}: auth.param: required when scheme is query")
    return errors


def validate(inputs: Inputs, resolved: dict[str, dict[str, Any]]) -> list[str]:
    specs = inputs.root / "specs"
    schemas = load_schemas(specs)
    errors: list[str] = []
    for pid, raw in inputs.descriptors.items():
        errors += schema_errors(schemas, "provider.schema.json", raw,
                                f"specs/providers/{pid}.yaml")
    dialect_schema_errors = schema_errors(schemas, "dialects.schema.json", inputs.dialects,
                                          "specs/dialects.yaml")
    errors += dialect_schema_errors
    for pid, desc in resolved.items():
        errors += _descriptor_errors(pid, desc)
        if not dialect_schema_errors:
            errors += _dialect_errors(pid, desc, inputs.dialects)
    cat_label = inputs.catalogue_file.name
    cat_schema_errors = schema_errors(schemas, "catalogue.schema.json", inputs.catalogue,
                                      cat_label)
    errors += cat_schema_errors
    if not cat_schema_errors:
        catalogue = catalogue_rules.normalize(inputs.catalogue)
        errors += [f"{cat_label}: {e}" for e in catalogue_rules.check(catalogue, resolved)]
    errors += schema_errors(schemas, "endpoints.schema.json", inputs.endpoints,
                            "specs/endpoints.yaml")
    return errors
