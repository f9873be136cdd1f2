"""API key secrets: generation, hashing and the shapes shown to people.

A secret is `tm-` + 43 urlsafe characters (256 random bits). Only its sha256 hex digest is
stored: the secret is high-entropy, so a fast unsalted hash is enough and keeps
authentication to one indexed lookup. A key id is `key_` + 12 hex characters; the display
prefix is the first 7 characters of the secret followed by an ellipsis.
"""

from __future__ import annotations

import hashlib
import secrets

SECRET_PREFIX = "tm-"
SECRET_LENGTH = len(SECRET_PREFIX) + 43


def new_secret() -> str:
    """A fresh key secret; it is shown once and never stored."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:7] + "…"


def looks_like_secret(secret: str) -> bool:
    """Cheap shape check so malformed keys are refused without a database round trip."""
    return (
        isinstance(secret, str)
        and len(secret) == SECRET_LENGTH
        and secret.startswith(SECRET_PREFIX)
    )
