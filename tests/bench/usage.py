"""`python -m tests.bench.usage [--rows N] [--database URL]` (`make bench-usage`): the usage
API and the console's usage pages over a large usage log.

Fills N usage rows (default 1,000,000; 50 accounts, 4 keys each, 6 models plus a rare
rerank model on 0.1 % of the rows, spread over 90 days) straight into the database in
batches, then starts the gateway under gunicorn with an admin token, waits for its periodic
rollup to fold the rows into the daily sums (the time is printed), and times over HTTP: the
first page, a page deep down the cursor chain, pages filtered by account, key, model (common
and rare) and time range, the totals and the daily series of an account, of a key and of
everything (with a time range that starts mid-day too), a CSV export of one key, the
own-account API of a key, and the console's usage page (page, totals, chart, filter lists)
and keys page (spend per key) of an account. Prints a Markdown table of the median of
`--repeat` calls; asserts nothing. Works in a temporary directory removed at the end (SQLite
by default; `--database` points it at PostgreSQL, whose tables it fills and ANALYZEs).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from sqlalchemy import func, insert, select, text

from runtime.store import Store, open_store
from runtime.store.schema import usage_log, usage_rollup_state
from tests.harness import start_gateway

TOKEN = "bench-admin-token-0123456789abcdef"
MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-haiku-4-5",
          "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "openai/text-embedding-3-small")
RARE = "cohere/rerank-v3.5"  # 0.1 % of the rows
BATCH = 20_000


def fill(store: Store, rows: int, seed: int = 7) -> tuple[list[str], list[str], dict]:
    """Accounts, keys and `rows` usage rows; returns (account names, key ids, secrets:
    {"key": an inference key of account 0, "manage": a management key of account 0})."""
    rng = random.Random(seed)
    names, keys, secrets = [], [], {}
    for a in range(50):
        name = f"bench-{a:02d}"
        account = store.create_account(name, 10**15)
        names.append(name)
        for k in range(4):
            record, secret = store.create_key(name, f"key-{k}", manage=k == 0)
            keys.append((account.id, record.id))
            if a == 0:
                secrets["manage" if k == 0 else "key"] = secret
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=90) / max(rows, 1)
    engine = store._engine  # noqa: SLF001 - the bench fills the store's own database
    made = 0
    while made < rows:
        chunk = []
        for i in range(made, min(made + BATCH, rows)):
            account_id, key_id = keys[rng.randrange(len(keys))]
            rare = rng.randrange(1000) == 0
            chunk.append({
                "request_id": f"req_bench_{i}", "created_at": start + step * i,
                "account_id": account_id, "key_id": key_id,
                "endpoint": "rerank" if rare else "chat",
                "model": RARE if rare else MODELS[rng.randrange(len(MODELS))],
                "provider": "cohere" if rare else "openai", "status": 200,
                "prompt_tokens": 0 if rare else rng.randrange(10, 2000),
                "completion_tokens": 0 if rare else rng.randrange(0, 800), "cached_tokens": 0,
                "details": json.dumps({"documents": rng.randrange(1, 300), "searches": 1})
                if rare else "{}",
                "cost_nano": rng.randrange(1, 5_000_000),
                "latency_ms": rng.randrange(50, 3000)})
        with engine.begin() as conn:
            conn.execute(insert(usage_log), chunk)
        made += len(chunk)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # what autovacuum does to a table this size
            conn.execute(text("ANALYZE"))
    return names, [key for _, key in keys], secrets


def wait_for_rollup(store: Store, timeout: float = 1800) -> float:
    """Seconds until the gateway's periodic rollup has folded every row."""
    began = time.perf_counter()
    with store.engine.connect() as conn:
        newest = conn.execute(select(func.max(usage_log.c.id))).scalar() or 0
    while time.perf_counter() - began < timeout:
        with store.engine.connect() as conn:
            folded = conn.execute(select(usage_rollup_state.c.rolled_to)).scalar() or 0
        if folded >= newest:
            break
        time.sleep(0.5)
    return time.perf_counter() - began


