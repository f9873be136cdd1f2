"""`python -m tests.bench.usage [--rows N] [--database URL]` (`make bench-usage`): the usage
API over a large usage log.

Fills N usage rows (default 1,000,000; 50 accounts, 4 keys each, 6 models, spread over 90
days) straight into the store's database in batches, starts the gateway under gunicorn with
an admin token, and times over HTTP: the first page, a page deep down the cursor chain,
pages filtered by account, key, model and time range, the totals and the daily series of an
account and of everything, and a CSV export of one key. Prints a Markdown table of the
median of `--repeat` calls; asserts nothing. Works in a temporary directory removed at the
end (SQLite by default; `--database` points it at PostgreSQL, whose tables it fills too).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from sqlalchemy import insert

from runtime.store import Store
from runtime.store.schema import usage_log
from tests.harness import start_gateway

TOKEN = "bench-admin-token-0123456789abcdef"
MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-haiku-4-5",
          "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "openai/text-embedding-3-small")
BATCH = 20_000


def fill(store: Store, rows: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """Accounts, keys and `rows` usage rows; returns (account names, key ids)."""
    rng = random.Random(seed)
    names, keys = [], []
    for a in range(50):
        name = f"bench-{a:02d}"
        account = store.create_account(name, 10**15)
        names.append(name)
        for k in range(4):
            record, _ = store.create_key(name, f"key-{k}")
            keys.append((account.id, record.id))
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=90) / max(rows, 1)
    engine = store._engine  # noqa: SLF001 - the bench fills the store's own database
    made = 0
    while made < rows:
        chunk = []
        for i in range(made, min(made + BATCH, rows)):
            account_id, key_id = keys[rng.randrange(len(keys))]
            chunk.append({
                "request_id": f"req_bench_{i}", "created_at": start + step * i,
                "account_id": account_id, "key_id": key_id, "endpoint": "chat",
                "model": MODELS[rng.randrange(len(MODELS))], "provider": "openai",
                "status": 200, "prompt_tokens": rng.randrange(10, 2000),
                "completion_tokens": rng.randrange(0, 800), "cached_tokens": 0,
                "details": "{}", "cost_nano": rng.randrange(1, 5_000_000),
                "latency_ms": rng.randrange(50, 3000)})
        with engine.begin() as conn:
            conn.execute(insert(usage_log), chunk)
        made += len(chunk)
    return names, [key for _, key in keys]


def timed(session: requests.Session, url: str, params: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = session.get(url, params=params, timeout=600)
        answer.raise_for_status()
        _ = answer.content
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.usage", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", help="a database URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokmodel-bench-usage-") as tmp:
        env = {"TOKMODEL_ADMIN_TOKEN": TOKEN}
        if args.database:
            env["TOKMODEL_DATABASE_URL"] = args.database
        gw = start_gateway(Path(tmp), env)
        try:
            began = time.perf_counter()
            names, keys = fill(gw.store, args.rows)
            print(f"filled {args.rows:,} usage rows in {time.perf_counter() - began:.1f} s")
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            base = f"{gw.url}/admin/v1"
            deep = None
            params = {"limit": 100}
            for _ in range(50):  # 5,000 rows down the cursor chain
                deep = session.get(f"{base}/usage", params=params, timeout=600).json()
                params = {"limit": 100, "cursor": deep["next_cursor"]}
            week = (datetime.now(UTC) - timedelta(days=7)).isoformat()
            cases = [
                ("first page (100 rows)", "/usage", {"limit": 100}),
                ("page 51 (cursor)", "/usage", params),
                ("account page", "/usage", {"account": names[0]}),
                ("key page", "/usage", {"key": keys[0]}),
                ("model page", "/usage", {"model": MODELS[2]}),
                ("account + last 7 days", "/usage", {"account": names[1], "since": week}),
                ("totals, one account", "/usage/totals", {"account": names[2]}),
                ("totals, everything", "/usage/totals", {}),
                ("daily series, one account", "/usage/daily", {"account": names[3]}),
                ("CSV export, one key", "/usage", {"key": keys[1], "format": "csv"}),
            ]
            print(f"\n| query over {args.rows:,} rows | median ms |\n|---|---:|")
            for label, path, query in cases:
                print(f"| {label} | {timed(session, base + path, query, args.repeat):.1f} |")
        finally:
            gw.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
