"""Fixtures the end-to-end modules share. A module defines its own `fakes` (one fake upstream
or a dict of them, started with `start_fakes`) and its `gw` (started with `gateway_factory`);
`up` and `acct` below then work on them. After every test, each account the test created
with `Gateway.account` is audited against its ledger (`money_is_accounted_for`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import (
    LIVE,
    START_CREDITS,
    Gateway,
    openai_client,
    reset_fakes,
    start_gateway,
)


@pytest.fixture(autouse=True)
def money_is_accounted_for():
    """Fail a test after which an account it created disagrees with its ledger: balance and
    debt equal to the sums of the entries, open holds matching hold entries, usage rows
    matching settle entries. One consistent snapshot per account, so requests still
    settling (a stream's last bytes) cannot make it fail; a gateway the test stopped is
    left alone."""
    before = {id(gw): len(gw.created) for gw in LIVE}
    yield
    problems = []
    for gw in list(LIVE):
        for name in gw.created[before.get(id(gw), 0):]:
            report = gw.audit(name)
            if not report["ok"]:
                problems.append(f"{name}: {report['problems']}")
    if problems:
        pytest.fail("money not accounted for: " + "; ".join(problems))


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory):
    """start(workdir, env, **kw) -> Gateway, stopped when the module ends. `workdir` is a
    directory, or a name for a fresh temporary one."""
    started: list[Gateway] = []

    def start(workdir: str | Path, env: dict[str, str], **kw) -> Gateway:
        if isinstance(workdir, str):
            workdir = tmp_path_factory.mktemp(workdir)
        gateway = start_gateway(workdir, env, **kw)
        started.append(gateway)
        return gateway

    yield start
    for gateway in reversed(started):
        gateway.stop()


@pytest.fixture(scope="module")
def start_fakes():
    """start(fake) or start(name=fake, ...): starts fake upstreams (one, or a dict of them),
    stopped when the module ends."""
    started: list = []

    def start(fake=None, **named):
        if fake is not None:
            started.append(fake.start())
            return fake
        for each in named.values():
            started.append(each.start())
        return named

    yield start
    for fake in reversed(started):
        fake.stop()


@pytest.fixture
def up(fakes):
    """The module's fakes, reset before the test."""
    return reset_fakes(fakes)


@pytest.fixture
def acct(gw):
    """A new account with START_CREDITS and an openai client with its key: (id, client)."""
    account, secret = gw.account(START_CREDITS)
    return account, openai_client(gw, secret)
