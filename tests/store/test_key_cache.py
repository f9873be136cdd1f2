"""The process's cache of keys: bounded, oldest read dropped first, marked `cached`, and a
key that no longer authenticates forgotten (runtime/store/key_cache.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from runtime.store.key_cache import KeyCache
from runtime.store.records import KeyRecord


def _key(n: int) -> KeyRecord:
    return KeyRecord(f"key_{n:012d}", 1, "acme", f"k{n}", "tm-abcd…", datetime.now(UTC), None)


def test_at_most_size_keys_the_oldest_read_dropped_first() -> None:
    cache = KeyCache(size=3)
    for n in range(3):
        cache.remember(f"h{n}", _key(n))
    cache.remember("h0", _key(0))   # read again: the newest now
    cache.remember("h3", _key(3))
    assert cache.get("h1") is None
    assert [cache.get(f"h{n}").id for n in (0, 2, 3)] == [_key(n).id for n in (0, 2, 3)]
    assert all(cache.get(f"h{n}").cached for n in (0, 2, 3))
    cache.remember("h2", None)   # no longer authenticates
    assert cache.get("h2") is None and cache.get("h0") is not None