def timed(session: requests.Session, url: str, params: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = session.get(url, params=params, timeout=600)
        answer.raise_for_status()
        _ = answer.content
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def console_session(url: str, secret: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{url}/console/login", timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = session.post(f"{url}/console/login", data={"key": secret, "csrf": csrf},
                          allow_redirects=False, timeout=60)
    answer.raise_for_status()
    return session


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.usage", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", help="a database URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokmodel-bench-usage-") as tmp:
        database = args.database or f"sqlite:///{Path(tmp) / 'tokmodel.db'}"
        env = {"TOKMODEL_ADMIN_TOKEN": TOKEN, "TOKMODEL_USAGE_ROLLUP_SECONDS": "1",
               "TOKMODEL_DATABASE_URL": database}
        began = time.perf_counter()
        with open_store(database) as store:  # filled before the gateway starts folding
            names, keys, secrets = fill(store, args.rows)
        print(f"filled {args.rows:,} usage rows in {time.perf_counter() - began:.1f} s")
        gw = start_gateway(Path(tmp), env)
        try:
            print(f"the gateway's rollup (every second) folded them in "
                  f"{wait_for_rollup(gw.store):.1f} s")
            admin = requests.Session()
            admin.headers["Authorization"] = f"Bearer {TOKEN}"
            own = requests.Session()
            own.headers["Authorization"] = f"Bearer {secrets['key']}"
            console = console_session(gw.url, secrets["manage"])
            base = f"{gw.url}/admin/v1"
            deep = None
            params = {"limit": 100}
            for _ in range(50):  # 5,000 rows down the cursor chain
                deep = admin.get(f"{base}/usage", params=params, timeout=600).json()
                params = {"limit": 100, "cursor": deep["next_cursor"]}
            now = datetime.now(UTC)
            week = (now - timedelta(days=7)).isoformat()
            month = (now - timedelta(days=30)).date().isoformat()
            cases = [
                (admin, "first page (100 rows)", "/usage", {"limit": 100}),
                (admin, "page 51 (cursor)", "/usage", params),
                (admin, "account page", "/usage", {"account": names[0]}),
                (admin, "key page", "/usage", {"key": keys[0]}),
                (admin, "model page", "/usage", {"model": MODELS[2]}),
                (admin, "rare model page (0.1 % of rows)", "/usage", {"model": RARE}),
                (admin, "account + last 7 days", "/usage", {"account": names[1],
                                                            "since": week}),
                (admin, "totals, one account", "/usage/totals", {"account": names[2]}),
                (admin, "totals, one key", "/usage/totals", {"key": keys[5]}),
                (admin, "totals, everything", "/usage/totals", {}),
                (admin, "totals, everything, last 7 days (from mid-day)", "/usage/totals",
                 {"since": week}),
                (admin, "daily series, one account", "/usage/daily", {"account": names[3]}),
                (admin, "daily series, everything", "/usage/daily", {}),
                (admin, "CSV export, one key (~5,000 rows)", "/usage",
                 {"key": keys[1], "format": "csv"}),
                (own, "own account (`GET /v1/account`, spend)", "@/v1/account", {}),
                (own, "own usage page (`/v1/account/usage`)", "@/v1/account/usage", {}),
                (console, "console usage page (one account)", "@/console/usage", {}),
                (console, "console usage page, last 30 days, one model", "@/console/usage",
                 {"since": month, "model": MODELS[0]}),
                (console, "console keys page (spend per key)", "@/console/keys", {}),
            ]
            print(f"\n| query over {args.rows:,} rows | median ms |\n|---|---:|")
            for session, label, path, query in cases:
                url = gw.url + path[1:] if path.startswith("@") else base + path
                print(f"| {label} | {timed(session, url, query, args.repeat):.1f} |")
        finally:
            gw.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
