"""`tokmodel keys create/update/list` with per-key limits, as an operator types them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from runtime.store import UsageRecord, open_store
from tests.app.test_cli import tokmodel


def _listed(tmp_path, *args: str) -> list[dict]:
    result = tokmodel(tmp_path, "keys", "list", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_with_every_limit_and_list_shows_them(tmp_path):
    tokmodel(tmp_path, "accounts", "create", "acme", "--credits", "10")
    created = tokmodel(tmp_path, "keys", "create", "--account", "acme", "--name", "ci",
                       "--models", "openai/*, anthropic/claude-haiku-4-5", "--rpm", "60",
                       "--tpm", "10000", "--spend-limit", "5", "--daily-limit", "0.5",
                       "--monthly-limit", "2.000000001", "--expires-in", "30d")
    assert created.returncode == 0, created.stderr
    [key] = _listed(tmp_path, "--account", "acme")
    assert key["models"] == ["openai/*", "anthropic/claude-haiku-4-5"]
    assert (key["rpm"], key["tpm"]) == (60, 10000)
    assert key["spend_limit"] == "5" and key["daily_limit"] == "0.5"
    assert key["monthly_limit"] == "2.000000001"
    assert key["monthly_limit_nano"] == 2_000_000_001
    expires = datetime.fromisoformat(key["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert key["spend"] == {"total": "0", "today": "0", "month": "0"}


def test_update_sets_and_clears_one_limit_at_a_time(tmp_path):
    tokmodel(tmp_path, "accounts", "create", "acme")
    tokmodel(tmp_path, "accounts", "create", "other")
    tokmodel(tmp_path, "keys", "create", "--account", "acme", "--rpm", "5",
             "--models", "openai/gpt-4o-mini")
    tokmodel(tmp_path, "keys", "create", "--account", "other")
    [key] = _listed(tmp_path, "--account", "acme")
    changed = tokmodel(tmp_path, "keys", "update", key["id"], "--clear-rpm", "--tpm", "900",
                       "--expires", "2030-01-31T00:00:00")
    assert changed.returncode == 0, changed.stderr
    [key] = _listed(tmp_path, "--account", "acme")
    assert key["rpm"] is None and key["tpm"] == 900
    assert key["models"] == ["openai/gpt-4o-mini"]
    assert key["expires_at"] == "2030-01-31T00:00:00+00:00"
    assert tokmodel(tmp_path, "keys", "update", key["id"], "--clear-models",
                    "--clear-expires").returncode == 0
    [key] = _listed(tmp_path, "--account", "acme")
    assert key["models"] is None and key["expires_at"] is None
    # without --account: every account's keys
    assert sorted(k["account"] for k in _listed(tmp_path)) == ["acme", "other"]
    # a key with no limit left reads as one with none at all
    tokmodel(tmp_path, "keys", "update", key["id"], "--clear-tpm")
    store = open_store(f"sqlite:///{tmp_path / 'cli.db'}")
    assert store.get_key(key["id"]).limits is None
    store.close()


def test_bad_limit_values_are_refused_naming_the_problem(tmp_path):
    tokmodel(tmp_path, "accounts", "create", "acme")
    for args, named in ((["--rpm", "0"], "--rpm"), (["--tpm", "many"], "--tpm"),
                        (["--expires-in", "3w"], "30d"), (["--models", " , "], "model"),
                        (["--daily-limit", "-1"], "-1"),
                        (["--expires", "next tuesday"], "ISO 8601")):
        result = tokmodel(tmp_path, "keys", "create", "--account", "acme", *args)
        assert result.returncode != 0, args
        assert named in result.stderr, (args, result.stderr)
    assert _listed(tmp_path, "--account", "acme") == []
    both = tokmodel(tmp_path, "keys", "create", "--account", "acme", "--expires-in", "1d",
                    "--expires", "2030-01-01T00:00:00Z")
    assert both.returncode != 0
    missing = tokmodel(tmp_path, "keys", "update", "key_000000000000", "--rpm", "3")
    assert missing.returncode == 1 and "key_000000000000" in missing.stderr


def test_list_shows_each_keys_spend_in_all_today_and_this_month(tmp_path):
    tokmodel(tmp_path, "accounts", "create", "acme", "--credits", "10")
    store = open_store(f"sqlite:///{tmp_path / 'cli.db'}")
    plain, _ = store.create_key("acme", "plain")
    capped, _ = store.create_key("acme", "capped", {"daily_limit_nano": 10**9})
    account = store.get_account("acme").id
    now = datetime.now(UTC)
    when = {"today": now, "yesterday": now - timedelta(days=1),
            "long ago": now - timedelta(days=40)}
    for n, (key, at, cost) in enumerate([(plain, "today", 1), (plain, "yesterday", 20),
                                         (plain, "long ago", 300), (capped, "yesterday", 7)]):
        rid = f"r{n}"
        assert store.hold(rid, account, 1000)
        store.settle(rid, cost, UsageRecord(rid, account, key.id, "chat", "m", "p", 200,
                                            created_at=when[at]))
    store.close()
    listed = {k["name"]: k for k in _listed(tmp_path, "--account", "acme")}
    same_month = when["yesterday"].month == now.month
    assert listed["plain"]["spend_nano"] == {
        "total": 321, "today": 1, "month": 21 if same_month else 1}
    assert listed["capped"]["spend_nano"] == {
        "total": 7, "today": 0, "month": 7 if same_month else 0}
    assert listed["capped"]["spend"]["total"] == "0.000000007"
