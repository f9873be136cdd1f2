"""The usage rollup on SQLite and PostgreSQL: totals, daily series, distinct values and key
spend answer exactly what summing every usage row answers, for filters by account, key,
model, endpoint and time ranges that start and end anywhere, before, during and after rows
are folded, with rows arriving late for old days, with retention pruning folded and unfolded
rows, and when a prune comes between a pass's sums and their writing."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from runtime.admin.rollup import rollup_interval
from runtime.store import UsageRecord
from runtime.store import usage_rollup as rollup
from runtime.store.schema import usage_rollup, usage_rollup_all
from runtime.store.usage_queries import UsageFilter
from tests.store.test_store import db_url, store  # noqa: F401  (fixtures)

START = datetime(2026, 11, 3, tzinfo=UTC)
MODELS = ("m-a", "m-b", "m-c")
ENDPOINTS = ("chat", "rerank")


class Log:
    """The rows written, to sum by hand."""

    def __init__(self, db, seed: int = 11) -> None:
        self.store = db
        self.rng = random.Random(seed)
        self.accounts = [db.create_account(name, 10**15) for name in ("acme", "beta")]
        self.keys = {a.id: [db.create_key(a.name, f"k{i}")[0].id for i in range(2)] + [None]
                     for a in self.accounts}
        self.rows: list[dict] = []

    def add(self, count: int, when=None) -> None:
        rng = self.rng
        for _ in range(count):
            account = rng.choice(self.accounts)
            created = when or START + timedelta(seconds=rng.randrange(6 * 86400))
            units = rng.choice([{}, {}, {"images": rng.randrange(1, 4)},
                                {"seconds": rng.randrange(1, 40) / 4},
                                {"documents": rng.randrange(1, 300), "searches": 1},
                                {"estimated": True}])
            row = {"request_id": f"r{len(self.rows)}", "account_id": account.id,
                   "key_id": rng.choice(self.keys[account.id]), "model": rng.choice(MODELS),
                   "endpoint": rng.choice(ENDPOINTS), "created_at": created,
                   "prompt_tokens": rng.randrange(0, 500),
                   "completion_tokens": rng.randrange(0, 300),
                   "cached_tokens": rng.randrange(0, 20), "details": units,
                   "cost_nano": rng.randrange(1, 10**6)}
            assert self.store.hold(row["request_id"], account.id, row["cost_nano"])
            self.store.settle(row["request_id"], row["cost_nano"], UsageRecord(
                provider="p", status=200, **row))
            self.rows.append(row)

    def prune(self, cutoff: datetime) -> None:
        while self.store.prune_usage(cutoff, 37):
            pass
        self.rows = [row for row in self.rows if row["created_at"] >= cutoff]

    def matching(self, where: UsageFilter) -> list[dict]:
        return [row for row in self.rows if all((
            where.account_id in (None, row["account_id"]),
            where.key_id in (None, row["key_id"]),
            where.model in (None, row["model"]),
            where.endpoint in (None, row["endpoint"]),
            where.since is None or row["created_at"] >= where.since,
            where.until is None or row["created_at"] < where.until))]


def filters(log: Log) -> list[UsageFilter]:
    acme = log.accounts[0].id
    key = log.keys[acme][0]
    day = START + timedelta(days=2)
    ranges = [(None, None), (day, None), (None, day), (day, day + timedelta(days=2)),
              (day + timedelta(hours=5, microseconds=7), None),
              (None, day + timedelta(hours=17, minutes=3)),
              (day - timedelta(hours=3), day + timedelta(days=1, hours=2)),
              (day + timedelta(hours=2), day + timedelta(hours=9)),  # inside one day
              (day + timedelta(hours=9), day + timedelta(hours=2))]  # empty
    out = []
    for since, until in ranges:
        out += [UsageFilter(since=since, until=until),
                UsageFilter(account_id=acme, since=since, until=until),
                UsageFilter(account_id=acme, key_id=key, since=since, until=until),
                UsageFilter(model="m-b", endpoint="rerank", since=since, until=until)]
    return out


def check(log: Log) -> None:
    db = log.store
    for where in filters(log):
        rows = log.matching(where)
        got = db.usage_totals(where)
        assert got.requests == len(rows), where
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_nano"):
            assert getattr(got, name) == sum(row[name] for row in rows), (where, name)
        units: Counter = Counter()
        for row in rows:
            for name, value in row["details"].items():
                if not isinstance(value, bool):
                    units[name] += value
        assert got.units == pytest.approx({k: v for k, v in units.items() if v}), where
        daily = defaultdict(lambda: [0, 0])
        for row in rows:
            sums = daily[(row["created_at"].date().isoformat(), row["model"])]
            sums[0] += 1
            sums[1] += row["cost_nano"]
        assert db.usage_daily(where) == [
            {"day": d, "model": m, "requests": n, "cost_nano": c}
            for (d, m), (n, c) in sorted(daily.items())], where
        for column in ("model", "endpoint"):
            assert db.usage_values(where, column) == sorted({r[column] for r in rows})
    keys = [k for ks in log.keys.values() for k in ks if k]
    now = db.clock()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent = db.spend_by_key(keys)
    for key in keys:
        mine = [r for r in log.rows if r["key_id"] == key]
        assert (spent[key].total, spent[key].today, spent[key].month) == (
            sum(r["cost_nano"] for r in mine),
            sum(r["cost_nano"] for r in mine if r["created_at"] >= day),
            sum(r["cost_nano"] for r in mine if r["created_at"] >= day.replace(day=1)))


def sums_in_rollup(db) -> int:
    """Requests summed in the rollup (both tables agree)."""
    with db.engine.connect() as conn:
        per_key, overall = (conn.execute(select(func.coalesce(func.sum(t.c.requests), 0)))
                            .scalar() for t in (usage_rollup, usage_rollup_all))
    assert per_key == overall
    return per_key


def test_reports_are_the_same_before_during_and_after_folding(store):  # noqa: F811
    log = Log(store)
    log.add(400)
    check(log)  # nothing folded: every row read from usage_log
    assert store.rollup_usage(lag_seconds=0, most=150) == 150
    assert sums_in_rollup(store) == 150
    check(log)  # part folded
    while store.rollup_usage(lag_seconds=0, most=150):
        pass
    assert sums_in_rollup(store) == 400
    check(log)  # all folded
    log.add(60)  # rows for old days arrive after those days were folded
    log.add(5, when=datetime.now(UTC))  # and rows of today, too recent to fold yet
    assert store.rollup_usage(lag_seconds=3600) == 60
    check(log)
    assert store.rollup_usage(lag_seconds=0) == 5
    check(log)
    assert sums_in_rollup(store) == 465
    assert store.rollup_usage(lag_seconds=0) == 0


def test_pruning_takes_folded_rows_out_of_the_sums(store):  # noqa: F811
    log = Log(store, seed=5)
    log.add(300)
    store.rollup_usage(lag_seconds=0, most=200)  # some rows folded, some not
    log.prune(START + timedelta(days=2, hours=7, minutes=13))  # in the middle of a day
    check(log)
    store.rollup_usage(lag_seconds=0)
    log.prune(START + timedelta(days=3))
    check(log)
    assert sums_in_rollup(store) == len(log.rows)
    log.prune(START + timedelta(days=30))  # everything: no sum is left behind
    with store.engine.connect() as conn:
        for table in (usage_rollup, usage_rollup_all):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
    check(log)


def test_a_pass_summed_before_a_prune_is_not_written_after_it(store):  # noqa: F811
    log = Log(store, seed=9)
    log.add(200)
    cutoff = START + timedelta(days=1)

    @contextmanager
    def writer_after_a_prune():
        log.prune(cutoff)  # another worker prunes between this pass's reading and writing
        with store.engine.begin() as conn:
            yield conn

    assert rollup.roll_up(store._reader.connect, writer_after_a_prune, 0, 10**6) == 0
    assert sums_in_rollup(store) == 0
    check(log)
    assert store.rollup_usage(lag_seconds=0) == len(log.rows)
    check(log)


@pytest.mark.parametrize("value", ["0", "-5", "often"])
def test_a_bad_rollup_interval_is_named(value):
    with pytest.raises(ValueError, match="TOKMODEL_USAGE_ROLLUP_SECONDS"):
        rollup_interval({"TOKMODEL_USAGE_ROLLUP_SECONDS": value})
    assert rollup_interval({}) == 30


def test_a_unit_that_is_not_a_finite_number_does_not_stop_the_fold(store):  # noqa: F811
    """The database parses each row's units when it folds them: a NaN or an infinity (which
    only Python's JSON parser takes) is stored as null, so the fold goes on past that row."""
    account = store.create_account("odd", 10**12)
    for rid, details in (("r-nan", {"seconds": float("nan"), "images": 2}),
                         ("r-inf", {"seconds": float("-inf"), "tags": [float("inf")]}),
                         ("r-ok", {"seconds": 1.5})):
        assert store.hold(rid, account.id, 10)
        store.settle(rid, 10, UsageRecord(
            request_id=rid, account_id=account.id, key_id=None, endpoint="chat", model="m",
            provider="p", status=200, details=details, cost_nano=10))
    where = UsageFilter(account_id=account.id)
    before = store.usage_totals(where)
    assert store.rollup_usage(lag_seconds=0) == 3
    after = store.usage_totals(where)
    assert after.requests == before.requests == 3
    assert after.units == before.units == {"images": 2, "seconds": 1.5}
