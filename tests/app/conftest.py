"""Fixtures of the console's tests: the app in process on a fresh SQLite store with an
account "acme", without and with the operator token."""

from __future__ import annotations

import pytest

from tests.app.test_console import ADMIN_TOKEN, build


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = build(tmp_path, monkeypatch)
    env.store.create_account("acme", 1_234_567_000)
    yield env
    env.store.close()


@pytest.fixture
def admin_env(tmp_path, monkeypatch):
    env = build(tmp_path, monkeypatch, admin_token=ADMIN_TOKEN)
    env.store.create_account("acme", 1_000_000_000)
    yield env
    env.store.close()
