"""Governance end to end under gunicorn: the admin API (/admin/v1) driven with requests, the
own-account API, management keys at the console login and made in the console, disabled
accounts in the chat and Messages formats, and usage and audit-log retention leaving
`tokmodel accounts audit` ok. Inference requests go through the official SDKs to a strict
fake upstream."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anthropic
import openai
import pytest
import requests
from sqlalchemy import func, insert, select

from runtime.store import UsageRecord
from runtime.store.schema import audit_log, usage_rollup
from tests.fakes import FakeOpenAI
from tests.harness import ROOT, anthropic_client, clean_env, openai_client

pytestmark = pytest.mark.integration

TOKEN = "admin-token-for-tests-0123456789"
MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeOpenAI(api_key="sk-up"))


def upstream_env(fakes) -> dict[str, str]:
    return {"OPENAI_BASE_URL": fakes.base_url, "OPENAI_API_KEY": "sk-up"}


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-admin", {**upstream_env(fakes), "TOKMODEL_ADMIN_TOKEN": TOKEN})


class Admin:
    """requests on /admin/v1 with the admin token; answers parsed with exact decimals."""

    def __init__(self, gw, token: str | None = TOKEN) -> None:
        self.base = f"{gw.url}/admin/v1"
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, self.base + path, timeout=20, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw):
        answer = self.call(method, path, **kw)
        assert answer.status_code == status, answer.text
        return json.loads(answer.text, parse_float=Decimal)


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def chat(gw, secret: str, text: str = "hello there") -> None:
    """One chat request, settled (its usage row written) when this returns."""
    openai_client(gw, secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}])
    gw.settled()


def new_account(admin: Admin, gw, credits: str = "5") -> tuple[str, str, str]:
    """An account made through the API, with an inference key: (name, key id, secret)."""
    name = unique("acct")
    admin.ok("POST", "/accounts", 201, data=f'{{"name": "{name}", "credits": {credits}}}')
    gw.created.append(name)  # audited after the test
    key = admin.ok("POST", "/keys", 201, json={"account": name, "name": "app"})
    return name, key["id"], key["key"]


# -- authentication --------------------------------------------------------------------------

def test_the_admin_api_needs_the_admin_token(gw):
    _, _, secret = new_account(Admin(gw), gw)
    for token, status in ((None, 401), ("wrong-token", 401), (secret, 403)):
        answer = Admin(gw, token).call("GET", "/accounts")
        assert answer.status_code == status
        error = answer.json()["error"]
        assert error["message"] and secret not in answer.text and TOKEN not in answer.text
    assert Admin(gw).call("GET", "/accounts").status_code == 200
    spec = Admin(gw).ok("GET", "/openapi.json")
    assert spec["openapi"].startswith("3.1") and "/usage" in spec["paths"]


def test_without_the_admin_token_set_the_api_is_off(fakes, gateway_factory):
    off = gateway_factory("gw-admin-off", upstream_env(fakes))
    answer = Admin(off, "anything").call("GET", "/accounts")
    assert answer.status_code == 404
    assert "TOKMODEL_ADMIN_TOKEN" in answer.json()["error"]["message"]


# -- accounts and top-ups --------------------------------------------------------------------

def test_accounts_and_top_ups_are_exact_to_the_nano_credit(gw):
    admin = Admin(gw)
    name = unique("exact")
    created = admin.ok("POST", "/accounts", 201,
                       data=f'{{"name": "{name}", "credits": 123456789.000000001}}')
    gw.created.append(name)
    assert created["balance"] == Decimal("123456789.000000001") and created["debt"] == 0
    after = admin.ok("POST", f"/accounts/{name}/topups", 201,
                     data='{"amount": 0.000000002, "note": "promo"}')
    assert after["balance"] == Decimal("123456789.000000003")
    assert gw.store.get_account(name).balance_nano == 123_456_789_000_000_003
    history = admin.ok("GET", f"/accounts/{name}/topups")["data"]
    assert [(t["amount"], t["note"]) for t in history] == [
        (Decimal("0.000000002"), "promo"), (Decimal("123456789.000000001"), "initial credits")]
    assert all(t["created_at"].endswith("Z") for t in history)
    assert admin.ok("GET", f"/accounts/{name}")["balance"] == Decimal("123456789.000000003")
    assert name in [a["name"] for a in admin.ok("GET", "/accounts")["data"]]
    assert admin.call("POST", "/accounts", json={"name": name}).status_code == 409
    assert admin.call("GET", "/accounts/nobody-here").status_code == 404
    for i in range(5):
        admin.ok("POST", f"/accounts/{name}/topups", 201, json={"amount": 1, "note": f"n{i}"})
    notes, cursor = [], None
    while True:  # pages of 2: every top-up once, newest first
        page = admin.ok("GET", f"/accounts/{name}/topups",
                        params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert len(page["data"]) <= 2
        notes += [t["note"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert notes == ["n4", "n3", "n2", "n1", "n0", "promo", "initial credits"]
    for query, field in (({"cursor": "bm9wZQ"}, "cursor"), ({"limit": "0"}, "limit"),
                         ({"limit": "1001"}, "limit")):
        bad = admin.call("GET", f"/accounts/{name}/topups", params=query)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == field


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/accounts", {}, "name"),
    ("/accounts", {"name": ""}, "name"),
    ("/accounts", {"name": "x", "credits": "10"}, "credits"),
    ("/accounts", {"name": "x", "credits": -1}, "credits"),
    ("/accounts", {"name": "x", "credits": 0.0000000001}, "credits"),
    ("/accounts", {"name": "x", "colour": "red"}, "colour"),
    ("/accounts", {"name": "bad\u0001name"}, "name"),
    ("/accounts/{name}/topups", {"amount": 0}, "amount"),
    ("/accounts/{name}/topups", {"amount": 1e300}, "amount"),
    ("/accounts/{name}/topups", {}, "amount"),
    ("/keys", {"name": "k"}, "account"),
    ("/keys", {"account": "{name}", "manage": "yes"}, "manage"),
    ("/keys", {"account": "{name}", "rpm": 10}, "rpm"),
])
def test_bad_bodies_are_a_400_naming_the_field(gw, path, body, field):
    admin = Admin(gw)
    name, _, _ = new_account(admin, gw)
    text = json.dumps(body).replace("{name}", name)
    answer = admin.call("POST", path.replace("{name}", name), data=text)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field
    assert field in answer.json()["error"]["message"]
    assert gw.store.get_account(name).balance_nano == 5_000_000_000


def test_bodies_that_are_not_json_objects_are_a_400(gw):
    admin = Admin(gw)
    for raw in ("not json", "[1, 2]", '{"name": NaN}', ""):
        answer = admin.call("POST", "/accounts", data=raw)
        assert answer.status_code == 400, (raw, answer.text)
        assert answer.json()["error"]["message"]


# -- keys ------------------------------------------------------------------------------------

def test_keys_are_created_listed_updated_and_revoked(gw, up):
    admin = Admin(gw)
    name, key_id, secret = new_account(admin, gw)
    created = admin.ok("POST", "/keys", 201, json={"account": name, "name": "ops", "manage": True})
    assert created["manage"] is True and created["key"].startswith("tm-")
    listed = admin.ok("GET", "/keys", params={"account": name})["data"]
    assert [(k["name"], k["manage"]) for k in listed] == [("app", False), ("ops", True)]
    assert all("key" not in k for k in listed)  # the secret is shown once
    patched = admin.ok("PATCH", f"/keys/{created['id']}", json={"name": "ops-2", "manage": False})
    assert (patched["name"], patched["manage"]) == ("ops-2", False)
    assert admin.call("PATCH", f"/keys/{created['id']}", json={}).status_code == 400
    assert admin.call("PATCH", "/keys/key_000000000000", json={"name": "x"}).status_code == 404
    chat(gw, secret)
    revoked = admin.ok("DELETE", f"/keys/{key_id}")
    assert revoked["revoked"] is True and revoked["revoked_at"].endswith("Z")
    with pytest.raises(openai.AuthenticationError):
        chat(gw, secret)
    assert admin.call("GET", "/keys", params={"account": "nobody-here"}).status_code == 404


# -- usage -----------------------------------------------------------------------------------

def test_usage_pages_are_stable_while_rows_are_added(gw, up):
    admin = Admin(gw)
    name, key_id, secret = new_account(admin, gw)
    for i in range(5):
        chat(gw, secret, f"request {i}")
    first = admin.ok("GET", "/usage", params={"account": name, "limit": 2})
    assert len(first["data"]) == 2 and first["next_cursor"]
    for i in range(3):  # newer rows arrive while the client pages
        chat(gw, secret, f"late {i}")
    seen = [row["request_id"] for row in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = admin.ok("GET", "/usage", params={"account": name, "limit": 2, "cursor": cursor})
        seen += [row["request_id"] for row in page["data"]]
        cursor = page["next_cursor"]
    logged = [r.request_id for r in gw.store.usage(name)]
    assert seen == logged[3:]  # the 5 first rows, newest first, none twice, none of the late
    row = first["data"][0]
    assert row["account"] == name and row["key_id"] == key_id and row["model"] == MODEL
    assert row["created_at"].endswith("Z") and isinstance(row["cost"], Decimal)


def test_usage_filters_totals_daily_series_and_csv(gw, up):
    admin = Admin(gw)
    name, key_id, secret = new_account(admin, gw)
    other = admin.ok("POST", "/keys", 201, json={"account": name, "name": "second"})
    chat(gw, secret)
    chat(gw, secret)
    chat(gw, other["key"])
    rows = gw.store.usage(name)
    cost = sum(r.cost_nano for r in rows)
    by_key = admin.ok("GET", "/usage", params={"account": name, "key": other["id"]})["data"]
    assert [r["key_id"] for r in by_key] == [other["id"]]
    assert admin.ok("GET", "/usage", params={"account": name, "model": "openai/none"})["data"] == []
    totals = admin.ok("GET", "/usage/totals", params={"account": name})
    assert totals["requests"] == 3
    assert totals["prompt_tokens"] == sum(r.prompt_tokens for r in rows)
    assert totals["cost"] * 10**9 == cost  # exact
    daily = admin.ok("GET", "/usage/daily", params={"account": name})["data"]
    assert [(d["model"], d["requests"]) for d in daily] == [(MODEL, 3)]
    assert daily[0]["cost"] * 10**9 == cost
    latest = max(r.created_at for r in rows)
    since = latest.isoformat().replace("+00:00", "Z")
    assert len(admin.ok("GET", "/usage", params={"account": name, "since": since})["data"]) == 1
    assert admin.ok("GET", "/usage", params={"account": name, "until": since})["data"] != []
    with admin.call("GET", "/usage", params={"account": name, "format": "csv"},
                    stream=True) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["request_id"] for r in table] == [r.request_id for r in rows]
    assert sum(Decimal(r["cost"]) for r in table) * 10**9 == cost
    for params, field in (({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit"),
                          ({"limit": "5000"}, "limit"), ({"cursor": "bogus"}, "cursor"),
                          ({"format": "xml"}, "format")):
        answer = admin.call("GET", "/usage", params={"account": name, **params})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == field


# -- the own-account API ---------------------------------------------------------------------

def test_an_api_key_reads_its_own_account_and_usage_only(gw, up):
    admin = Admin(gw)
    name, key_id, secret = new_account(admin, gw)
    _, stranger_key, stranger = new_account(admin, gw)
    chat(gw, secret)
    chat(gw, stranger)
    mine = requests.get(f"{gw.base_url}/account", headers={"Authorization": f"Bearer {secret}"},
                        timeout=20)
    info = json.loads(mine.text, parse_float=Decimal)
    spent = sum(r.cost_nano for r in gw.store.usage(name))
    assert info["name"] == name and info["debt"] == 0
    assert info["balance"] * 10**9 == gw.store.get_account(name).balance_nano
    assert info["key"]["id"] == key_id and info["key"]["manage"] is False
    assert info["key"]["spend"]["total"] * 10**9 == spent
    assert info["key"]["spend"]["today"] * 10**9 == spent
    auth = {"Authorization": f"Bearer {secret}"}
    page = requests.get(f"{gw.base_url}/account/usage", headers=auth, timeout=20).json()
    assert [r["account"] for r in page["data"]] == [name]
    refused = requests.get(f"{gw.base_url}/account/usage", params={"key": stranger_key},
                           headers=auth, timeout=20)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "key"
    assert requests.get(f"{gw.base_url}/account", timeout=20).status_code == 401


# -- disabled accounts -----------------------------------------------------------------------

def test_a_disabled_account_is_refused_in_each_format_until_enabled(gw, up):
    admin = Admin(gw)
    name, _, secret = new_account(admin, gw)
    assert admin.ok("POST", f"/accounts/{name}/disable")["disabled"] is True
    with pytest.raises(openai.PermissionDeniedError) as err:
        chat(gw, secret)
    assert err.value.status_code == 403 and err.value.code == "account_disabled"
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        anthropic_client(gw, secret).messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "permission_error"
    assert "disabled" in refused.value.body["error"]["message"]
    models = requests.get(f"{gw.base_url}/models", headers={"Authorization": f"Bearer {secret}"},
                          timeout=20)
    assert models.status_code == 403 and models.json()["error"]["code"] == "account_disabled"
    assert up.requests == []
    assert gw.store.get_account(name).balance_nano == 5_000_000_000
    assert admin.ok("POST", f"/accounts/{name}/enable")["disabled"] is False
    chat(gw, secret)


# -- the console login -----------------------------------------------------------------------

def console_login(gw, secret: str) -> requests.Response:
    browser = requests.Session()
    page = browser.get(f"{gw.url}/console/login", timeout=20)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return browser.post(f"{gw.url}/console/login", data={"key": secret, "csrf": csrf},
                        allow_redirects=False, timeout=20)


def test_only_management_keys_of_enabled_accounts_open_the_console(gw):
    admin = Admin(gw)
    name, _, inference = new_account(admin, gw)
    manager = admin.ok("POST", "/keys", 201, json={"account": name, "manage": True})
    refused = console_login(gw, inference)
    assert refused.status_code == 403 and "tokmodel_console" not in refused.cookies
    assert "inference key" in refused.text and "management key" in refused.text
    allowed = console_login(gw, manager["key"])
    assert allowed.status_code == 303 and allowed.headers["location"].endswith("/console")
    admin.ok("POST", f"/accounts/{name}/disable")
    disabled = console_login(gw, manager["key"])
    assert disabled.status_code == 403 and "disabled" in disabled.text
    admin.ok("POST", f"/accounts/{name}/enable")
    admin.ok("PATCH", f"/keys/{manager['id']}", json={"manage": False})
    assert console_login(gw, manager["key"]).status_code == 403


def console_session(gw, secret: str) -> requests.Session:
    """A requests session logged into the console with `secret`."""
    browser = requests.Session()
    page = browser.get(f"{gw.url}/console/login", timeout=20)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = browser.post(f"{gw.url}/console/login", data={"key": secret, "csrf": csrf},
                          allow_redirects=False, timeout=20)
    assert answer.status_code == 303, answer.text
    return browser


def create_in_console(gw, browser: requests.Session, name: str, **form: str) -> str:
    """Create a key on the console's keys page; returns the secret it shows once."""
    page = browser.get(f"{gw.url}/console/keys", timeout=20)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    made = browser.post(f"{gw.url}/console/keys", data={"name": name, "csrf": csrf, **form},
                        allow_redirects=False, timeout=20)
    assert made.status_code == 303 and made.headers["location"] == "/console/keys/created"
    shown = browser.get(f"{gw.url}/console/keys/created", timeout=20)
    return re.search(r"tm-[A-Za-z0-9_-]{43}", shown.text).group(0)


