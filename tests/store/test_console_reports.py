"""What the console adds to the usage queries, on SQLite and PostgreSQL: pages walked back
towards newer rows, the distinct models, totals and days of a time range, per-key spend and
the money history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runtime.store import UsageRecord
from runtime.store.usage_queries import UsageFilter, encode_cursor
from tests.store.test_store import db_url, store  # noqa: F401  (fixtures)

NOON = datetime(2026, 11, 10, 12, tzinfo=UTC)


def _settle(db, account, rid, cost, when, **fields):
    assert db.hold(rid, account.id, cost)
    fields.setdefault("model", "m1")
    db.settle(rid, cost, UsageRecord(
        request_id=rid, account_id=account.id, key_id=fields.pop("key_id", None),
        endpoint=fields.pop("endpoint", "chat"), provider="p", status=200, created_at=when,
        **fields))


def test_pages_totals_daily_and_bounds(store):  # noqa: F811
    acct = store.create_account("acme", 10**12)
    other = store.create_account("other", 10**12)
    for i in range(23):
        _settle(store, acct, f"r{i:02d}", 1000 + i, NOON + timedelta(hours=5 * i),
                model="m1" if i % 3 else "m2", prompt_tokens=2, completion_tokens=i,
                details={"images": 1} if i % 2 else {})
    _settle(store, other, "x", 5, NOON)
    where = UsageFilter(account_id=acct.id)
    first, older = store.usage_page(where, 10)
    assert [r.request_id for r in first] == [f"r{i:02d}" for i in range(22, 12, -1)]
    second, older = store.usage_page(where, 10, older)
    third, older = store.usage_page(where, 10, older)
    assert [r.request_id for r in third] == ["r02", "r01", "r00"] and older is None
    back, above = store.usage_page_newer(where, 10, encode_cursor(third[0].id))
    assert back == second and above == encode_cursor(second[0].id)
    top, above = store.usage_page_newer(where, 10, above)
    assert top == first and above is None
    partial, above = store.usage_page_newer(where, 10, encode_cursor(first[2].id))
    assert partial == first[:2] and above is None

    totals = store.usage_totals(where)
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (23, 46, 253)
    assert totals.cost_nano == sum(1000 + i for i in range(23))
    assert totals.units == {"images": 11}

    day = UsageFilter(account_id=acct.id, since=NOON.replace(hour=0) + timedelta(days=1),
                      until=NOON.replace(hour=0) + timedelta(days=2))
    in_day = [i for i in range(23) if (NOON + timedelta(hours=5 * i)).day == 11]
    assert store.usage_totals(day).requests == len(in_day)

    daily = store.usage_daily(where)
    assert sum(d["requests"] for d in daily) == 23
    assert {d["day"] for d in daily} == {(NOON + timedelta(hours=5 * i)).strftime("%Y-%m-%d")
                                         for i in range(23)}
    assert sum(d["cost_nano"] for d in daily if d["model"] == "m2") == sum(
        1000 + i for i in range(0, 23, 3))
    assert store.usage_values(where, "model") == ["m1", "m2"]
    assert store.usage_totals(UsageFilter(account_id=acct.id, model="nope")).requests == 0
    assert sum(len(b) for b in store.usage_batches(where, 7)) == 23


def test_key_spend_and_money_history(store):  # noqa: F811
    acct = store.create_account("acme", 5 * 10**9)
    key, _ = store.create_key("acme", "k")
    now = datetime.now(UTC)
    _settle(store, acct, "today", 300, now, key_id=key.id)
    _settle(store, acct, "old", 200, now - timedelta(days=45), key_id=key.id)
    spend = store.spend_by_key([key.id, "unknownkey"])
    assert (spend[key.id].total, spend[key.id].today, spend[key.id].month) == (500, 300, 300)
    assert spend["unknownkey"].total == 0
    store.topup("acme", 10**9, note="invoice")
    store.adjust("acme", -10, note="fix")
    history = store.money_history(acct.id)
    assert [(e.kind, e.amount_nano, e.note) for e in history[:2]] == [
        ("adjustment", -10, "fix"), ("topup", 10**9, "invoice")]
    assert {e.kind for e in history} == {"topup", "adjustment"}
