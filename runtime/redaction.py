"""Masking the operator's identifiers out of text a client will read.

An upstream's error text is written for the upstream's own customer, the operator: it may
name the operator's organization or project, quote a fragment of the operator's key, or an
account email. `mask(text)` replaces every such identifier with `[redacted]`:

- organization, project and user ids (`org-…`, `proj_…`, `user-…`);
- API keys and key fragments in every provider's style: `sk-…` (OpenAI, Anthropic's
  `sk-ant-…`, OpenRouter's `sk-or-…`), `gsk_…`, `xai-…`, `pplx-…`, `fw_…`, `jina_…`, `pa-…`,
  Google's `AIza…` and `ya29.…`, and any word holding a run of asterisks (the masked
  `sk-ab***yz` or `*****1234` forms providers print);
- email addresses;
- the operator's configured upstream key values (`register_secrets`, called when the
  catalogue is loaded), wherever they appear.

`mask_body(raw)` does the same to a whole error body kept byte for byte: a JSON body has
every string masked (and is re-encoded only when something changed); another body is masked
as text. `mask_json(value)` masks the strings of a decoded JSON value in place.

Masking runs only on error text, never on answers, so its cost is off the hot path. Its
output never matches a pattern again (masking twice is masking once).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

# Configured key values shorter than this are not masked by value: a key of a few characters
# (a local server's placeholder) would mangle ordinary words.
MIN_SECRET_CHARS = 8

# Each pattern starts only where a token starts (the lookbehinds), so text that never
# matches -- a long run of word characters, a base64 blob -- is scanned in linear time.
_START = r"(?<![A-Za-z0-9_.%+*\-])"
_PATTERNS = re.compile("|".join((
    # ids are random: requiring a digit keeps words such as "org-specific" intact
    r"\b(?:org|user)-(?=[A-Za-z]*[0-9])[A-Za-z0-9]{6,}",
    r"\bproj_[A-Za-z0-9]{6,}",
    # (a dot may be inside a key, never its last character: that one ends the sentence)
    r"\bsk-(?:[A-Za-z0-9_\-\*\.]*[A-Za-z0-9_\-\*])?",
    r"\b(?:gsk|fw|jina)_[A-Za-z0-9_\-\*]{6,}",
    r"\b(?:xai|pplx|pa)-[A-Za-z0-9_\-\*]{10,}",
    r"\bAIza[A-Za-z0-9_\-\*]{6,}",
    r"\bya29\.[A-Za-z0-9_\-\.\*]{5,}[A-Za-z0-9_\-\*]",
    _START + r"[A-Za-z0-9_\-\.]*\*{3,}(?:[A-Za-z0-9_\-\.\*]*[A-Za-z0-9_\-\*])?",
    _START + r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
)))

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secrets(values: Iterable[str | None]) -> None:
    """Add configured key values to mask wherever they appear (longest first, so a key
    that contains another is masked whole)."""
    global _secrets
    with _lock:
        found = set(_secrets)
        found.update(v for v in values if v and len(v) >= MIN_SECRET_CHARS)
        _secrets = tuple(sorted(found, key=len, reverse=True))


def mask(text: str) -> str:
    """`text` with the operator's identifiers replaced by `[redacted]`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _PATTERNS.sub(REDACTED, text)


def mask_json(value: Any) -> Any:
    """A decoded JSON value with every string (keys included) masked; dicts and lists are
    changed in place and returned."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = mask_json(item)
    elif isinstance(value, dict):
        for key in list(value):
            item = value.pop(key)
            value[mask(key) if isinstance(key, str) else key] = mask_json(item)
    return value


def mask_body(raw: bytes) -> bytes:
    """An error body with the operator's identifiers masked; the same bytes when it holds
    none."""
    try:
        payload = json.loads(raw)
    except ValueError:   # not JSON (nor UTF-8 text JSON can read): mask it as text
        text = raw.decode("utf-8", "replace")
        masked = mask(text)
        return raw if masked == text else masked.encode()
    masked = mask_json(json.loads(raw))
    return raw if masked == payload else json.dumps(masked).encode()