def test_a_management_key_makes_management_keys_in_the_console_only_when_asked(gw):
    admin = Admin(gw)
    name, _, _ = new_account(admin, gw)
    owner = admin.ok("POST", "/keys", 201, json={"account": name, "manage": True})
    browser = console_session(gw, owner["key"])
    form = browser.get(f"{gw.url}/console/keys", timeout=20).text
    box = re.search(r'<input id="manage" name="manage" type="checkbox" value="1"[^>]*>', form)
    assert box and "checked" not in box.group(0)  # off unless ticked
    assert "Management key" in form
    deputy = create_in_console(gw, browser, "deputy", manage="1")
    batch = create_in_console(gw, browser, "batch-job")
    kinds = {k["name"]: k["manage"] for k in admin.ok("GET", f"/keys?account={name}")["data"]}
    assert kinds == {"app": False, "default": True, "deputy": True, "batch-job": False}
    # the management key made in the console opens it; the inference key still cannot
    assert console_login(gw, deputy).status_code == 303
    refused = console_login(gw, batch)
    assert refused.status_code == 403 and "inference key" in refused.text
    # the keys page tells the kinds apart
    rows = browser.get(f"{gw.url}/console/keys", timeout=20).text.split("<tr")
    tagged = {row.split("<td>")[1].split(" ")[0].split("<")[0]
              for row in rows if '<span class="tag">management</span>' in row.split("</td>")[0]}
    assert tagged == {"default", "deputy"}
    # both creations are in the audit log with their kind, under the owner's key
    with gw.store.engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.detail).where(
            audit_log.c.action == "key_create",
            audit_log.c.account_id == gw.store.get_account(name).id)
            .order_by(audit_log.c.id)).all()
    assert [tuple(row) for row in audited] == [(f"key:{owner['id']}", "management key"),
                                              (f"key:{owner['id']}", "inference key")]
    chat(gw, deputy)  # both kinds call the API
    chat(gw, batch)


