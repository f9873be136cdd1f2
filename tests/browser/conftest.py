"""Headless Chromium for the console's browser tests: Debian's /usr/bin/chromium driven by
Playwright (never `playwright install`), a fresh profile per test, and the gateway under
gunicorn. Every test here is skipped, naming the reason, when Chromium or Playwright is
missing (.ci/run installs Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.harness import Gateway, start_gateway

CHROMIUM = os.environ.get("TOKMODEL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ADMIN_TOKEN = "browser-operator-token-0123456789"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def _skip_reason() -> str | None:
    if sync_playwright is None:
        return "playwright (PyPI) is not installed: pip install playwright"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM}: apt-get install -y chromium"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def playwright_driver():
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright_driver, tmp_path):
    """A fresh Chromium profile (one persistent context) for one test."""
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
        args=CHROMIUM_ARGS)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def _gateway(tmp_path_factory, name: str) -> Gateway:
    return start_gateway(tmp_path_factory.mktemp(name), {"TOKMODEL_ADMIN_TOKEN": ADMIN_TOKEN})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = _gateway(tmp_path_factory, "console-browser")
    yield gw
    gw.stop()


@pytest.fixture
def own_gateway(tmp_path_factory):
    """A gateway for one test (its throttle counts start at zero)."""
    gw = _gateway(tmp_path_factory, "console-browser-own")
    yield gw
    gw.stop()
