"""What the console adds to the usage queries, on SQLite and PostgreSQL: pages walked back
towards newer rows, the distinct models, totals and days of a time range, per-key spend and
the money history in keyset pages (read through its partial index)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text

from runtime.store import UsageRecord
from runtime.store.money_history import page as history_query_page
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
    history, _ = store.money_history(acct.id)
    assert [(e.kind, e.amount_nano, e.note) for e in history[:2]] == [
        ("adjustment", -10, "fix"), ("topup", 10**9, "invoice")]
    assert {e.kind for e in history} == {"topup", "adjustment"}


def test_money_history_pages_walk_every_entry_once_both_ways(store):  # noqa: F811
    acct = store.create_account("acme", 10**9)  # the initial credits are a top-up too
    for i in range(60):
        store.topup("acme", 1 + i, note=f"t{i}")
        store.adjust("acme", -1, note=f"a{i}")
        if i % 20 == 0:  # requests write holds and settles: never in the history
            _settle(store, acct, f"req{i}", 5, datetime.now(UTC))
    seen, cursor, pages = [], None, []
    while True:
        entries, cursor = store.money_history(acct.id, 50, cursor)
        pages.append(cursor)
        seen += entries
        if len(pages) == 1:
            store.topup("acme", 7, note="late")  # arrives while paging: newer than page 1
        if cursor is None:
            break
    assert len(seen) == 121 and len(pages) == 3
    assert [e.note for e in seen[:2]] == ["a59", "t59"]
    assert seen[-1].note == "initial credits" and {e.kind for e in seen} == {"topup",
                                                                          "adjustment"}
    assert len({(e.reference, e.kind) for e in seen}) == 121
    times = [(e.created_at, e.reference, e.kind) for e in seen]
    assert times == sorted(times, reverse=True)
    # back up from the third page: the second page again, then the first and the late one
    third, _ = store.money_history(acct.id, 50, pages[1])
    back, above = store.money_history_newer(acct.id, 50, encode_history(third[0]))
    assert back == seen[50:100] and above is not None
    top, above = store.money_history_newer(acct.id, 50, above)
    assert top == seen[:50] and above is not None
    newest, above = store.money_history_newer(acct.id, 50, above)
    assert [e.note for e in newest] == ["late"] and above is None
    # the top-ups alone (the admin API's history), paged the same way
    first, following = store.topups("acme", 25)
    assert [t["note"] for t in first[:3]] == ["late", "t59", "t58"]
    rest, end = store.topups("acme", 100, following)
    assert end is None and len(first) + len(rest) == 62
    assert rest[-1]["note"] == "initial credits"
    for bad in ("nope", encode_cursor(5), "eyJ4IjogMX0"):
        with pytest.raises(ValueError):
            store.money_history(acct.id, 50, bad)
        with pytest.raises(ValueError):
            store.topups("acme", 10, bad)


def encode_history(entry):
    from runtime.store.money_history import encode_cursor as encode

    return encode(entry)


def test_money_history_reads_the_partial_index(store):  # noqa: F811
    """The history's queries (a page below a cursor, the top-ups alone) read the ledger's
    partial index of the history kinds, in its order: no scan of the account's request
    entries, no sort."""
    acct = store.create_account("acme", 10**9)
    entries, _ = store.money_history(acct.id, 1)
    captured = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    with store.engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", keep)
        history_query_page(conn, acct.id, 50, cursor=encode_history(entries[0]))
        history_query_page(conn, acct.id, 50, ("topup",))
        event.remove(conn, "before_cursor_execute", keep)
        assert len(captured) == 2
        if conn.dialect.name == "postgresql":  # as if the ledger were large
            conn.execute(text("SET enable_seqscan = off"))
        for statement, parameters in captured:
            if conn.dialect.name == "sqlite":
                plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters).all())
                assert "USING INDEX ix_ledger_entries_history" in plan, plan
                assert "TEMP B-TREE" not in plan, plan  # the index gives the order too
            else:
                plan = " ".join(row[0] for row in conn.exec_driver_sql(
                    "EXPLAIN " + statement, parameters).all())
                assert "ix_ledger_entries_history" in plan, plan
                assert "Sort" not in plan, plan
