"""The console's server secret and the CSRF tokens it signs.

Contract:
- `load_secret(database_url, env)` returns the server secret: `TOKMODEL_CONSOLE_SECRET` when
  set, otherwise the contents of `console-secret` next to the SQLite database (or
  `var/console-secret` in the working directory for other databases), created once with
  mode 0600 and shared by every worker process that reads the same file.
- `Signer.csrf_token(binding)` / `Signer.check_csrf(binding, token)`: a form token derived
  from the server-side session's random binding (or from the pre-login nonce cookie),
  compared in constant time.
Nothing here logs; secrets and tokens never appear in exceptions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger("tokmodel.console")

SESSION_SECONDS = 12 * 3600  # the default life of a console session
SECRET_ENV = "TOKMODEL_CONSOLE_SECRET"
SECRET_FILE_NAME = "console-secret"
_MIN_SECRET_CHARS = 32


def secret_path(database_url: str) -> Path:
    """Where the generated secret lives: beside a SQLite file, else ./var/console-secret."""
    try:
        url = make_url(database_url)
    except Exception:  # noqa: BLE001 - any unparsable URL falls back to the working dir
        url = None
    if url is not None and url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database).expanduser().resolve().parent / SECRET_FILE_NAME
    return Path("var") / SECRET_FILE_NAME


def load_secret(database_url: str, env: Mapping[str, str] | None = None) -> bytes:
    """The console's HMAC key (see the module docstring for where it comes from)."""
    env = os.environ if env is None else env
    configured = env.get(SECRET_ENV, "")
    if configured:
        if len(configured) < _MIN_SECRET_CHARS:
            raise ValueError(f"{SECRET_ENV} must be at least {_MIN_SECRET_CHARS} characters")
        return configured.encode("utf-8")
    return _file_secret(secret_path(database_url))


def _file_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(50):
        try:
            text = path.read_text("ascii").strip()
        except FileNotFoundError:
            text = ""
            _create_secret_file(path)
            continue
        if len(text) >= _MIN_SECRET_CHARS:
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by other users; chmod 600 it", path)
            return text.encode("ascii")
        time.sleep(0.01)  # another process is creating it
    raise RuntimeError(f"{path} does not hold a usable console secret; delete it to regenerate")


def _create_secret_file(path: Path) -> None:
    """Write a fresh secret atomically: temp file (0600) then link; the first process wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


class Signer:
    """Signs and checks the console's form tokens with one server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, *parts: str) -> str:
        message = "\x1f".join(parts).encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    # forms

    def csrf_token(self, binding: str) -> str:
        return self._mac("csrf", binding)

    def check_csrf(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token:
            return False
        return hmac.compare_digest(self.csrf_token(binding), token)
