"""The three per-request statements of the store — authenticate, hold, settle — on raw DB-API
connections: the fast path's own on a SQLite file and on PostgreSQL, from the store's
SQLAlchemy pool for SQLite in memory.

They are the gateway's hot path: SQLAlchemy Core's execution machinery costs about 50 µs per
statement, several times the work SQLite itself does, so these run the same SQL as ledger.py
directly on the driver's cursor; settlement runs the one algorithm of ledger.settle_with on
that cursor. A request writes: hold = UPDATE accounts, INSERT holds, INSERT ledger entry;
settle = DELETE holds, UPDATE accounts (unless the cost equals the hold), INSERT ledger
entry (the net movement), INSERT usage_log; two transactions, each committed together with
those of concurrent requests (group_commit.py). On PostgreSQL each is one statement (a
data-modifying CTE) where it can be: every hold, and a settlement whose hold covers its cost
with no key spend to move; the other settlements run settle_with. Semantics are identical to the
Core versions; any driver error rolls back and returns `None`, and the Store then repeats
the call on the Core path, which owns every corner case (duplicate request ids, error
mapping).

On a SQLite file the fast path keeps its own connections with busy_timeout 0 and takes the
write lock cooperatively (sqlite_lock.py). On PostgreSQL its writes run on connections of its
own too, in autocommit mode (see _PgConnections): a job that is one statement, alone in its
batch, is that statement and nothing else, one round trip.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import gevent.lock
from gevent import monkey
from sqlalchemy import Engine

from .checkpoint import take_over_checkpoints
from .group_commit import GroupCommit
from .ledger import settle_with
from .records import UsageRecord
from .sqlite_lock import begin_immediate

_AUTH = ("SELECT k.id, k.account_id, a.name, k.name, k.display_prefix, k.created_at, "
         "k.revoked_at, k.manage, a.disabled_at, k.expires_at, k.models, k.rpm, k.tpm, "
         "k.spend_limit_nano, k.daily_limit_nano, k.monthly_limit_nano, k.version "
         "FROM api_keys k JOIN accounts a ON a.id = k.account_id "
         "WHERE k.secret_hash = :hash AND k.revoked_at IS NULL")
_DEBIT_IF_COVERED = ("UPDATE accounts SET balance_nano = balance_nano - :amount "
                     "WHERE id = :account AND balance_nano >= :amount AND debt_nano = 0 "
                     "RETURNING 1")
# A hold of a request authenticated from the key cache also checks that its key is as it was
# read (key_cache.py): the same statements with this condition on the debit.
_KEY_UNCHANGED = ("AND disabled_at IS NULL AND EXISTS (SELECT 1 FROM api_keys "
                  "WHERE api_keys.id = :key_id AND api_keys.version = :key_version "
                  "AND api_keys.revoked_at IS NULL) ")
_INSERT_HOLD = ("INSERT INTO holds (request_id, account_id, amount_nano, created_at, spend_key) "
                "VALUES (:rid, :account, :amount, :now, :spend_key)")
_INSERT_HOLD_ENTRY = ("INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, "
                      "debt_nano, created_at) VALUES (:account, :rid, 'hold', :taken, 0, :now)")
# PostgreSQL: the three statements of a hold in one, so that a batch of holds needs no answer
# before its commit: one round trip (see _pipelined). No row when the balance does not cover.
_HOLD_IN_ONE = (
    "WITH debit AS (UPDATE accounts SET balance_nano = balance_nano - :amount "
    "WHERE id = :account AND balance_nano >= :amount AND debt_nano = 0 RETURNING id), "
    "held AS (INSERT INTO holds (request_id, account_id, amount_nano, created_at, spend_key) "
    "SELECT :rid, id, :amount, :now, :spend_key FROM debit RETURNING account_id) "
    "INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, debt_nano, "
    "created_at) SELECT account_id, :rid, 'hold', :taken, 0, :now FROM held RETURNING 1")
_INSERT_ENTRY = ("INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, "
                 "debt_nano, created_at) VALUES (:account, :rid, :kind, :amount, :debt, :now)")
_TAKE_HOLD = "DELETE FROM holds WHERE request_id = :rid RETURNING account_id, amount_nano"
_SETTLED = ("SELECT 1 FROM ledger_entries WHERE account_id = :account AND reference = :rid "
            "AND kind = 'settle'")
_CREDIT = "UPDATE accounts SET balance_nano = balance_nano + :amount WHERE id = :account"
_DEBIT = ("UPDATE accounts SET balance_nano = balance_nano - :amount, "
          "debt_nano = debt_nano + :debt WHERE id = :account")
_BALANCE = "SELECT balance_nano FROM accounts WHERE id = :account"
_INSERT_USAGE = (
    "INSERT INTO usage_log (request_id, created_at, account_id, key_id, endpoint, model, "
    "provider, status, prompt_tokens, completion_tokens, cached_tokens, details, cost_nano, "
    "latency_ms) VALUES (:rid, :now, :account, :key, :endpoint, :model, :provider, :status, "
    ":prompt, :completion, :cached, :details, :cost, :latency)")

# PostgreSQL: the common settlement (its hold covers the cost, no key spend to move) in one
# statement, as ledger.settle_with writes it: the hold taken, the rest given back, the settle
# entry and the usage row. A batch of them needs no answer before its commit: one round trip
# (see _pipelined). No row when the hold is gone or does not cover the cost: nothing was
# written, and FastPath.settle runs settle_with.
_SETTLE_IN_ONE = (
    "WITH taken AS (DELETE FROM holds WHERE request_id = :rid AND amount_nano >= :cost "
    "RETURNING account_id, amount_nano - :cost AS net), "
    "credited AS (UPDATE accounts SET balance_nano = balance_nano + taken.net FROM taken "
    "WHERE accounts.id = taken.account_id AND taken.net > 0), "
    "entry AS (INSERT INTO ledger_entries (account_id, reference, kind, amount_nano, "
    "debt_nano, created_at) SELECT account_id, :rid, 'settle', net, 0, :now FROM taken), "
    "logged AS (INSERT INTO usage_log (request_id, created_at, account_id, key_id, endpoint, "
    "model, provider, status, prompt_tokens, completion_tokens, cached_tokens, details, "
    "cost_nano, latency_ms) SELECT :rid, :now, account_id, :key, :endpoint, :model, "
    ":provider, :status, :prompt, :completion, :cached, :details, :cost, :latency "
    "FROM taken) "
    "SELECT 1 FROM taken")

_NAMED = re.compile(r":([a-z_]+)\b")


def _key_checked(sql: str) -> str:
    """A hold's statement whose debit of the account also checks the key (_KEY_UNCHANGED)."""
    debit = "AND debt_nano = 0 "
    return sql.replace(debit, debit + _KEY_UNCHANGED, 1)


