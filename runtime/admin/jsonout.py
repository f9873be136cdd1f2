"""JSON answers of the admin and account APIs, with amounts exact to the nano-credit.

`Credits(nano)` is written as a bare JSON number of credits (`12.5`, `0.000000001`), never a
float: a binary float cannot carry 9 decimals of large balances. `dumps` writes dicts, lists,
strings, ints, bools, None, `Credits` and aware datetimes (ISO 8601 in UTC, `Z`); `iso`
formats one time the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from runtime.billing.credits import format_credits


class Credits:
    __slots__ = ("nano",)

    def __init__(self, nano: int) -> None:
        self.nano = nano


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _write(obj: Any, out: list[str]) -> None:
    if isinstance(obj, dict):
        out.append("{")
        for i, (name, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(name)))
            out.append(":")
            _write(value, out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _write(value, out)
        out.append("]")
    elif isinstance(obj, Credits):
        out.append(format_credits(obj.nano))
    elif isinstance(obj, datetime):
        out.append(json.dumps(iso(obj)))
    else:
        out.append(json.dumps(obj))


def dumps(obj: Any) -> bytes:
    out: list[str] = []
    _write(obj, out)
    return "".join(out).encode("utf-8")
