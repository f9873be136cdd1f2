"""A translated provider's own reasoning state, carried through a client format that has no
place for it and given back to that provider on the next request.

Providers refuse a tool loop whose earlier steps come back without the opaque state they
issued: Anthropic wants its signed thinking blocks at the head of an assistant turn (chat's
`thinking_blocks`), Gemini 3 wants each function call's thought signature (chat's
`tool_calls[].extra_content.google.thought_signature`). Clients of another format keep only
what their own format has, so the gateway packs that state into an opaque field the client
keeps and sends back verbatim: the Responses API's reasoning item `encrypted_content`
(runtime/clients/responses_translation.py), an Anthropic Messages `thinking` block's
`signature` (runtime/clients/messages_translation.py).

Encoding (`encode_carried`): `tmr1.` + base64url of a JSON object `{"dialect": <the provider's
dialect>, "thinking_blocks": [...], "signatures": {call id: signature}}`, readable, not
encrypted (the state is the provider's own, already opaque). `decode_carried` gives the object
back, or None for anything this gateway did not write (another provider's own state, a
truncated or altered value): such state is dropped, never forwarded, never an error. State
goes back only to the dialect that issued it (`for_dialect`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

CARRIED_PREFIX = "tmr1."


def encode_carried(dialect: str, state: Mapping[str, Any]) -> str:
    """The opaque value carrying `dialect`'s own reasoning state (`thinking_blocks`:
    Anthropic's signed thinking blocks; `signatures`: call id -> Gemini thought signature)."""
    payload = json.dumps({"dialect": dialect, **state}, separators=(",", ":"))
    return CARRIED_PREFIX + base64.urlsafe_b64encode(payload.encode()).decode()


def decode_carried(content: Any) -> dict[str, Any] | None:
    """The state of a value this gateway made (with its `dialect`), or None."""
    if not isinstance(content, str) or not content.startswith(CARRIED_PREFIX):
        return None
    try:
        state = json.loads(base64.urlsafe_b64decode(content[len(CARRIED_PREFIX):]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("dialect"), str) else None


def for_dialect(content: Any, dialect: str | None) -> dict[str, Any] | None:
    """The state `content` carries when it was written for `dialect`; None otherwise."""
    state = decode_carried(content)
    return state if state is not None and dialect and state["dialect"] == dialect else None


def carried_state(message: Mapping[str, Any]) -> dict[str, Any]:
    """The provider reasoning state of a chat assistant message (or stream delta): its
    `thinking_blocks` and its tool calls' Gemini thought signatures, keyed by call id."""
    state: dict[str, Any] = {}
    blocks = [b for b in message.get("thinking_blocks") or () if isinstance(b, dict)]
    if blocks:
        state["thinking_blocks"] = blocks
    signatures = {}
    for call in message.get("tool_calls") or ():
        signature = ((call.get("extra_content") or {}).get("google") or {}).get(
            "thought_signature") if isinstance(call, dict) else None
        if isinstance(signature, str) and signature and isinstance(call.get("id"), str):
            signatures[call["id"]] = signature
    if signatures:
        state["signatures"] = signatures
    return state


def merge_carried(state: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Add the thinking blocks and signatures of `more` to `state`."""
    state.setdefault("thinking_blocks", []).extend(more.get("thinking_blocks") or ())
    state.setdefault("signatures", {}).update(more.get("signatures") or {})
    for key in ("thinking_blocks", "signatures"):
        if not state[key]:
            del state[key]


def thinking_blocks(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Anthropic thinking blocks of a decoded state."""
    found = state.get("thinking_blocks")
    return [b for b in found if isinstance(b, dict)] if isinstance(found, list) else []


def signatures(state: Mapping[str, Any]) -> dict[str, str]:
    """The thought signatures (call id -> signature) of a decoded state."""
    found = state.get("signatures")
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


def sign_call(call: dict[str, Any], signature: str) -> None:
    """Put a Gemini thought signature on a chat tool call, where the Gemini adapter reads it."""
    call["extra_content"] = {"google": {"thought_signature": signature}}