LOCK_WAIT_SECONDS = 10.0
MAX_IDLE_CONNECTIONS = 32
# PostgreSQL connections of a process's fast path: authentication (any number of concurrent
# requests; more wait for one) and the heartbeat lane; the holds' and the settlements'
# lanes, one each at a time
PG_CONNECTIONS = 8
PG_RELAXED_CONNECTIONS = 2
# how long a settlement written behind its answer may wait for a hold to share its commit,
# where the two share a lane (SQLite): the next request's, at concurrency 1
SETTLE_LINGER_SECONDS = 0.002


class _SqliteConnections:
    """Connections to one SQLite file, taken and given back without a lock (list pop and
    append are atomic) and dropped in a forked child."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (live := ref()) and live._idle.clear())

    def get(self) -> sqlite3.Connection:
        try:
            return self._idle.pop()
        except IndexError:
            conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # checkpoints run in checkpoint.py's thread, never inside a request's commit
            take_over_checkpoints(conn, self._path)
            return conn

    def put(self, conn: sqlite3.Connection, broken: bool = False) -> None:
        if broken or len(self._idle) >= MAX_IDLE_CONNECTIONS:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        _close_all(self._idle)


class _PgConnections:
    """PostgreSQL connections of the fast path's own, always in autocommit mode: taken from
    the engine's pool once and detached from it (so made with the engine's connect
    arguments), then kept in a list, as _SqliteConnections does. Against a pooled connection
    per job this saves the pool's checkout and check-in, the switches in and out of
    autocommit, and on relaxed ones a SET LOCAL per transaction. A write lane uses one at a
    time (group_commit.py), so a process holds a few. A forked child never touches (nor
    closes) its parent's.

    `relaxed` ones (the lanes of holds, key-spend reservations included, and of
    settlements) commit without waiting for the WAL flush: synchronous_commit off for the
    session. A settlement that waited held its account's row lock until the flush, and the
    account's next hold waited with it: 1 ms at concurrency 1 on a quiet disk, up to 70 ms
    while the disk was busy (the server's lock-wait log). A crash of the database server can
    lose the transactions of its last WAL-writer delay (wal_writer_delay, 200 ms by
    default), each whole or not at all. A durable commit only shortened that exposure: the
    answer leaves before its settlement is written (settle_behind.py), so a charge was always
    exposed to such a crash for as long as its write took, a few ms that become up to some
    200 ms. A hold lost that way is charged by its settlement, which finds no hold and
    charges the balance directly (ledger.settle_with); a settlement lost that way leaves its
    hold, which a sweeper settles (runtime/billing/sweeper.py). Everything else commits as
    the server is configured."""

    def __init__(self, engine: Engine, relaxed: bool, limit: int) -> None:
        self._engine = engine
        self._relaxed = relaxed
        self._limit = limit
        self._idle: list[Any] = []
        self._free = _semaphore(limit)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (live := ref()) and live._forsake())

    def _forsake(self) -> None:
        _INHERITED.extend(self._idle)  # never closed here: the parent's sockets
        self._idle = []
        self._free = _semaphore(self._limit)

    def get(self) -> Any:
        """A psycopg connection, once fewer than `limit` are out (waits meanwhile)."""
        self._free.acquire()
        try:
            while self._idle:
                pg = self._idle.pop()
                if not pg.closed:
                    return pg
            pooled = self._engine.raw_connection()
            pooled.detach()
            pg = pooled.dbapi_connection
            try:
                pg.autocommit = True
                if self._relaxed:
                    pg.execute("SET synchronous_commit TO off")
            except BaseException:
                pg.close()
                raise
            return pg
        except BaseException:
            self._free.release()
            raise

    def put(self, conn: Any, broken: bool = False) -> None:
        if broken:
            conn.close()
        else:
            self._idle.append(conn)
        self._free.release()

    def close(self) -> None:
        _close_all(self._idle)


def _semaphore(limit: int) -> Any:
    """gevent's semaphore in a monkey-patched process (a serving worker), where the standard
    library's, built on a Condition, costs about 11 us an acquire and release (three a
    request); the standard library's with real threads."""
    if monkey.is_module_patched("threading"):
        return gevent.lock.BoundedSemaphore(limit)
    return threading.BoundedSemaphore(limit)


