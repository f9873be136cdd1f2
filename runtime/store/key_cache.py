"""The keys a process authenticated lately, so that a request need not read its key first.

Contract:
- `KeyCache.get(secret_hash)` is the KeyRecord read last for that secret, marked `cached`;
  `remember(secret_hash, key)` keeps a fresh read (None, a key that no longer authenticates,
  forgets it). At most `size` keys are kept; the oldest is dropped first.
- A cached key may be stale: revoked, its limits or its account changed since. It is safe
  because it is used only where it is checked: the hold of a request authenticated from the
  cache verifies, in its own write, that the key's `version` (bumped by a trigger on every
  change a request is admitted on: schema.KEY_VERSION_COLUMNS) is unchanged, the key
  unrevoked and the account enabled (Store.hold's `key_check`); a change committed before
  the hold refuses it, and the pipeline decides the request again on a fresh read
  (runtime/pipeline/run.py). A refusal decided on a cached key is also decided again on a
  fresh read. So a revocation or a new limit applies to every request held after it
  commits, as with a read per request, on every process and node.
- Only hashes are kept, never secrets; nothing is cached for an unknown secret (each costs
  its read, as before).

Why: the key's read is the one statement before the hold that every request made (about 6 %
of a worker's samples on SQLite under load, a round trip on PostgreSQL), for a row that
almost never changes. The account's name, also in a KeyRecord, is never checked: no request
is admitted on it.
"""

from __future__ import annotations

from dataclasses import replace

from .records import KeyRecord

CACHED_KEYS = 10_000


class KeyCache:
    def __init__(self, size: int = CACHED_KEYS) -> None:
        self._size = size
        self._keys: dict[str, KeyRecord] = {}

    def get(self, secret_hash: str) -> KeyRecord | None:
        return self._keys.get(secret_hash)

    def remember(self, secret_hash: str, key: KeyRecord | None) -> None:
        if key is None:
            self._keys.pop(secret_hash, None)
            return
        keys = self._keys
        keys.pop(secret_hash, None)   # re-inserted last: the newest
        if len(keys) >= self._size:
            keys.pop(next(iter(keys), None), None)   # the oldest
        keys[secret_hash] = replace(key, cached=True)
