"""The Anthropic Messages translation (runtime.clients.messages_translation) against its
fixture files (tests/fixtures/messages), in the format and with the runner every translator
shares (tests/translation_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.translation_fixtures import check, files


@pytest.mark.parametrize("path", files("messages"), ids=lambda p: p.stem)
def test_translation_fixture(path: Path) -> None:
    check(path)
