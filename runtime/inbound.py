"""Reading what a client sent: its API key and a bounded JSON body.

Bodies larger than the configured limit are refused with 413 before they are read whole;
malformed JSON and non-object bodies are 400s that say what is wrong. A body sent with
`Transfer-Encoding: chunked` (no Content-Length) is read to its end under the same limit:
`body_stream` gives the stream to read for either framing.
"""

from __future__ import annotations

import json
import math
from typing import IO, Any

import falcon

from runtime.errors import BadRequest, PayloadTooLarge

# Deeper bodies are refused: no request of any API this gateway serves needs more, and
# every step after parsing (validation, translation, re-encoding) walks the body.
MAX_DEPTH = 128


def api_key(req: falcon.Request) -> str | None:
    """The bearer token, or Anthropic's x-api-key header (its SDK may send either)."""
    auth = req.get_header("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return req.get_header("X-Api-Key") or None


def is_chunked(req: falcon.Request) -> bool:
    """True when the body comes with chunked transfer coding rather than a Content-Length."""
    coding = req.get_header("Transfer-Encoding")
    return (req.content_length is None and coding is not None
            and coding.rsplit(",", 1)[-1].strip().lower() == "chunked")


def body_stream(req: falcon.Request) -> IO[bytes]:
    """The stream holding the request body, ending where the body ends.

    Falcon's `bounded_stream` stops after Content-Length bytes, so without one (chunked
    transfer coding) it is empty. gunicorn decodes the chunked coding itself and its
    `wsgi.input` ends after the last chunk, so that stream is read to its end instead; the
    caller bounds what it reads (the body limit)."""
    return req.stream if is_chunked(req) else req.bounded_stream


def read_raw(req: falcon.Request, limit: int) -> bytes:
    """The whole body, 413 past `limit` bytes (declared, or counted as a chunked body
    arrives, never reading more than one byte past the limit)."""
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of "
                              f"{limit} bytes.")
    if not is_chunked(req):
        raw = req.bounded_stream.read(limit + 1)
    else:
        # Read on to the end: a WSGI input stream may return less than asked before it.
        parts: list[bytes] = []
        size = 0
        while size <= limit and (more := req.stream.read(limit + 1 - size)):
            parts.append(more)
            size += len(more)
        raw = b"".join(parts)
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    return raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


def _too_deep(body: Any) -> bool:
    """True when arrays and objects nest deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


# json.loads builds a decoder per call when given hooks; one is enough.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def read_json(req: falcon.Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """(raw bytes, parsed object) of a JSON request body."""
    raw = read_raw(req, limit)
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object is required.")
    try:
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise BadRequest(f"The request body nests arrays and objects more than {MAX_DEPTH} "
                         "levels deep.") from None
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        pos = getattr(exc, "pos", None)
        where = f" at byte {pos}" if pos is not None else ""
        raise BadRequest(f"The request body is not valid JSON: {msg}{where}.") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if _too_deep(body):
        raise BadRequest(f"The request body nests arrays and objects more than {MAX_DEPTH} "
                         "levels deep.")
    return raw, body