def _close_all(idle: list[Any]) -> None:
    while idle:
        idle.pop().close()


_INHERITED: list[Any] = []


class _PooledConnections:
    """Raw driver connections from a SQLAlchemy pool (SQLite in memory or by URI)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self) -> Any:
        return self._engine.raw_connection()

    def put(self, conn: Any, broken: bool = False) -> None:
        if broken:
            conn.invalidate()
        conn.close()

    def close(self) -> None:
        pass  # the engine's dispose closes them


class FastPath:
    """Hot-path statements for one store; `sqlite` picks paramstyle and transaction start."""

    def __init__(self, writer: Engine, reader: Engine, sqlite: bool) -> None:
        self._sqlite = sqlite
        path = writer.url.database or ""
        if sqlite and path and path != ":memory:" and not path.startswith("file:"):
            self._writer = self._reader = self._relaxed = _SqliteConnections(path)
        elif sqlite:
            self._writer = self._relaxed = _PooledConnections(writer)
            self._reader = _PooledConnections(reader)
        else:
            self._writer = self._reader = _PgConnections(writer, False, PG_CONNECTIONS)
            self._relaxed = _PgConnections(writer, True, PG_RELAXED_CONNECTIONS)
        convert = (lambda sql: sql) if sqlite else (lambda sql: _NAMED.sub(r"%(\1)s", sql))
        self._convert = convert
        self._sql = {name: convert(sql) for name, sql in (
            ("auth", _AUTH), ("debit_if_covered", _DEBIT_IF_COVERED),
            ("insert_hold", _INSERT_HOLD), ("hold_entry", _INSERT_HOLD_ENTRY),
            ("hold_in_one", _HOLD_IN_ONE), ("settle_in_one", _SETTLE_IN_ONE),
            ("checked_debit", _key_checked(_DEBIT_IF_COVERED)),
            ("checked_hold_in_one", _key_checked(_HOLD_IN_ONE)),
            ("entry", _INSERT_ENTRY), ("take_hold", _TAKE_HOLD), ("settled", _SETTLED),
            ("credit", _CREDIT), ("debit", _DEBIT), ("usage", _INSERT_USAGE),
            ("balance", _BALANCE if sqlite else _BALANCE + " FOR UPDATE"))}
        # PostgreSQL: holds (with key-spend reservations) and settlements each have a lane of
        # their own, committed without waiting for the WAL flush (see _PgConnections), so that
        # neither a request's writes nor the row locks they need wait for a flush; heartbeats
        # commit as the server is configured. SQLite has one writer at a time anyway.
        self._group = self._lane(relaxed=False)
        self._holds = self._group if sqlite else self._lane(relaxed=True)
        self._settlements = self._group if sqlite else self._lane(relaxed=True)
        # a settlement behind its answer waits for a hold only where the two share a lane
        self._behind_linger = SETTLE_LINGER_SECONDS if sqlite else 0.0

    def close(self) -> None:
        """Close the idle connections of the fast path's own."""
        for connections in (self._writer, self._reader, self._relaxed):
            connections.close()  # the same one twice closes nothing more

    def _lane(self, relaxed: bool) -> GroupCommit:
        def batch(take: Callable[[], list[Callable[[Any], Any]]], alone: bool = False
                  ) -> list[Any]:
            return self._transaction(take, alone, relaxed)

        return GroupCommit(batch, lambda work: batch(lambda: [work], True)[0])

    def _time(self, now: datetime) -> Any:
        # SQLAlchemy stores SQLite timestamps as naive UTC text in this exact format: the
        # first 26 characters, without the offset (keyword arguments cost twice the time)
        if self._sqlite:
            return now.isoformat(" ", "microseconds")[:26]
        return now

    def authenticate(self, secret_hash: str) -> tuple | None | bool:
        """The key row, None when there is none, False when the driver failed."""
        conn = self._reader.get()
        broken = False
        try:
            cur = conn.cursor()  # PostgreSQL: in autocommit, one round trip
            cur.execute(self._sql["auth"], {"hash": secret_hash})
            row = cur.fetchone()
            cur.close()
            if row is not None and self._sqlite:  # SQLite hands timestamps back as text
                row = (*row[:5], *(None if v is None else datetime.fromisoformat(v)
                                   for v in row[5:7]), row[7], row[8],
                       None if row[9] is None else datetime.fromisoformat(row[9]), *row[10:])
            return row
        except Exception:
            broken = not _quiet_rollback(conn)
            return False
        finally:
            self._reader.put(conn, broken)

    def _transaction(self, take: Callable[[], list[Callable[[Any], Any]]],
                     alone: bool = False, relaxed: bool = False) -> list[Any]:
        """Run the jobs `take()` returns, in order, in one write transaction (on SQLite,
        `take` is called once the write lock is held). A failure of a single job (`alone`,
        or a batch of one) gives [None]; in a batch it raises, and GroupCommit runs each job
        alone. `relaxed`: commit without waiting for PostgreSQL's WAL flush."""
        connections = self._relaxed if relaxed else self._writer
        conn = connections.get()
        broken = False
        works: list[Callable[[Any], Any]] = []
        try:
            if self._sqlite:
                cur = conn.cursor()
                begin_immediate(cur, LOCK_WAIT_SECONDS)
                works = take()
                results = [work(cur) for work in works]
                conn.commit()
                cur.close()
                return results
            works = take()
            if len(works) == 1 and isinstance(works[0], _OneStatement):
                return [works[0].alone(conn)]
            return _pipelined(conn, works)
        except BaseException as exc:
            # a greenlet killed while it waits on PostgreSQL (a worker's stop) must not hand
            # its connection back in the middle of a transaction either
            broken = not _quiet_rollback(conn)
            if (alone or len(works) == 1) and isinstance(exc, Exception):
                return [None]
            raise
        finally:
            connections.put(conn, broken)

    def hold(self, request_id: str, account_id: int, amount: int, now: datetime,
             spend_key: str | None = None, key_check: tuple[str, int] | None = None
             ) -> bool | None:
        """`key_check`: (key id, version) that the key must still have (key_cache.py)."""
        sql = self._sql
        params = {"rid": request_id, "account": account_id, "amount": amount,
                  "taken": -amount, "now": self._time(now), "spend_key": spend_key}
        debit, in_one = "debit_if_covered", "hold_in_one"
        if key_check is not None:
            debit, in_one = "checked_debit", "checked_hold_in_one"
            params["key_id"], params["key_version"] = key_check

        def work(cur) -> bool:
            cur.execute(sql[debit], params)
            if cur.fetchone() is None:
                return False
            cur.execute(sql["insert_hold"], params)
            cur.execute(sql["hold_entry"], params)
            return True

        if self._sqlite:
            return self._holds.run(work, account_id)
        return self._holds.run(_OneStatement(sql[in_one], params, _found), account_id)

    def settle(self, request_id: str, cost: int, usage: UsageRecord,
               now: datetime, wrap: Callable[[Any, Callable], Any] | None = None,
               behind: bool = False) -> int | None:
        """`wrap(statements, run)` may add statements to the settlement's, run with
        `run(sql, params)` (named parameters) on its cursor. `behind`: nobody waits for this
        write, which may then wait for company (SETTLE_LINGER_SECONDS)."""
        when = self._time(usage.created_at or now)

        def general(cur) -> int:
            db: Any = _CursorStatements(cur, self._sql, usage, request_id, when)
            if wrap is not None:
                db = wrap(db, lambda sql, params: cur.execute(self._convert(sql), params))
            return settle_with(db, request_id, cost, usage.account_id)

        if wrap is None and not self._sqlite:
            # the common case in one statement; a hold that is gone or does not cover the
            # cost was left untouched, and the general algorithm runs in a transaction of
            # its own
            in_one = _OneStatement(
                self._sql["settle_in_one"],
                _usage_params(usage, request_id, usage.account_id, cost, when),
                lambda found: cost if found else _NOT_COVERED)
            done = self._settlements.run(in_one, usage.account_id)
            if done is not _NOT_COVERED:
                return done
        return self._settlements.run(general, usage.account_id,
                                     self._behind_linger if behind else 0.0)

    def update_one(self, sql: str, params: Mapping[str, Any]) -> bool | None:
        """One UPDATE (named parameters, no RETURNING clause) in its own transaction, in the
        holds' lane: whether it changed a row; None when the driver failed. For a request's
        writes before its hold (a key's spend reservation, runtime/limits/spend.py), which a
        crash of the database server may lose as it may lose the hold (see
        _PgConnections)."""
        statement = self._convert(sql) + " RETURNING 1"
        if not self._sqlite:
            return self._holds.run(_OneStatement(statement, params, _found))

        def work(cur) -> bool:
            cur.execute(statement, params)
            return cur.fetchone() is not None

        return self._holds.run(work)

    def heartbeat(self, statements: Callable[[str, Any], Iterable[tuple[str, Any]]]
                  ) -> bool | None:
        """Run `statements(paramstyle, now)` (holds.heartbeat_statements) in one write
        transaction; None when the driver failed."""
        def work(cur) -> bool:
            for sql, params in statements("qmark" if self._sqlite else "format",
                                          self._time(datetime.now(UTC))):
                cur.execute(sql, params)
            return True

        return self._group.run(work)


