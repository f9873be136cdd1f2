"""JSON on the request path: orjson where it can, the standard library where orjson cannot.

orjson encodes and decodes the small documents of a chat request 5 to 14 times faster than
the standard library (measured: 20 us of the ~1 ms a request costs). It refuses what the
standard library takes in two places, both handled here by falling back: integers beyond
64 bits or a lone surrogate in a string (an upstream's text may hold one: it is written as
its JSON escape), and (decoding) NaN/Infinity literals, which the standard library reads and
only the gateway's own input checks (runtime/inbound.py) refuse. Output is UTF-8 JSON bytes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an int beyond 64 bits, a non-str key, a lone surrogate
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "backslashreplace")


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
