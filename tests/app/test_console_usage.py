"""The console's usage views over HTTP (in process, real SQLite store): keyset pages, filters,
totals over the whole filter, units per kind, the daily chart, CSV export, top-up history,
per-key spend, and the operator revoking a key. Browser-level checks are in tests/browser."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest

from runtime.store import UsageRecord
from tests.app.test_console import admin_login, login

ROW = re.compile(r"<tr>\s*<td class=\"nowrap\">")
RID = re.compile(r'<code class="rid">([^<]+)</code>')
LINK = re.compile(r'<a rel="(prev|next)" href="([^"]+)"')


def settle(store, account, request_id, cost, *, key_id=None, model="openai/gpt-4o-mini",
           endpoint="chat", when=None, prompt=11, completion=7, units=None):
    acct = store.get_account(account)
    assert store.hold(request_id, acct.id, cost)
    store.settle(request_id, cost, UsageRecord(
        request_id=request_id, account_id=acct.id, key_id=key_id, endpoint=endpoint,
        model=model, provider="openai", status=200, prompt_tokens=prompt,
        completion_tokens=completion, details=units or {}, latency_ms=321, created_at=when))


def links(page) -> dict[str, str]:
    return {rel: href.replace("&amp;", "&") for rel, href in LINK.findall(page.text)}


def test_keyset_pages_walk_every_row_once_both_ways_and_ignore_new_rows(env):
    browser, _ = login(env)
    for i in range(60):
        settle(env.store, "acme", f"req_{i:03d}", 1_000)
    first = browser.get("/console/usage")
    assert first.status_code == 200
    ids = RID.findall(first.text)
    assert ids == [f"req_{i:03d}" for i in range(59, 9, -1)]  # 50 a page, newest first
    assert set(links(first)) == {"next"}
    settle(env.store, "acme", "req_new", 1_000)  # arrives while the user pages
    older = browser.get("/console/usage" + links(first)["next"])
    assert RID.findall(older.text) == [f"req_{i:03d}" for i in range(9, -1, -1)]
    assert set(links(older)) == {"prev"}
    newer = browser.get("/console/usage" + links(older)["prev"])
    assert RID.findall(newer.text) == ids
    assert set(links(newer)) == {"prev", "next"}  # the new row is above it
    small = browser.get("/console/usage?size=25")
    assert len(RID.findall(small.text)) == 25 and "size=25" in links(small)["next"]


def test_filters_and_totals_cover_the_whole_filter(env):
    browser, _ = login(env)
    laptop = env.store.list_keys("acme")[0]
    server, _ = env.store.create_key("acme", "server")
    day = datetime(2026, 11, 3, 12, tzinfo=UTC)
    for i in range(70):  # more than a page of the filtered model
        settle(env.store, "acme", f"a{i}", 1_000_000 + i, key_id=server.id,
               model="openai/gpt-4o", when=day + timedelta(minutes=i), prompt=100,
               completion=i)
    for i in range(5):
        settle(env.store, "acme", f"b{i}", 7, key_id=laptop.id, endpoint="embeddings",
               when=day - timedelta(days=2))
    page = browser.get("/console/usage?model=openai/gpt-4o")
    assert len(RID.findall(page.text)) == 50
    assert re.search(r'class="t-requests">70<', page.text)
    assert re.search(r'class="t-tokens">7,000 / 2,415<', page.text)
    cost = sum(1_000_000 + i for i in range(70))
    assert f'class="t-cost total">0.{cost:09d}'.rstrip("0") in page.text
    by_key = browser.get(f"/console/usage?key={laptop.id}")
    assert set(RID.findall(by_key.text)) == {f"b{i}" for i in range(5)}
    by_endpoint = browser.get("/console/usage?endpoint=embeddings")
    assert re.search(r'class="t-requests">5<', by_endpoint.text)
    by_day = browser.get("/console/usage?since=2026-11-01&until=2026-11-01")
    assert re.search(r'class="t-requests">5<', by_day.text)  # until is inclusive
    none = browser.get("/console/usage?since=2026-11-04")
    assert re.search(r'class="t-requests">0<', none.text) and "match these filters" in none.text


def test_units_are_shown_per_kind_in_rows_and_totals(env):
    browser, _ = login(env)
    settle(env.store, "acme", "img", 40_000_000, endpoint="images", prompt=0, completion=0,
           units={"images": 2})
    settle(env.store, "acme", "stt", 1_000, endpoint="audio_transcriptions", prompt=0,
           completion=0, units={"seconds": 12.5, "seconds_from_duration": 1})
    settle(env.store, "acme", "tts", 1_000, endpoint="audio_speech", prompt=0,
           completion=0, units={"characters": 1200})
    settle(env.store, "acme", "rr", 1_000, endpoint="rerank", prompt=0, completion=0,
           units={"documents": 250, "searches": 3})
    settle(env.store, "acme", "chat", 1_000, prompt=1500, completion=42)
    page = browser.get("/console/usage").text
    for text in ("2 images", "12.50 seconds of audio", "1,200 characters", "3 searches",
                 "250 documents ranked", "1,500 in / 42 out tokens", "321 ms"):
        assert text in page, text
    assert "0 / 0" not in page and "seconds_from" not in page
    [rerank_row] = [row for row in page.split("<tr>") if "<td class=\"opt\">rerank</td>" in row]
    assert "250 documents ranked" in rerank_row and "3 searches" in rerank_row
    totals = page[page.index('class="t-units"'):]
    totals = totals[:totals.index("</dd>")]
    assert all(t in totals for t in ("2 images", "1,200 characters", "3 searches",
                                     "250 documents ranked"))
    exported = list(csv.DictReader(io.StringIO(browser.get("/console/usage.csv").text)))
    rerank = next(row for row in exported if row["request_id"] == "rr")
    assert (rerank["documents"], rerank["searches"]) == ("250", "3")
    assert next(row for row in exported if row["request_id"] == "chat")["documents"] == ""


def test_chart_has_one_series_per_model_and_no_script(env):
    browser, _ = login(env)
    for i, model in enumerate(("openai/gpt-4o", "anthropic/claude-sonnet-4", "openai/gpt-4o")):
        settle(env.store, "acme", f"c{i}", 5_000, model=model,
               when=datetime(2026, 11, 1 + i, tzinfo=UTC))
    page = browser.get("/console/usage")
    series = re.findall(r'<g class="series" data-model="([^"]+)"', page.text)
    assert series == ["anthropic/claude-sonnet-4", "openai/gpt-4o"]
    assert "<script" not in page.text
    assert "script-src" not in page.headers["content-security-policy"] or \
        "unsafe-inline" not in page.headers["content-security-policy"]


def test_csv_export_streams_every_row_of_the_filter(env):
    browser, _ = login(env)
    evil, _ = env.store.create_key("acme", "=HYPERLINK(\"x\")")
    for i in range(1203):  # several read batches
        settle(env.store, "acme", f"r{i}", 1_000 + i, key_id=evil.id,
               model="openai/gpt-4o" if i % 2 else "openai/gpt-4o-mini")
    result = browser.get("/console/usage.csv?model=openai/gpt-4o")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/csv")
    assert "attachment" in result.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(result.text)))
    assert len(rows) == 601
    assert [r["request_id"] for r in rows[:2]] == ["r1201", "r1199"]
    assert {r["key"] for r in rows} == {"'=HYPERLINK(\"x\")"}
    assert rows[0]["cost_credits"] == "0.000002201" and rows[0]["latency_ms"] == "321"
    assert sum(int(r["prompt_tokens"]) for r in rows) == 601 * 11


@pytest.mark.parametrize("query", [
    "before=bm90LWEtY3Vyc29y", "before=%%%", "after=dTE6eA", "since=2026-13-01",
    "until=yesterday",
    "since=2026-11-05&until=2026-11-01", "size=7", "size=-1", "key=kdoesnotexist",
    "model=" + "m" * 201, "endpoint=a%00b",
])
def test_bad_filters_and_cursors_are_a_400_naming_the_problem(env, query):
    browser, _ = login(env)
    settle(env.store, "acme", "r1", 1_000)
    # the CSV export is every page: it reads no cursor
    paths = ("/console/usage",) if query.startswith(("before", "after")) else (
        "/console/usage", "/console/usage.csv")
    for path in paths:
        result = browser.get(f"{path}?{query}")
        assert result.status_code == 400, (path, query, result.status_code)
        assert "text/html" in result.headers["content-type"]


def test_a_key_of_another_account_is_not_a_filter(env):
    env.store.create_account("other", 1_000)
    theirs, _ = env.store.create_key("other", "theirs")
    settle(env.store, "other", "theirs1", 10, key_id=theirs.id)
    browser, _ = login(env)
    result = browser.get(f"/console/usage?key={theirs.id}")
    assert result.status_code == 400 and "theirs1" not in result.text


def test_topup_history_lists_topups_adjustments_and_debt(env):
    browser, _ = login(env)
    env.store.topup("acme", 2_500_000_000, note="invoice 42")
    env.store.adjust("acme", -500_000_000, note="refund correction")
    page = browser.get("/console/topups")
    assert page.status_code == 200
    assert "+2.5" in page.text and "invoice 42" in page.text
    assert "-0.5" in page.text and "refund correction" in page.text
    assert "+1.234567" in page.text  # the account's initial credits


def test_topup_history_is_paged_older_and_newer(admin_env):
    for i in range(60):
        admin_env.store.topup("acme", 1_000_000 + i, note=f"invoice {i}")
    browser, _ = login(admin_env)
    operator = admin_login(admin_env)
    acme = admin_env.store.get_account("acme").id
    for client, path, size in ((browser, "/console/topups", 50),
                               (operator, f"/console/admin/accounts/{acme}", 50)):
        first = client.get(path)
        notes = re.findall(r"invoice (\d+)", first.text)
        assert notes[:2] == ["59", "58"] and len(notes) == size
        assert "prev" not in links(first)
        older = client.get(path + links(first)["next"].split("#")[0])
        rest = re.findall(r"invoice (\d+)", older.text)
        assert rest == [str(i) for i in range(59 - size, -1, -1)]
        assert "initial credits" in older.text and "next" not in links(older)
        back = client.get(path + links(older)["prev"].split("#")[0])
        assert re.findall(r"invoice (\d+)", back.text) == notes
        assert client.get(path + "?before=bm9wZQ").status_code == 400


def test_keys_page_shows_each_keys_spend(env):
    browser, _ = login(env)
    laptop = env.store.list_keys("acme")[0]
    server, _ = env.store.create_key("acme", "server")
    settle(env.store, "acme", "k1", 300_000_000, key_id=server.id)
    settle(env.store, "acme", "k2", 200_000_000, key_id=server.id,
           when=datetime.now(UTC) - timedelta(days=40))
    page = browser.get("/console/keys").text
    row = page[page.index(">server<"):]
    row = row[:row.index("</tr>")]
    assert 'spend-total">0.5<' in row and 'spend-today">0.3<' in row
    assert 'spend-month">0.3<' in row
    mine = page[page.index(">laptop"):]
    assert 'spend-total">0<' in mine[:mine.index("</tr>")]
    assert laptop.id


def test_operator_revokes_any_key_of_an_account(admin_env):
    browser = admin_login(admin_env)
    account = admin_env.store.get_account("acme")
    key, _ = admin_env.store.create_key("acme", "ci")
    page = f"/console/admin/accounts/{account.id}"
    result = browser.submit(page, f"{page}/keys/{key.id}/revoke")
    assert result.status_code == 303
    assert admin_env.store.get_key(key.id).revoked_at is not None
    admin_env.store.create_account("other", 0)
    theirs, _ = admin_env.store.create_key("other", "theirs")
    result = browser.submit(page, f"{page}/keys/{theirs.id}/revoke")
    assert result.status_code == 404
    assert admin_env.store.get_key(theirs.id).revoked_at is None


def test_operator_disables_and_enables_an_account(admin_env):
    browser = admin_login(admin_env)
    account = admin_env.store.get_account("acme")
    page = f"/console/admin/accounts/{account.id}"
    result = browser.submit(page, f"{page}/disable", disabled="1")
    assert result.status_code == 303 and result.headers["location"].endswith("done=disabled")
    assert admin_env.store.get_account("acme").disabled_at is not None
    shown = browser.get(page).text
    assert "Enable account" in shown and "account_disabled" in shown
    assert "disabled" in browser.get("/console/admin").text
    result = browser.submit(page, f"{page}/disable", disabled="0")
    assert result.status_code == 303
    assert admin_env.store.get_account("acme").disabled_at is None
    assert browser.post(f"{page}/disable", {"disabled": "1", "csrf": "forged"}).status_code == 403
    assert admin_env.store.get_account("acme").disabled_at is None


def test_key_limits_are_shown_edited_and_cleared_in_the_console(env):
    browser, _ = login(env)
    key, _ = env.store.create_key("acme", "app")
    page = f"/console/keys/{key.id}/limits"
    result = browser.submit(page, page, models="openai/*, anthropic/claude-haiku-4-5",
                            rpm="60", tpm="", spend_limit="12.5", daily_limit="0.000000001",
                            monthly_limit="", expires="2027-01-31T08:30")
    assert result.status_code == 303 and result.headers["location"].endswith("done=limits")
    limits = env.store.get_key(key.id).limits
    assert limits.models == ("openai/*", "anthropic/claude-haiku-4-5") and limits.rpm == 60
    assert limits.tpm is None and limits.monthly_limit_nano is None
    assert (limits.spend_limit_nano, limits.daily_limit_nano) == (12_500_000_000, 1)
    assert limits.expires_at == datetime(2027, 1, 31, 8, 30, tzinfo=UTC)
    listed = browser.get("/console/keys").text
    for text in ("60 requests/min", "12.5 credits in all", "0.000000001 credits a day",
                 "expires 2027-01-31 08:30 UTC", "models: openai/*, anthropic/claude-haiku-4-5"):
        assert text in listed, text
    form = browser.get(page).text
    assert 'value="12.5"' in form and 'value="2027-01-31T08:30"' in form
    result = browser.submit(page, page, models="", rpm="", tpm="", spend_limit="",
                            daily_limit="", monthly_limit="", expires="")
    assert result.status_code == 303 and env.store.get_key(key.id).limits is None


@pytest.mark.parametrize("field,value,named", [
    ("rpm", "0", "Requests per minute"), ("tpm", "1.5", "Tokens per minute"),
    ("spend_limit", "-1", "Spend limit in all"), ("daily_limit", "0.0000000001", "Daily"),
    ("monthly_limit", "1e3", "Monthly"), ("expires", "next week", "Expires"),
    ("models", " , ", "Models allowed"),
])
def test_bad_key_limits_are_a_400_naming_the_field_and_change_nothing(env, field, value, named):
    browser, _ = login(env)
    key, _ = env.store.create_key("acme", "app")
    page = f"/console/keys/{key.id}/limits"
    result = browser.submit(page, page, **{field: value})
    assert result.status_code == 400 and named in result.text
    assert env.store.get_key(key.id).limits is None


def test_limits_of_another_accounts_key_are_404(env):
    env.store.create_account("other", 0)
    theirs, _ = env.store.create_key("other", "theirs")
    browser, _ = login(env)
    page = "/console/keys"
    assert browser.get(f"/console/keys/{theirs.id}/limits").status_code == 404
    result = browser.submit(page, f"/console/keys/{theirs.id}/limits", rpm="1")
    assert result.status_code == 404 and env.store.get_key(theirs.id).limits is None