_NOT_COVERED = object()  # _SETTLE_IN_ONE found no hold covering the cost: nothing written


def _found(found: bool) -> bool:
    return found


class _AfterCommit:
    """A job's result that its pipeline delivers only with the commit (see _pipelined)."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read


class _OneStatement:
    """A PostgreSQL job that is one statement: its result is `then(whether it returned a
    row)`. In a batch it is sent on a cursor of its own and read after the commit; alone,
    it is that statement in autocommit, which is a transaction by itself."""

    __slots__ = ("sql", "params", "then")

    def __init__(self, sql: str, params: Mapping[str, Any], then: Callable[[bool], Any]
                 ) -> None:
        self.sql, self.params, self.then = sql, params, then

    def __call__(self, cur: Any) -> _AfterCommit:
        return _AfterCommit(self._send(cur.connection))

    def alone(self, pg: Any) -> Any:
        return self._send(pg)()

    def _send(self, pg: Any) -> Callable[[], Any]:
        """Send the statement on a cursor of its own; what it returns reads the result."""
        mine = pg.cursor()
        mine.execute(self.sql, self.params)

        def read() -> Any:
            found = mine.fetchone() is not None
            mine.close()
            return self.then(found)

        return read


class _CursorStatements:
    """ledger.SettleStatements on a raw driver cursor."""

    def __init__(self, cur: Any, sql: Mapping[str, str], usage: UsageRecord, request_id: str,
                 when: Any) -> None:
        self.cur, self.sql, self.usage, self.request_id, self.when = (
            cur, sql, usage, request_id, when)

    def take_hold(self, request_id: str) -> tuple[int, int] | None:
        self.cur.execute(self.sql["take_hold"], {"rid": request_id})
        row = self.cur.fetchone()
        return None if row is None else (row[0], row[1])

    def is_settled(self, account_id: int, request_id: str) -> bool:
        self.cur.execute(self.sql["settled"], {"account": account_id, "rid": request_id})
        return self.cur.fetchone() is not None

    def credit(self, account_id: int, amount: int) -> None:
        self.cur.execute(self.sql["credit"], {"amount": amount, "account": account_id})

    def debit(self, account_id: int, amount: int, debt: int) -> None:
        self.cur.execute(self.sql["debit"], {"amount": amount, "debt": debt,
                                             "account": account_id})

    def balance_for_update(self, account_id: int) -> int:
        self.cur.execute(self.sql["balance"], {"account": account_id})
        found = self.cur.fetchone()
        return found[0] if found else 0

    def entry(self, account_id: int, kind: str, amount: int, debt: int) -> None:
        self.cur.execute(self.sql["entry"], {"account": account_id, "rid": self.request_id,
                                             "kind": kind, "amount": amount, "debt": debt,
                                             "now": self.when})

    def log(self, account_id: int, charged: int) -> None:
        self.cur.execute(self.sql["usage"], _usage_params(self.usage, self.request_id,
                                                          account_id, charged, self.when))


def _usage_params(usage: UsageRecord, request_id: str, account_id: int, charged: int,
                  when: Any) -> Mapping[str, Any]:
    return {"rid": request_id, "now": when, "account": account_id, "key": usage.key_id,
            "endpoint": usage.endpoint, "model": usage.model, "provider": usage.provider,
            "status": usage.status, "prompt": usage.prompt_tokens,
            "completion": usage.completion_tokens, "cached": usage.cached_tokens,
            "details": usage.details_json(),
            "cost": charged, "latency": usage.latency_ms}


def _pipelined(pg: Any, works: list[Callable[[Any], Any]]) -> list[Any]:
    """`works` in one PostgreSQL transaction in pipeline mode, on a connection in
    autocommit mode: statements are sent without waiting for each answer; a job waits only
    where it reads a result (a RETURNING row), so a settlement costs two round trips instead
    of one per statement. A job that returns an `_AfterCommit` reads its answer once the
    commit has brought it: a batch of holds (one statement each) costs one round trip.

    The transaction's BEGIN and COMMIT are sent as statements: psycopg's own BEGIN in
    pipeline mode waits for its answer, one round trip more. A job that raises leaves the
    transaction open, never committed: it is rolled back here.
    """
    try:
        with pg.pipeline():
            cur = pg.cursor()
            cur.execute(_begin(pg))
            results = [work(cur) for work in works]
            cur.execute("COMMIT")
        cur.close()  # leaving the pipeline brought every answer, or raised the first error
        return [r.read() if isinstance(r, _AfterCommit) else r for r in results]
    finally:
        # imported here: psycopg picks a gevent-aware wait when first imported after the
        # worker's monkey-patching, and this module may be imported before it
        from psycopg.pq import TransactionStatus

        if pg.info.transaction_status != TransactionStatus.IDLE:
            pg.rollback()


def _begin(pg: Any) -> str:
    """The BEGIN psycopg would send: with the isolation level the pool set, if any."""
    level = pg.isolation_level
    return "BEGIN" if level is None else "BEGIN ISOLATION LEVEL " + level.name.replace("_", " ")


def _quiet_rollback(conn: Any) -> bool:
    """Roll back; False when the connection is broken and must be discarded."""
    try:
        conn.rollback()
        return True
    except Exception:
        return False
