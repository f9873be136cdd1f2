"""Filling a gateway database with a history of settled requests, straight through the database
driver (fast: batched executemany on SQLite, COPY on PostgreSQL).

Contract
--------
`fill(db_url, rows, into=("bench",), ...)` adds `rows` settled requests to a database the
gateway has already migrated (the bench first runs `tokmodel accounts create` on it), spread
over `accounts` accounts in all (the accounts named in `into`, which must exist, plus new ones
named `fill-NN`, each with `keys` keys that can never authenticate: random hashes) and over
the last `days` days, oldest first, on six models with realistic token counts, costs and
latencies (about 1 in 50 is a 499 or 502 that was charged nothing). Every request is written
the way the gateway settles one: a `hold` ledger entry (-held), a `settle` entry (held - cost)
and its usage row (cost), and each account's balance goes down by the costs, so every
account still passes `tokmodel accounts audit`. New accounts get a `topup` entry of their
opening credits. With `fold` (the default) every row is then folded into the usage sums
through the store, as the gateway folds rows seconds after writing them; without it they are
left as a backlog for the gateway's paced fold, as after an upgrade from a version without
the sums. Deterministic for a seed. Returns {"rows", "accounts", "seconds",
"ledger_entries"} and, with `fold`, {"folded", "fold_seconds"}. Before the fold, SQLite's
WAL is checkpointed and truncated, and PostgreSQL's filled tables are vacuumed and analysed
(the state autovacuum brings a real database to).
It writes only the columns the ledger and the usage log have had since migration 9 and
fails loudly when one is missing.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

MODELS = (  # (model, provider, nano-credits per prompt token, per completion token)
    ("openai/gpt-4o-mini", "openai", 150, 600),
    ("openai/gpt-4o", "openai", 2500, 10000),
    ("anthropic/claude-haiku-4-5", "anthropic", 1000, 5000),
    ("anthropic/claude-sonnet-4-5", "anthropic", 3000, 15000),
    ("gemini/gemini-2.5-flash", "gemini", 300, 2500),
    ("openai/text-embedding-3-small", "openai", 20, 0),
)
OPENING_CREDITS_NANO = 10**18   # a billion credits: no filled account ever runs dry
BATCH = 50_000
USAGE_COLUMNS = ("request_id", "created_at", "account_id", "key_id", "endpoint", "model",
                 "provider", "status", "prompt_tokens", "completion_tokens", "cached_tokens",
                 "details", "cost_nano", "latency_ms")
ENTRY_COLUMNS = ("account_id", "reference", "kind", "amount_nano", "debt_nano", "created_at")


def _requests(rows: int, owners: list[tuple[int, list[str]]], days: float, seed: int
              ) -> Iterator[tuple[tuple, tuple, tuple]]:
    """(usage row, hold entry, settle entry) per request, oldest first; created_at values
    are naive UTC datetimes."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
    step = timedelta(days=days) / max(rows, 1)
    for i in range(rows):
        account_id, keys = owners[rng.randrange(len(owners))]
        model, provider, per_prompt, per_completion = MODELS[rng.randrange(len(MODELS))]
        embedding = per_completion == 0
        prompt = rng.randrange(8, 4000)
        completion = 0 if embedding else rng.randrange(1, 1200)
        cached = rng.randrange(0, prompt // 2) if rng.random() < 0.2 else 0
        status = 200 if rng.random() >= 0.02 else rng.choice((499, 502))
        cost = 0 if status == 502 else prompt * per_prompt + completion * per_completion
        held = cost + rng.randrange(0, 4_000_000) * (per_completion or 1)
        latency = rng.randrange(40, 400 if embedding else 9000)
        at = start + step * i
        done = at + timedelta(milliseconds=latency)
        rid = f"req_fill{seed}_{i:08d}"
        yield ((rid, done, account_id, keys[rng.randrange(len(keys))],
                "embeddings" if embedding else "chat", model, provider, status, prompt,
                completion, cached, "{}", cost, latency),
               (account_id, rid, "hold", -held, 0, at),
               (account_id, rid, "settle", held - cost, 0, done))


def _fill(target: Any, rows: int, into: tuple[str, ...], accounts: int, keys: int,
          days: float, seed: int) -> dict[str, Any]:
    began = time.perf_counter()
    target.check_columns()
    now = datetime.now(UTC).replace(tzinfo=None)
    owners: list[tuple[int, list[str]]] = []
    for name in into:
        account_id = target.account_id(name)
        if account_id is None:
            raise RuntimeError(f"fill: no account named {name!r}")
        owners.append((account_id, target.key_ids(account_id) or [None]))
    for n in range(max(0, accounts - len(owners))):
        account_id = target.new_account(f"fill-{seed}-{n:02d}", now)
        key_ids = [target.new_key(account_id, f"fill-key-{k}", now) for k in range(keys)]
        owners.append((account_id, key_ids))
    spent: dict[int, int] = {}
    usage, entries = [], []
    made = 0
    for row, hold, settle in _requests(rows, owners, days, seed):
        usage.append(row)
        entries += (hold, settle)
        spent[row[2]] = spent.get(row[2], 0) + row[12]
        if len(usage) >= BATCH:
            target.write(usage, entries)
            made += len(usage)
            usage, entries = [], []
    if usage:
        target.write(usage, entries)
        made += len(usage)
    target.charge(spent)
    target.finish()
    return {"rows": made, "accounts": len(owners), "ledger_entries": 2 * made,
            "seconds": round(time.perf_counter() - began, 1)}


class _Sqlite:
    """A SQLite file, written through one connection in batched transactions."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.execute("PRAGMA cache_size = -262144")   # 256 MiB: the indexes stay cached
        self.db.execute("PRAGMA synchronous = OFF")

    def time(self, value: datetime) -> str:   # SQLAlchemy's SQLite format: naive UTC text
        return value.isoformat(sep=" ", timespec="microseconds")

    def check_columns(self) -> None:
        for table, wanted in (("usage_log", USAGE_COLUMNS), ("ledger_entries", ENTRY_COLUMNS),
                              ("api_keys", ("id", "account_id", "secret_hash"))):
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            missing = set(wanted) - have
            if missing:
                raise RuntimeError(f"fill: {table} lacks {sorted(missing)}: schema changed")

    def account_id(self, name: str) -> int | None:
        row = self.db.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def key_ids(self, account_id: int) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM api_keys WHERE account_id = ? ORDER BY created_at", (account_id,))]

    def new_account(self, name: str, now: datetime) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        cur = self.db.execute("INSERT INTO accounts (name, balance_nano, created_at, debt_nano) "
                              "VALUES (?, ?, ?, 0)", (name, OPENING_CREDITS_NANO, self.time(now)))
        account_id = cur.lastrowid
        self.db.execute("INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, "
                        "debt_nano, created_at, note) VALUES (?, ?, 'topup', ?, 0, ?, ?)",
                        (account_id, f"topup_{secrets.token_hex(16)}", OPENING_CREDITS_NANO,
                         self.time(now), "bench fill"))
        self.db.execute("COMMIT")
        return account_id

    def new_key(self, account_id: int, name: str, now: datetime) -> str:
        key_id = "key_" + secrets.token_hex(6)
        self.db.execute("INSERT INTO api_keys (id, account_id, name, secret_hash, "
                        "display_prefix, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (key_id, account_id, name, secrets.token_hex(32), "tm-fill…",
                         self.time(now)))
        return key_id

    def write(self, usage: list[tuple], entries: list[tuple]) -> None:
        t = self.time
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            f"INSERT INTO usage_log ({', '.join(USAGE_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(USAGE_COLUMNS))})",
            [(r[0], t(r[1]), *r[2:]) for r in usage])
        self.db.executemany(
            f"INSERT INTO ledger_entries ({', '.join(ENTRY_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
            [(*e[:5], t(e[5])) for e in entries])
        self.db.execute("COMMIT")

    def charge(self, spent: dict[int, int]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("UPDATE accounts SET balance_nano = balance_nano - ? WHERE id = ?",
                            [(cost, account_id) for account_id, cost in spent.items()])
        self.db.execute("COMMIT")

    def finish(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


class _Postgres:
    """A PostgreSQL database, written with COPY in batched transactions."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.db = psycopg.connect(url, autocommit=True)

    def check_columns(self) -> None:
        for table, wanted in (("usage_log", USAGE_COLUMNS), ("ledger_entries", ENTRY_COLUMNS),
                              ("api_keys", ("id", "account_id", "secret_hash"))):
            have = {r[0] for r in self.db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = current_schema()", (table,))}
            missing = set(wanted) - have
            if missing:
                raise RuntimeError(f"fill: {table} lacks {sorted(missing)}: schema changed")

    def account_id(self, name: str) -> int | None:
        row = self.db.execute("SELECT id FROM accounts WHERE name = %s", (name,)).fetchone()
        return row[0] if row else None

    def key_ids(self, account_id: int) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM api_keys WHERE account_id = %s ORDER BY created_at", (account_id,))]

    def time(self, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC)

    def new_account(self, name: str, now: datetime) -> int:
        with self.db.transaction():
            account_id = self.db.execute(
                "INSERT INTO accounts (name, balance_nano, created_at, debt_nano) "
                "VALUES (%s, %s, %s, 0) RETURNING id",
                (name, OPENING_CREDITS_NANO, self.time(now))).fetchone()[0]
            self.db.execute(
                "INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, "
                "debt_nano, created_at, note) VALUES (%s, %s, 'topup', %s, 0, %s, %s)",
                (account_id, f"topup_{secrets.token_hex(16)}", OPENING_CREDITS_NANO,
                 self.time(now), "bench fill"))
        return account_id

    def new_key(self, account_id: int, name: str, now: datetime) -> str:
        key_id = "key_" + secrets.token_hex(6)
        self.db.execute("INSERT INTO api_keys (id, account_id, name, secret_hash, "
                        "display_prefix, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                        (key_id, account_id, name, secrets.token_hex(32), "tm-fill…",
                         self.time(now)))
        return key_id

    def write(self, usage: list[tuple], entries: list[tuple]) -> None:
        t = self.time
        with self.db.transaction(), self.db.cursor() as cur:
            with cur.copy(f"COPY usage_log ({', '.join(USAGE_COLUMNS)}) FROM STDIN") as copy:
                for r in usage:
                    copy.write_row((r[0], t(r[1]), *r[2:]))
            with cur.copy(f"COPY ledger_entries ({', '.join(ENTRY_COLUMNS)}) "
                          "FROM STDIN") as copy:
                for e in entries:
                    copy.write_row((*e[:5], t(e[5])))

    def charge(self, spent: dict[int, int]) -> None:
        with self.db.transaction(), self.db.cursor() as cur:
            cur.executemany("UPDATE accounts SET balance_nano = balance_nano - %s WHERE id = %s",
                            [(cost, account_id) for account_id, cost in spent.items()])

    def finish(self) -> None:
        for table in ("usage_log", "ledger_entries", "accounts", "api_keys"):
            self.db.execute(f"VACUUM ANALYZE {table}")
        self.db.close()


def fill(db_url: str, rows: int, into: tuple[str, ...] = ("bench",), accounts: int = 50,
         keys: int = 4, days: float = 90.0, seed: int = 7, fold: bool = True
         ) -> dict[str, Any]:
    if db_url.startswith("sqlite:///"):
        target: Any = _Sqlite(db_url[len("sqlite:///"):])
    elif db_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        target = _Postgres(db_url.replace("postgresql+psycopg://", "postgresql://", 1))
    else:
        raise ValueError(f"fill: unsupported database URL {db_url.split(':', 1)[0]}:...")
    out = _fill(target, rows, into, accounts, keys, days, seed)
    if fold:
        out.update(_fold_all(db_url))
    return out


def _fold_all(db_url: str) -> dict[str, Any]:
    """Fold every filled row into the usage sums, as the gateway folds rows within seconds
    of writing them (runtime/store/usage_rollup.py): the state of a database the gateway
    has served these rows from."""
    from runtime.store import open_store

    began = time.perf_counter()
    store = open_store(db_url)
    folded = 0
    try:
        while done := store.rollup_usage(lag_seconds=0, most=50_000):
            folded += done
    finally:
        store.close()
    return {"folded": folded, "fold_seconds": round(time.perf_counter() - began, 1)}
