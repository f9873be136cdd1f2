"""The bench's post-run money check: what `tokmodel accounts audit` checks, for the accounts
the bench used, in one read snapshot that never blocks the gateway, fast at any size.

Contract
--------
`check(db, names)` reads the database of `db` (a databases.Database; SQLite through a
read-only connection, PostgreSQL in a REPEATABLE READ transaction) and returns
{"ok", "seconds", "outstanding_holds", "outstanding_hold_amount", "outstanding_hold_unit",
"usage_rows_by_status", "accounts": {name: {...}}}. Per account named in `names` (missing
ones are a problem), the invariants of runtime/store/ledger.audit: balance and debt equal
the sums of the account's ledger entries; its open holds are exactly its hold entries with
neither a settle nor a release entry, for the same amounts; every usage row has exactly one
settle entry and costs what its request's entries charged (hold + release + settle + debt);
every settle entry has a usage row (the bench never prunes usage rows); no request has two
usage rows. `outstanding_*` and `usage_rows_by_status` cover the whole database.

Why not the command line: `accounts audit` finds settle entries without a usage row with a
correlated nested loop, quadratic in the account's usage rows on SQLite (25 s at 4,000
rows), under the write lock; here that check is an anti-join against the account's request
ids (tens of ms). The bench still runs the command on the accounts that are small.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from typing import Any

from tests.bench.databases import Database

_KINDS = "('hold', 'release', 'settle', 'debt')"
QUERIES = {
    "totals": "SELECT COALESCE(SUM(amount_nano), 0), COALESCE(SUM(debt_nano), 0), COUNT(*) "
              "FROM ledger_entries WHERE account_id = :account",
    "open_entries": "SELECT e.reference, -e.amount_nano FROM ledger_entries e "
                    "WHERE e.account_id = :account AND e.kind = 'hold' AND NOT EXISTS ("
                    "SELECT 1 FROM ledger_entries c WHERE c.account_id = e.account_id "
                    "AND c.reference = e.reference AND c.kind IN ('settle', 'release'))",
    "holds": "SELECT request_id, amount_nano FROM holds WHERE account_id = :account",
    "charges": "SELECT COUNT(*) FROM usage_log u LEFT JOIN (SELECT reference, "
               "SUM(debt_nano) - SUM(amount_nano) AS charge, SUM(CASE WHEN kind = 'settle' "
               "THEN 1 ELSE 0 END) AS settles FROM ledger_entries WHERE account_id = :account "
               f"AND kind IN {_KINDS} GROUP BY reference) c ON c.reference = u.request_id "
               "WHERE u.account_id = :account AND (c.reference IS NULL OR c.settles <> 1 "
               "OR c.charge <> u.cost_nano)",
    "unlogged": "SELECT COUNT(*) FROM ledger_entries e WHERE e.account_id = :account "
                "AND e.kind = 'settle' AND e.reference NOT IN (SELECT request_id "
                "FROM usage_log WHERE account_id = :account)",
    "duplicates": "SELECT COUNT(*) FROM (SELECT request_id FROM usage_log "
                  "WHERE account_id = :account GROUP BY request_id HAVING COUNT(*) > 1) d",
    "usage_rows": "SELECT COUNT(*) FROM usage_log WHERE account_id = :account",
}
WHOLE = {
    "holds": "SELECT COUNT(*), COALESCE(SUM(amount_nano), 0) FROM holds",
    "by_status": "SELECT status, COUNT(*) FROM usage_log GROUP BY status ORDER BY status",
}


def _account(run: Any, account: tuple[int, int, int]) -> dict[str, Any]:
    account_id, balance, debt = account
    p = {"account": account_id}
    problems = []
    ledger_balance, ledger_debt, entries = run(QUERIES["totals"], p)[0]
    if ledger_balance != balance:
        problems.append(f"balance {balance} but the ledger sums to {ledger_balance}")
    if ledger_debt != debt:
        problems.append(f"debt {debt} but the ledger sums to {ledger_debt}")
    open_entries = dict(run(QUERIES["open_entries"], p))
    holds = dict(run(QUERIES["holds"], p))
    if open_entries != holds:
        odd = sorted(set(open_entries.items()) ^ set(holds.items()))[:5]
        problems.append(f"open holds and open hold entries differ, e.g. {odd}")
    counts = {name: run(QUERIES[name], p)[0][0]
              for name in ("charges", "unlogged", "duplicates", "usage_rows")}
    if counts["charges"]:
        problems.append(f"{counts['charges']} usage rows without one settle entry charging "
                        "their cost")
    if counts["unlogged"]:
        problems.append(f"{counts['unlogged']} settle entries without a usage row")
    if counts["duplicates"]:
        problems.append(f"{counts['duplicates']} requests with several usage rows")
    return {"ok": not problems, "problems": problems, "entries": entries,
            "open_holds": len(holds), "usage_rows": counts["usage_rows"],
            "balance_nano": balance}


def _run_all(run: Any, names: list[str]) -> dict[str, Any]:
    accounts = {}
    for name in names:
        row = run("SELECT id, balance_nano, debt_nano FROM accounts WHERE name = :name",
                  {"name": name})
        accounts[name] = (_account(run, row[0]) if row
                          else {"ok": False, "problems": [f"no account named {name!r}"]})
    count, amount = run(WHOLE["holds"], {})[0]
    return {"ok": all(a["ok"] for a in accounts.values()), "outstanding_holds": count,
            "outstanding_hold_amount": int(amount), "outstanding_hold_unit": "amount_nano",
            "usage_rows_by_status": {str(s): n for s, n in run(WHOLE["by_status"], {})},
            "accounts": accounts}


def check(db: Database, names: list[str]) -> dict[str, Any]:
    began = time.perf_counter()
    if db.kind == "sqlite":
        with closing(sqlite3.connect(f"file:{db.path}?mode=ro", uri=True,
                                     isolation_level=None)) as conn:
            conn.execute("BEGIN")   # one snapshot (WAL: readers never block the writers)
            try:
                out = _run_all(lambda sql, p: conn.execute(sql, p).fetchall(), names)
            finally:
                conn.execute("COMMIT")
    else:
        import psycopg

        named = re.compile(r":([a-z]+)\b")
        with psycopg.connect(db.driver_url) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            out = _run_all(lambda sql, p: conn.execute(named.sub(r"%(\1)s", sql), p)
                           .fetchall(), names)
            conn.rollback()
    out["seconds"] = round(time.perf_counter() - began, 2)
    return out
