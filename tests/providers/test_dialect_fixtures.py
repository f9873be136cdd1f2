"""The chat adapters of the translating dialects against their fixture files
(tests/fixtures/anthropic, tests/fixtures/gemini), in the format and with the runner every
translator shares (tests/translation_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.providers import CHAT_ADAPTERS
from runtime.sse import iter_events
from tests.translation_fixtures import CATALOGUE, check, comparable, files, load

FILES = files("anthropic", "gemini")


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path) -> None:
    check(path)


def test_streams_split_anywhere_give_the_same_chunks() -> None:
    """SSE bytes arrive in arbitrary pieces; CRLF may be split between two reads."""
    for path in FILES:
        fx = load(path)
        if fx["kind"] != "stream" or fx["client"][-1].get("error"):
            continue
        model = CATALOGUE.get(fx["model"])
        adapter = CHAT_ADAPTERS[model.provider.descriptor.dialect]
        raw = fx["upstream"].encode()
        pieces = [raw[i:i + 7] for i in range(0, len(raw), 7)]
        got = [comparable(c) for c in adapter.chunks(iter_events(pieces), model)]
        assert got == fx["client"], path.name
