"""The closed vocabulary of request-mapping operations that provider descriptors use.

Generated translators (generated/translators/*.py) call these functions, in the order
reject, drop, range, enum, enum_map, default, set, rename/nest, to turn a client's request body
into the one a provider accepts. They mutate the body dict in place. A path is dotted
(`stream_options.include_usage`) and may step into every element of a list with `[]`
(`messages[].name`). A value a provider cannot honour raises `MappingError`, which the
runtime renders as a 400 naming the field. This module must never import generated/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_MISSING = object()


class MappingError(ValueError):
    """A client value the provider cannot take; `param` is the field path."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _slots(body: Any, path: str) -> Iterator[tuple[dict, str, str]]:
    """Yield (parent dict, key, concrete path) for every place `path` names in body."""
    parts = path.split(".")

    def walk(node: Any, i: int, shown: str) -> Iterator[tuple[dict, str, str]]:
        if not isinstance(node, dict):
            return
        part = parts[i]
        many = part.endswith("[]")
        key = part[:-2] if many else part
        here = f"{shown}.{key}" if shown else key
        if i == len(parts) - 1 and not many:
            yield node, key, here
            return
        child = node.get(key, _MISSING)
        if child is _MISSING:
            return
        if many:
            if not isinstance(child, list):
                return
            for n, item in enumerate(child):
                if i == len(parts) - 1:
                    continue
                yield from walk(item, i + 1, f"{here}[{n}]")
        else:
            yield from walk(child, i + 1, here)

    yield from walk(body, 0, "")


def _present(body: Any, path: str) -> Iterator[tuple[dict, str, str]]:
    for parent, key, shown in _slots(body, path):
        if key in parent and parent[key] is not None:
            yield parent, key, shown


def _ensure_parent(body: dict, path: str) -> tuple[dict, str]:
    *heads, last = path.split(".")
    node = body
    for head in heads:
        child = node.get(head)
        if not isinstance(child, dict):
            child = {}
            node[head] = child
        node = child
    return node, last


def reject(body: dict, path: str, provider: str) -> None:
    """Refuse the request when the field is set: the provider cannot honour it."""
    for _parent, _key, shown in _present(body, path):
        raise MappingError(shown, f"'{shown}' is not supported by provider '{provider}'.")


def drop(body: dict, path: str) -> None:
    """Remove the field silently: the provider does not know it and ignoring it is harmless."""
    for parent, key, _shown in list(_slots(body, path)):
        parent.pop(key, None)


def check_range(body: dict, path: str, low: float | None, high: float | None,
                provider: str) -> None:
    """Refuse a number outside [low, high] for this provider; never clamp silently."""
    for parent, key, shown in _present(body, path):
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise MappingError(
                shown, f"'{shown}' must be within {bounds} for provider '{provider}', "
                f"got {value}.")


def check_enum(body: dict, path: str, allowed: list, provider: str) -> None:
    """Refuse a value the provider does not accept (Groq transcribes to no srt or vtt);
    the message lists the values it does accept."""
    for parent, key, shown in _present(body, path):
        value = parent[key]
        if not any(value == ok and isinstance(value, bool) == isinstance(ok, bool)
                   for ok in allowed):
            listed = ", ".join(repr(ok) for ok in allowed)
            raise MappingError(shown, f"'{shown}' must be one of {listed} for provider "
                               f"'{provider}', got {value!r}.")


def enum_map(body: dict, path: str, mapping: dict) -> None:
    """Translate enumerated values; values not in the mapping pass unchanged. JSON has one
    number type, so `0.0` matches a key `0` (and a boolean matches only a boolean)."""
    for parent, key, _shown in _present(body, path):
        value = parent[key]
        if not isinstance(value, str | int | float):
            continue
        for source, target in mapping.items():
            if value == source and isinstance(value, bool) == isinstance(source, bool):
                parent[key] = target
                break


def default(body: dict, path: str, value: Any) -> None:
    """Send `value` when the client sent nothing for the field."""
    if "[]" in path:
        for parent, key, _shown in _slots(body, path):
            parent.setdefault(key, value)
        return
    parent, key = _ensure_parent(body, path)
    if parent.get(key) is None:
        parent[key] = value


def set_value(body: dict, path: str, value: Any) -> None:
    """Always send `value`, whatever the client sent."""
    if "[]" in path:
        for parent, key, _shown in _slots(body, path):
            parent[key] = value
        return
    parent, key = _ensure_parent(body, path)
    parent[key] = value


def rename(body: dict, path: str, target: str) -> None:
    """Move a top-level or dotted field to another dotted path (a nest when it goes deeper)."""
    parent, key = _ensure_parent_if_present(body, path)
    if parent is None:
        return
    value = parent.pop(key)
    dest, last = _ensure_parent(body, target)
    dest[last] = value


def nest(body: dict, path: str, under: str) -> None:
    """Move a field, keeping its name, under the object at `under` (created when missing)."""
    rename(body, path, f"{under}.{path.rsplit('.', 1)[-1]}")


def _ensure_parent_if_present(body: dict, path: str) -> tuple[dict | None, str]:
    node: Any = body
    *heads, last = path.split(".")
    for head in heads:
        node = node.get(head) if isinstance(node, dict) else None
    if isinstance(node, dict) and node.get(last) is not None:
        return node, last
    if isinstance(node, dict):
        node.pop(last, None)  # an explicit null is "not sent"
    return None, last
