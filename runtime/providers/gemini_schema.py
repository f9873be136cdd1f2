"""JSON Schema (as OpenAI clients write tool parameters and response schemas) to the OpenAPI
schema subset Gemini's `parameters` and `responseSchema` accept.

Local `$ref`s into `$defs`/`definitions` are inlined (recursion is cut at a fixed depth,
where the schema becomes an unconstrained object); `type: [X, "null"]` becomes `nullable`;
`const` becomes a one-value `enum`; keywords Gemini does not know (`additionalProperties`,
`$schema`, `strict`, ...) are left out. Type names are upper-cased as in Google's examples.
An object without properties is given none: Gemini rejects an empty `properties` map.
"""

from __future__ import annotations

from typing import Any

_KEEP = ("format", "title", "description", "nullable", "enum", "maxItems", "minItems",
         "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
         "example", "default", "minimum", "maximum", "propertyOrdering")
_MAX_DEPTH = 12


def to_gemini(schema: dict[str, Any]) -> dict[str, Any]:
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _convert(schema, defs, 0)


def _convert(node: Any, defs: dict[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return {"type": "OBJECT"}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        merged = {**(target or {}), **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, depth + 1)
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        if len(rest) < len(kind):
            out["nullable"] = True
        kind = rest[0] if len(rest) == 1 else None
        if len(rest) > 1:
            out["anyOf"] = [_convert({**node, "type": k}, defs, depth + 1) for k in rest]
    if isinstance(kind, str) and kind != "null":
        out["type"] = kind.upper()
    for key in _KEEP:
        if key in node and key not in out:
            out[key] = node[key]
    if "const" in node:
        out["enum"] = [node["const"]]
    if "enum" in out:
        out["enum"] = [str(v) for v in out["enum"] if v is not None]
        out.setdefault("type", "STRING")
    props = node.get("properties")
    if isinstance(props, dict) and props:
        out["properties"] = {name: _convert(sub, defs, depth + 1) for name, sub in props.items()}
        out.setdefault("type", "OBJECT")
    elif "required" in out:
        del out["required"]
    if "items" in node:
        out["items"] = _convert(node["items"], defs, depth + 1)
        out.setdefault("type", "ARRAY")
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list) and "anyOf" not in out:
            options = [o for o in node[key]
                       if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(options) < len(node[key]):
                out["nullable"] = True
            if len(options) == 1:
                out.update({k: v for k, v in _convert(options[0], defs, depth + 1).items()
                            if k not in out})
            elif options:
                out["anyOf"] = [_convert(o, defs, depth + 1) for o in options]
    if "allOf" in node and isinstance(node["allOf"], list):
        for sub in node["allOf"]:
            for k, v in _convert(sub, defs, depth + 1).items():
                out.setdefault(k, v)
    if out.get("type") == "ARRAY" and "items" not in out:
        out["items"] = {"type": "STRING"}
    if "required" in out:
        out["required"] = [r for r in out["required"] if r in out.get("properties", {})]
    return out
