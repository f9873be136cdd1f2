"""Reading what a client sent: its API key and a bounded JSON body.

Bodies larger than the configured limit are refused with 413 before they are read whole;
malformed JSON and non-object bodies are 400s that say what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from runtime.errors import BadRequest, PayloadTooLarge


def api_key(req: falcon.Request) -> str | None:
    """The bearer token, or Anthropic's x-api-key header (its SDK may send either)."""
    auth = req.get_header("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return req.get_header("X-Api-Key") or None


def read_raw(req: falcon.Request, limit: int) -> bytes:
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of "
                              f"{limit} bytes.")
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    return raw


def read_json(req: falcon.Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """(raw bytes, parsed object) of a JSON request body."""
    raw = read_raw(req, limit)
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object is required.")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        pos = getattr(exc, "pos", None)
        where = f" at byte {pos}" if pos is not None else ""
        raise BadRequest(f"The request body is not valid JSON: {msg}{where}.") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return raw, body
