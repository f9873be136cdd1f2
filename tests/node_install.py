"""`npm ci` for the Node packages the end-to-end tests use (tests/node/, tests/node/cli/): run
once per lock file (a stamp in node_modules remembers which); without node/npm, or when
`npm ci` fails (no registry), the calling test is skipped with the reason."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


def npm_ci(directory: Path, timeout: float = 600) -> Path:
    """Installs `directory`'s package-lock.json into its node_modules; returns `directory`."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for this test (not on PATH)")
    lock = hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()
    stamp = directory / "node_modules" / ".tokmodel-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock:
        return directory
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=directory, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci in {directory} did not finish in {timeout:.0f} s "
                    "(registry unreachable?)")
    if done.returncode != 0:
        pytest.skip(f"npm ci in {directory} failed (registry unreachable?): "
                    + (done.stderr or done.stdout).strip()[-600:])
    stamp.write_text(lock)
    return directory