# -- usage retention -------------------------------------------------------------------------

def audit_actions(gw) -> list[str]:
    with gw.store.engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.action).order_by(audit_log.c.id))
                    .scalars())


def test_retention_prunes_old_usage_rows_and_the_audit_stays_ok(fakes, gateway_factory, up):
    short = gateway_factory("gw-retention", {
        **upstream_env(fakes), "TOKMODEL_ADMIN_TOKEN": TOKEN,
        "TOKMODEL_USAGE_RETENTION_DAYS": "0.00003",  # 2.6 seconds
        "TOKMODEL_AUDIT_RETENTION_DAYS": "1",
        "TOKMODEL_USAGE_PRUNE_SECONDS": "0.5"})
    account, secret = short.account(5_000_000_000)
    now = datetime.now(UTC)
    with short.store.engine.begin() as conn:  # console audit rows: two days and a minute old
        conn.execute(insert(audit_log), [
            {"created_at": now - timedelta(days=2), "actor": "operator", "action": "topup",
             "client_addr": "192.0.2.1", "account_id": account},
            {"created_at": now - timedelta(minutes=1), "actor": "operator",
             "action": "key_revoke", "client_addr": "192.0.2.1", "account_id": account}])
    for _ in range(3):
        chat(short, secret)
    name = short.store.get_account_by_id(account).name
    balance = short.balance(account)
    assert balance < 5_000_000_000
    deadline = time.monotonic() + 30
    while (short.store.usage(name) or "topup" in audit_actions(short)) and (
            time.monotonic() < deadline):
        time.sleep(0.5)
    assert short.store.usage(name) == []
    assert audit_actions(short) == ["key_revoke"]  # the day-old row is kept
    assert short.balance(account) == balance
    env = clean_env({"TOKMODEL_DATABASE_URL": short.db_url})
    audit = subprocess.run([sys.executable, "-m", "runtime.cli", "accounts", "audit", name],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    chat(short, secret)  # rows written after the pruning are audited as before
    assert short.audit(name)["ok"]


# -- usage rollup ----------------------------------------------------------------------------

def test_the_gateway_folds_usage_into_daily_sums_and_reports_stay_exact(fakes, gateway_factory,
                                                                        up):
    gw = gateway_factory("gw-rollup", {**upstream_env(fakes), "TOKMODEL_ADMIN_TOKEN": TOKEN,
                                       "TOKMODEL_USAGE_ROLLUP_SECONDS": "0.5"})
    admin = Admin(gw)
    account, secret = gw.account(5_000_000_000)
    name = gw.store.get_account_by_id(account).name
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    for i in range(30):  # rows of two days ago: old enough for the gateway's next pass
        assert gw.store.hold(f"old-{i}-{name}", account, 1_000 + i)
        gw.store.settle(f"old-{i}-{name}", 1_000 + i, UsageRecord(
            request_id=f"old-{i}-{name}", account_id=account, key_id=None, endpoint="rerank",
            model="cohere/rerank-v3.5", provider="cohere", status=200,
            details={"documents": 10 + i, "searches": 1}, created_at=two_days_ago))
    chat(gw, secret)  # a row of now: too recent to fold yet
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with gw.store.engine.connect() as conn:
            summed = conn.execute(select(func.coalesce(func.sum(usage_rollup.c.requests), 0))
                                  .where(usage_rollup.c.account_id == account)).scalar()
        if summed == 30:
            break
        time.sleep(0.2)
    assert summed == 30  # the gateway folded the old rows and left the new one in usage_log
    totals = admin.ok("GET", "/usage/totals", params={"account": name})
    assert totals["requests"] == 31
    assert totals["units"]["documents"] == sum(10 + i for i in range(30))
    assert totals["units"]["searches"] == 30
    listed = admin.ok("GET", "/usage", params={"account": name, "limit": 1000})["data"]
    assert Decimal(sum(Decimal(str(row["cost"])) for row in listed)) == totals["cost"]
    daily = admin.ok("GET", "/usage/daily", params={"account": name})["data"]
    assert [(d["model"], d["requests"]) for d in daily] == [("cohere/rerank-v3.5", 30),
                                                           (MODEL, 1)]
    everything = admin.ok("GET", "/usage/totals")
    assert everything["requests"] >= 31


# -- the command line ------------------------------------------------------------------------

def tokmodel(gw, *args: str) -> subprocess.CompletedProcess:
    env = clean_env({"TOKMODEL_DATABASE_URL": gw.db_url})
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_command_line_makes_management_keys_and_disables_accounts(gw, up):
    account, inference = gw.account()
    name = gw.store.get_account_by_id(account).name
    made = tokmodel(gw, "keys", "create", "--account", name, "--name", "owner", "--manage")
    assert made.returncode == 0, made.stderr
    key_id, secret = made.stdout.split()[1], made.stdout.split()[-1]
    assert "management key" in made.stderr
    assert console_login(gw, secret).status_code == 303
    assert console_login(gw, inference).status_code == 403
    assert tokmodel(gw, "keys", "update", key_id, "--no-manage").returncode == 0
    assert console_login(gw, secret).status_code == 403
    listed = json.loads(tokmodel(gw, "keys", "list", "--account", name, "--json").stdout)
    assert [k["manage"] for k in listed] == [False, False]
    assert tokmodel(gw, "keys", "update", key_id).returncode == 1  # nothing to change
    assert tokmodel(gw, "accounts", "disable", name).returncode == 0
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, inference)
    shown = json.loads(tokmodel(gw, "accounts", "show", name, "--json").stdout)
    assert shown["disabled"] is True
    assert tokmodel(gw, "accounts", "enable", name).returncode == 0
    chat(gw, inference)
