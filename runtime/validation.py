"""Request validation against the generated pydantic models of each dialect's spec.

A body that does not match its schema is a 400 whose message names the field path and
the problem, e.g. `messages[0].content: Input should be a valid string`. The validated
model is discarded: the client's dict is forwarded as sent, so no field is lost.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ValidationError

from runtime.errors import BadRequest


def field_path(loc: tuple[Any, ...], body: Any) -> str:
    """`('messages', 0, 'tool', 'tool_call_id')` -> `messages[0].tool_call_id`.

    pydantic puts union tags and member type labels into error locations; a segment is
    kept only when it names a key or index of the body actually sent (or a missing field
    at the end), so the path is the one the client can find in its own request."""
    out = ""
    node = body
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            out += f"[{part}]"
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and (part in node or last):
            out += f".{part}" if out else part
            node = node.get(part)
    return out


class Validator:
    def __init__(self, model_modules: dict[str, str]) -> None:
        self._modules = model_modules
        self._cache: dict[tuple[str, str], type[BaseModel]] = {}

    def model(self, dialect: str, schema: str) -> type[BaseModel]:
        key = (dialect, schema)
        found = self._cache.get(key)
        if found is None:
            module = importlib.import_module(self._modules[dialect])
            found = getattr(module, schema)
            self._cache[key] = found
        return found

    def check(self, dialect: str, schema: str, body: dict[str, Any]) -> None:
        model = self.model(dialect, schema)
        try:
            model.model_validate(body, strict=True)
        except ValidationError as exc:
            raise _bad_request(exc, body) from None


def _bad_request(exc: ValidationError, body: dict[str, Any]) -> BadRequest:
    errors = exc.errors(include_url=False)
    # Prefer the most specific problem: unions report one error per member.
    first = max(errors, key=lambda e: len(e["loc"]))
    path = field_path(tuple(first["loc"]), body)
    more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = path or "body"
    return BadRequest(f"Invalid request: {where}: {first['msg']}{more}", param=path or None)
