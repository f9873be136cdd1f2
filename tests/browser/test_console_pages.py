"""The console's account and operator pages in a real headless Chromium against the gateway
under gunicorn: usage pages and filters with totals over the whole filter, units per kind,
the daily chart, CSV export, top-up history, per-key limits saved in the browser seen by the
next API request, an operator revoking a key (the next API request
is a 401), disabling an account (its key gets 403), and every page at 375 px wide without
horizontal scrolling."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import requests

from runtime.store import UsageRecord
from tests.browser.conftest import ADMIN_TOKEN
from tests.harness import Gateway

DAY = datetime(2026, 11, 20, 9, tzinfo=UTC)


def new_account(gw: Gateway, name: str) -> tuple[int, str]:
    account = gw.store.create_account(name, 1_000_000_000)
    return account.id, gw.store.create_key(name, "login", manage=True)[1]


def settle(gw: Gateway, account_id: int, request_id: str, cost: int, **fields) -> None:
    assert gw.store.hold(request_id, account_id, cost)
    fields.setdefault("model", "openai/gpt-4o-mini")
    fields.setdefault("endpoint", "chat")
    gw.store.settle(request_id, cost, UsageRecord(
        request_id=request_id, account_id=account_id, key_id=fields.pop("key_id", None),
        provider="openai", status=200, latency_ms=250, **fields))


def log_in(page, gw: Gateway, secret: str) -> None:
    page.goto(f"{gw.url}/console/login")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gw.url}/console")


def test_usage_pages_filters_totals_chart_and_csv(browser, gateway):
    account_id, secret = new_account(gateway, "browser-usage")
    expected_cost = expected_out = 0
    for i in range(80):
        model = "openai/gpt-4o" if i % 4 else "anthropic/claude-sonnet-4"
        cost = 1_000_000 + i
        settle(gateway, account_id, f"bu{i:03d}", cost, model=model, prompt_tokens=10,
               completion_tokens=i, created_at=DAY + timedelta(hours=i))
        if model == "openai/gpt-4o":
            expected_cost += cost
            expected_out += i
    settle(gateway, account_id, "bu-img", 40_000_000, endpoint="images",
           model="openai/gpt-image-1", details={"images": 3}, created_at=DAY)
    page = browser.new_page()
    log_in(page, gateway, secret)
    page.click("nav >> text=Usage")
    page.wait_for_url(f"{gateway.url}/console/usage")
    assert page.locator("table.usage tbody tr").count() == 50
    assert page.locator(".t-requests").inner_text() == "81"
    # one series per model in the chart
    series = page.locator("svg.chart g.series")
    assert series.count() == 3
    assert sorted(series.nth(i).get_attribute("data-model") for i in range(3)) == [
        "anthropic/claude-sonnet-4", "openai/gpt-4o", "openai/gpt-image-1"]
    assert "3 images" in page.locator("table.usage").inner_text()
    # filter by model: totals over all 60 rows of the filter, not only the 50 shown
    page.select_option("#f-model", "openai/gpt-4o")
    page.click(".filters button[type=submit]")
    page.wait_for_url(re.compile(r"model=openai%2Fgpt-4o"))
    assert page.locator(".t-requests").inner_text() == "60"
    assert page.locator(".t-tokens").inner_text() == f"600 / {expected_out:,}"
    cost_text = page.locator(".t-cost").inner_text()
    assert cost_text == f"0.{expected_cost:09d}".rstrip("0") + " credits"
    shown = page.locator("table.usage code.rid").all_inner_texts()
    assert len(shown) == 50
    page.click("text=Older →")
    older = page.locator("table.usage code.rid").all_inner_texts()
    assert len(older) == 10 and not set(older) & set(shown)
    assert page.locator(".t-requests").inner_text() == "60"
    page.click("text=← Newer")
    assert page.locator("table.usage code.rid").all_inner_texts() == shown
    # the CSV holds every row of the filter
    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert len(rows) == 60 and {r["model"] for r in rows} == {"openai/gpt-4o"}
    assert sum(int(r["completion_tokens"]) for r in rows) == expected_out


def test_topup_history_and_key_spend(browser, gateway):
    account_id, secret = new_account(gateway, "browser-topups")
    gateway.store.topup("browser-topups", 3_000_000_000, note="invoice 7")
    key = gateway.store.list_keys("browser-topups")[0]
    settle(gateway, account_id, "bt1", 250_000_000, key_id=key.id, prompt_tokens=5)
    page = browser.new_page()
    log_in(page, gateway, secret)
    page.click("nav >> text=Top-ups")
    table = page.locator("table.history").inner_text()
    assert "invoice 7" in table and "+3" in table and "+1" in table
    page.click("nav >> text=API Keys")
    assert page.locator("td.spend-total").first.inner_text() == "0.25"


def test_key_limits_edited_in_the_browser_apply_to_the_next_request(browser, gateway):
    _, secret = new_account(gateway, "browser-limits")
    app, app_key = gateway.store.create_key("browser-limits", "app")
    headers = {"Authorization": f"Bearer {app_key}"}

    def model_ids():
        answer = requests.get(f"{gateway.base_url}/models", headers=headers, timeout=10)
        assert answer.status_code == 200
        return {m["id"] for m in answer.json()["data"]}

    every = sorted(model_ids())
    assert len(every) > 1
    page = browser.new_page()
    log_in(page, gateway, secret)
    page.goto(f"{gateway.url}/console/keys")
    page.click(f"a[href='/console/keys/{app.id}/limits']")
    page.fill("#l-models", every[0])
    page.fill("#l-rpm", "30")
    page.click("text=Save limits")
    page.wait_for_url(re.compile(r"done=limits"))
    assert "30 requests/min" in page.locator("table.data").inner_text()
    assert model_ids() == {every[0]}
    page.click(f"a[href='/console/keys/{app.id}/limits']")
    page.fill("#l-expires", "2020-01-01T00:00")
    page.click("text=Save limits")
    page.wait_for_url(re.compile(r"done=limits"))
    expired = requests.get(f"{gateway.base_url}/models", headers=headers, timeout=10)
    assert expired.status_code == 401 and "expired" in expired.text


def test_operator_revokes_a_key_and_the_next_request_is_401(browser, gateway):
    account_id, _ = new_account(gateway, "browser-operated")
    _, app_key = gateway.store.create_key("browser-operated", "app")
    models = requests.get(f"{gateway.base_url}/models", timeout=10,
                          headers={"Authorization": f"Bearer {app_key}"})
    assert models.status_code == 200
    page = browser.new_page()
    page.goto(f"{gateway.url}/console/admin/login")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/admin")
    assert "browser-operated" in page.locator("table.data").inner_text()
    page.click("text=browser-operated")
    page.click("button[aria-label='Revoke app']")
    page.wait_for_url(re.compile(r"done=revoked"))
    models = requests.get(f"{gateway.base_url}/models", timeout=10,
                          headers={"Authorization": f"Bearer {app_key}"})
    assert models.status_code == 401
    page.fill("#amount", "2.5")
    page.click("text=Add credits")
    page.wait_for_url(re.compile(r"done=topup"))
    assert "+2.5" in page.locator("table.history").inner_text()
    assert gateway.store.get_account_by_id(account_id).balance_nano == 3_500_000_000


def test_operator_disables_an_account_and_its_key_gets_403(browser, gateway):
    new_account(gateway, "browser-disabled")
    _, app_key = gateway.store.create_key("browser-disabled", "app")
    headers = {"Authorization": f"Bearer {app_key}"}
    assert requests.get(f"{gateway.base_url}/models", headers=headers,
                        timeout=10).status_code == 200
    page = browser.new_page()
    page.goto(f"{gateway.url}/console/admin/login")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/admin")
    page.click("text=browser-disabled")
    page.click("text=Disable account")
    page.wait_for_url(re.compile(r"done=disabled"))
    refused = requests.get(f"{gateway.base_url}/models", headers=headers, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_disabled"
    page.click("text=Enable account")
    page.wait_for_url(re.compile(r"done=enabled"))
    assert requests.get(f"{gateway.base_url}/models", headers=headers,
                        timeout=10).status_code == 200


def test_pages_fit_a_375px_phone_without_horizontal_scroll(browser, gateway):
    account_id, secret = new_account(gateway, "browser-phone-with-a-rather-long-name")
    key = gateway.store.list_keys("browser-phone-with-a-rather-long-name")[0]
    for i in range(30):
        settle(gateway, account_id, f"bp-a-request-id-that-is-long-{i:03d}", 12_345_678,
               key_id=key.id, model="anthropic/claude-sonnet-4-20250514", prompt_tokens=123456,
               completion_tokens=65432, cached_tokens=1000, created_at=DAY + timedelta(days=i))
    page = browser.new_page()
    page.set_viewport_size({"width": 375, "height": 800})
    log_in(page, gateway, secret)
    for path in ("/console", "/console/usage", "/console/keys", "/console/topups"):
        page.goto(f"{gateway.url}{path}")
        wide = page.evaluate("document.documentElement.scrollWidth")
        client = page.evaluate("document.documentElement.clientWidth")
        assert wide <= client, (path, wide, client)
        # the table itself fits too (not only scrolled inside its box)
        for table in page.locator("table.data").all():
            box = table.bounding_box()
            assert box["x"] + box["width"] <= client + 1, (path, box)
    page.goto(f"{gateway.url}/console/admin/login")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gateway.url}/console/admin")
    page.goto(f"{gateway.url}/console/admin/accounts/{account_id}")
    assert page.evaluate("document.documentElement.scrollWidth <= "
                         "document.documentElement.clientWidth")
