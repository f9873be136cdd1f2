"""Request bodies of the admin API, validated against specs/admin.openapi.yaml.

The OpenAPI document is loaded once; `read_body(req, schema)` reads one JSON object of at
most `MAX_BODY_BYTES`, numbers kept exact (decimal.Decimal, never float), and validates it
against `#/components/schemas/<schema>` with jsonschema (OpenAPI 3.1 schemas are JSON Schema
2020-12). A body that is not JSON, not an object or not valid is a 400 whose message and
`param` name the field. pydantic's strict float fields (codegen's generated models) would
lose the exactness of amounts, hence jsonschema on the same document.
`to_nano(value, field)` turns an exact amount of credits into nano-credits.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import falcon
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from runtime.billing.credits import parse_credits
from runtime.errors import BadRequest
from runtime.store.ledger import MAX_NANO

SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "admin.openapi.yaml"
MAX_BODY_BYTES = 64 * 1024


@cache
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


@cache
def spec_json() -> bytes:
    return json.dumps(spec(), indent=1).encode("utf-8")


@cache
def _validator(schema: str) -> Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{schema}", "components": spec()["components"]}
    return Draft202012Validator(root)


def _reject_constant(text: str) -> None:
    raise ValueError(f"{text} is not a number")


def read_body(req: falcon.Request, schema: str) -> dict[str, Any]:
    if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"The body is larger than {MAX_BODY_BYTES} bytes.", status=413)
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"The body is larger than {MAX_BODY_BYTES} bytes.", status=413)
    try:
        body = json.loads(raw or b"null", parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    error = best_match(_validator(schema).iter_errors(body))
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path)
        if error.validator == "additionalProperties":
            unknown = sorted(set(body) - set(error.schema.get("properties", {})))
            path = unknown[0] if unknown else path
            raise BadRequest(f"Invalid request: {path}: unknown field.", param=path or None)
        if error.validator == "required":
            path = error.message.split("'")[1] if "'" in error.message else path
            raise BadRequest(f"Invalid request: {path}: required.", param=path or None)
        where = path or "body"
        raise BadRequest(f"Invalid request: {where}: {error.message}", param=path or None)
    return body


def to_nano(value: Any, field: str) -> int:
    """Exact credits (an int or Decimal from `read_body`) -> nano-credits, or a 400."""
    try:
        nano = parse_credits(str(value))
    except ValueError:
        raise BadRequest(f"Invalid request: {field}: amounts are exact to 0.000000001 credit; "
                         "use at most 9 decimals.", param=field) from None
    if nano > MAX_NANO:
        raise BadRequest(f"Invalid request: {field}: that amount is too large.", param=field)
    return nano
