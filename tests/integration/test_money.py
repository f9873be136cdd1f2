"""Money end to end: an account in debt is refused in each client format until a top-up
pays the debt, and `tokmodel accounts audit` checks the gateway's database. The debt is made
the way the gateway makes one (a settle whose cost exceeds the hold and the balance), on the
gateway's own database; requests go through the gateway under gunicorn to a strict fake."""

from __future__ import annotations

import json
import subprocess
import sys

import anthropic
import openai
import pytest
import requests
from sqlalchemy import create_engine, text

from runtime.store import UsageRecord
from runtime.store.engine import normalize_url
from tests.fakes import FakeOpenAI
from tests.harness import ROOT, anthropic_client, clean_env, openai_client

pytestmark = pytest.mark.integration

MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeOpenAI(api_key="sk-up"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-money", {"OPENAI_BASE_URL": fakes.base_url,
                                        "OPENAI_API_KEY": "sk-up"})


def into_debt(gw, account_id: int, owed: int) -> None:
    """A request that cost `owed` more than its hold and what was left of the balance."""
    balance = gw.balance(account_id)
    rid = f"req_overrun_{account_id}"
    assert gw.store.hold(rid, account_id, balance)
    usage = UsageRecord(rid, account_id, None, "chat", MODEL, "openai", 200, prompt_tokens=9)
    assert gw.store.settle(rid, balance + owed, usage) == balance + owed
    account = gw.store.get_account_by_id(account_id)
    assert (account.balance_nano, account.debt_nano) == (0, owed)


def tokmodel(gw, *args: str) -> subprocess.CompletedProcess:
    env = clean_env({"TOKMODEL_DATABASE_URL": gw.db_url})
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_an_account_in_debt_is_refused_in_each_format_until_a_top_up_pays_it(gw, up):
    account, secret = gw.account(2_000_000)
    into_debt(gw, account, 1_500)
    with pytest.raises(openai.PermissionDeniedError) as err:
        openai_client(gw, secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}])
    assert err.value.body["type"] == "authorization_error"
    assert "debt of 0.0000015 credits" in err.value.body["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        anthropic_client(gw, secret).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hello"}])
    assert info.value.body["error"]["type"] == "permission_error"
    assert "debt of 0.0000015 credits" in info.value.body["error"]["message"]
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "w " * 50_000}]})
    refused = requests.post(f"{gw.base_url}/chat/completions", data=big, timeout=20,
                            headers={"Authorization": f"Bearer {secret}",
                                     "Content-Type": "application/json"})
    assert refused.status_code == 403   # refused before its 100 kB body is read
    assert "debt of 0.0000015 credits" in refused.json()["error"]["message"]
    assert up.requests == []
    assert gw.audit(account)["debt_nano"] == 1_500

    topped = gw.store.topup(gw.store.get_account_by_id(account).name, 50_000_000)
    assert (topped.balance_nano, topped.debt_nano) == (50_000_000 - 1_500, 0)
    reply = openai_client(gw, secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content and len(up.requests) == 1
    assert gw.balance(account) == 50_000_000 - 1_500 - round(reply.usage.cost * 1e9)


def test_accounts_audit_and_listing_show_the_ledger_and_the_debt(gw, up):
    account, secret = gw.account(50_000_000)
    openai_client(gw, secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}])
    name = gw.store.get_account_by_id(account).name
    ok = tokmodel(gw, "accounts", "audit", name, "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["usage_rows"] == 1 and report["problems"] == []
    assert report["balance_nano"] == gw.balance(account)

    into_debt(gw, account, 42)
    listed = {a["name"]: a for a in json.loads(tokmodel(gw, "accounts", "list", "--json").stdout)}
    assert listed[name]["debt"] == "0.000000042" and listed[name]["balance"] == "0"
    assert f"{name}\t0 credits\tdebt 0.000000042" in tokmodel(gw, "accounts", "list").stdout
    assert json.loads(tokmodel(gw, "accounts", "audit", name, "--json").stdout)["ok"] is True

    engine = create_engine(normalize_url(gw.db_url))  # money changed behind the ledger
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE accounts SET balance_nano = balance_nano + 5 "
                              "WHERE id = :id"), {"id": account})
        bad = tokmodel(gw, "accounts", "audit", name, "--json")
        assert bad.returncode == 1
        report = json.loads(bad.stdout)
        assert report["ok"] is False
        assert report["problems"] == ["balance is 5 nano-credits but the ledger sums to 0"]
        plain = tokmodel(gw, "accounts", "audit", name)
        assert plain.returncode == 1 and "DISCREPANCY" in plain.stdout
        assert "ledger sums to 0" in plain.stdout
    finally:
        with engine.begin() as conn:  # put it back: the automatic audit checks this account
            conn.execute(text("UPDATE accounts SET balance_nano = balance_nano - 5 "
                              "WHERE id = :id"), {"id": account})
        engine.dispose()
    missing = tokmodel(gw, "accounts", "audit", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr
