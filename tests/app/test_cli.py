"""The `tokmodel` command as an operator uses it: accounts, keys, catalogue checks."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from runtime.store import open_store


def tokmodel(tmp_path, *args: str, env: dict[str, str] | None = None):
    full_env = {"PATH": "/usr/bin:/bin", "TOKMODEL_DATABASE_URL":
                f"sqlite:///{tmp_path / 'cli.db'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True,
                          text=True, env=full_env, check=False)


def test_accounts_and_topups_are_exact(tmp_path):
    assert tokmodel(tmp_path, "accounts", "create", "acme", "--credits", "12.5").returncode == 0
    assert tokmodel(tmp_path, "accounts", "topup", "acme", "0.000000001").returncode == 0
    shown = json.loads(tokmodel(tmp_path, "accounts", "show", "acme", "--json").stdout)
    assert shown["name"] == "acme" and shown["balance"] == "12.500000001"
    assert shown["balance_nano"] == 12_500_000_001 and shown["debt_nano"] == 0
    plain = tokmodel(tmp_path, "accounts", "show", "acme").stdout
    assert "12.500000001 credits" in plain
    finer = tokmodel(tmp_path, "accounts", "topup", "acme", "0.0000000001")
    assert finer.returncode == 1 and "0.000000001" in finer.stderr
    dup = tokmodel(tmp_path, "accounts", "create", "acme")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = tokmodel(tmp_path, "accounts", "topup", "acme", "-5")
    assert bad.returncode == 1
    missing = tokmodel(tmp_path, "accounts", "show", "nobody", "--json")
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_keys_are_shown_once_and_stored_as_hashes(tmp_path):
    tokmodel(tmp_path, "accounts", "create", "acme")
    created = tokmodel(tmp_path, "keys", "create", "--account", "acme", "--name", "prod")
    assert created.returncode == 0
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("tm-") and " " not in secret
    listed = json.loads(tokmodel(tmp_path, "keys", "list", "--account", "acme", "--json").stdout)
    assert [k["name"] for k in listed] == ["prod"] and listed[0]["revoked"] is False
    assert secret not in json.dumps(listed)
    assert secret.encode() not in (tmp_path / "cli.db").read_bytes()
    store = open_store(f"sqlite:///{tmp_path / 'cli.db'}")
    assert store.authenticate(secret).name == "prod"
    assert tokmodel(tmp_path, "keys", "revoke", listed[0]["id"]).returncode == 0
    assert store.authenticate(secret) is None
    again = tokmodel(tmp_path, "keys", "revoke", listed[0]["id"])
    assert again.returncode == 1
    store.close()


def test_providers_check_says_what_is_usable(tmp_path):
    result = tokmodel(tmp_path, "providers", "check", env={"GROQ_API_KEY": "k"})
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "usable (GROQ_API_KEY set)" in lines["groq"]
    assert "not usable: set OPENAI_API_KEY" in lines["openai"]
    assert "keyless" in lines["ollama"]


def test_providers_check_rejects_a_bad_file_with_every_error(tmp_path):
    bad = tmp_path / "providers.yaml"
    bad.write_text(yaml.safe_dump({
        "providers": {"openai": None, "nowhere": None},
        "models": {"openai/x": {"provider": "openai", "endpoints": ["chat"],
                                "pricing": {"input_per_mtok": "cheap"}},
                   "ghost/y": {"provider": "ghost", "endpoints": ["chat"],
                               "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}}}))
    result = tokmodel(tmp_path, "providers", "check", "--file", str(bad))
    assert result.returncode == 1
    assert "models.openai/x.pricing.input_per_mtok" in result.stderr
    bad.write_text(yaml.safe_dump({
        "providers": {"openai": None, "nowhere": None},
        "models": {"ghost/y": {"provider": "ghost", "endpoints": ["chat"],
                               "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}}}))
    result = tokmodel(tmp_path, "providers", "check", "--file", str(bad))
    assert result.returncode == 1
    assert "providers.nowhere: no descriptor" in result.stderr
    assert "models.ghost/y.provider: 'ghost' is not an enabled provider" in result.stderr
