"""Start the real gateway under gunicorn for integration tests.

`start_gateway(workdir, env)` runs `tokmodel serve` in a subprocess on a free port with its
own SQLite database (or TOKMODEL_DATABASE_URL from env), waits for /readyz, and returns a
`Gateway` handle with a Store on the same database for creating accounts and keys and for
reading balances, and `Gateway.audit(account)` to check an account's money against its
ledger (`LIVE` lists the gateways running, for the integration tests' automatic audit).
Provider env vars (OPENAI_BASE_URL, OPENAI_API_KEY, ...) point the gateway
at fake upstream servers; all other provider keys are cleared so nothing reaches the internet.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from anthropic import Anthropic
from openai import OpenAI

from runtime.store import Store, open_store

POSTGRES_ENV = "TOKMODEL_TEST_POSTGRES_URL"

ROOT = Path(__file__).resolve().parent.parent
START_CREDITS = 5_000_000_000  # what the end-to-end tests' accounts start with (5 credits)
LIVE: list[Gateway] = []  # started and not yet stopped
SETTLE_TIMEOUT = 3.0  # seconds Gateway.settled waits for an account's holds to close


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.endswith("_API_KEY") or k.endswith("_BASE_URL") or k.startswith("TOKMODEL_"))}
    env.update(extra)
    return env


@dataclass
class Gateway:
    url: str
    db_url: str
    store: Store
    process: subprocess.Popen
    log_path: Path
    _accounts: int = field(default=0)
    created: list[str] = field(default_factory=list)
    """Names of the accounts `account()` created, oldest first."""

    @property
    def base_url(self) -> str:
        """What the openai SDK takes as base_url."""
        return f"{self.url}/v1"

    def account(self, credits_nano: int = 10_000_000_000, name: str | None = None
                ) -> tuple[int, str]:
        """A new account with a balance and one key: (account id, secret)."""
        self._accounts += 1
        name = name or f"acct-{self._accounts}-{time.monotonic_ns()}"
        account = self.store.create_account(name, credits_nano)
        self.created.append(name)
        _, secret = self.store.create_key(name, "test")
        return account.id, secret

    def settled(self, account: int | str | None = None, timeout: float = SETTLE_TIMEOUT
                ) -> bool:
        """Wait until the account (None: every account) has no open hold (the gateway
        writes settlements just after the answer: runtime/billing/settle_behind.py), at
        most `timeout` seconds (a test may hold a stream open on purpose); whether none is
        left."""
        if isinstance(account, str):
            account = self.store.get_account(account).id
        deadline = time.monotonic() + timeout
        while any(account in (None, h.account_id) for h in self.store.list_holds()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def audit(self, account: int | str) -> dict[str, Any]:
        """The store's audit of an account (by id or name), once its answered requests are
        settled: {"ok": ..., "problems": [...]}."""
        self.settled(account)
        if not isinstance(account, str):
            account = self.store.get_account_by_id(account).name
        return self.store.audit(account)

    def balance(self, account_id: int) -> int:
        """The account's balance, once its answered requests are settled."""
        self.settled(account_id)
        return self.store.get_account_by_id(account_id).balance_nano

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_lines(self, request_id: str, timeout: float = SETTLE_TIMEOUT
                     ) -> list[dict[str, Any]]:
        """The access-log lines of a request, waiting at most `timeout` seconds for the
        first (a worker writes it just after the answer has been sent:
        runtime/after_answer.py)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [json.loads(line) for line in self.log().splitlines()
                     if line.startswith("{") and request_id in line]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    def stop(self) -> None:
        if self in LIVE:
            LIVE.remove(self)
        self.process.send_signal(signal.SIGINT)  # quick shutdown: tests hold keep-alives
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.store.close()


def start_gateway(workdir: Path, env: dict[str, str], workers: int = 1,
                  cwd: Path | None = None, pythonpath: Path | None = None) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db_url = env.get("TOKMODEL_DATABASE_URL") or f"sqlite:///{workdir / 'tokmodel.db'}"
    full_env = clean_env({"TOKMODEL_DATABASE_URL": db_url, **env})
    if pythonpath is not None:
        full_env["PYTHONPATH"] = str(pythonpath)
    store = open_store(db_url)
    log_path = workdir / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)],
            cwd=cwd or ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n"
                               + log_path.read_text(errors="replace"))
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                gateway = Gateway(url, db_url, store, process, log_path)
                LIVE.append(gateway)
                return gateway
        except requests.RequestException:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("gateway did not become ready:\n" + log_path.read_text(errors="replace"))


# -- helpers the end-to-end tests share --------------------------------------------------------

def openai_client(gw: Gateway, secret: str, **kw: object) -> OpenAI:
    """The official openai SDK on the gateway: no retries, so every call is one request."""
    kw.setdefault("timeout", 20)
    return OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0, **kw)


def anthropic_client(gw: Gateway, secret: str) -> Anthropic:
    """The official anthropic SDK on the gateway (it adds /v1 itself), no retries."""
    return Anthropic(base_url=gw.url, api_key=secret, max_retries=0, timeout=20)


def charged(gw: Gateway, account: int, start: int = START_CREDITS) -> int:
    """What the account has been charged since it was created with `start` nano-credits."""
    return start - gw.balance(account)


def usage_rows(gw: Gateway, account: int):
    """The account's usage rows, as the store lists them, once its requests are settled."""
    gw.settled(account)
    return gw.store.usage(gw.store.get_account_by_id(account).name)


def reset_fakes(fakes):
    """Reset one fake upstream or every fake in a dict of them; returns what it was given."""
    for fake in (fakes.values() if isinstance(fakes, dict) else [fakes]):
        fake.reset()
    return fakes


@contextmanager
def postgres_schema(prefix: str, missing: str) -> Iterator[str]:
    """The test PostgreSQL server's URL (POSTGRES_ENV) with a schema of its own, dropped
    afterwards; the test is skipped, saying `missing`, when no server is configured."""
    import pytest

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} not set: {missing}")
    import psycopg

    schema = prefix + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
