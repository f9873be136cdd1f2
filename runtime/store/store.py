"""`Store`: accounts, API keys, credits and the usage log over one SQL database.

Every method is one short synchronous transaction (or one statement), safe to call from many
threads, gevent greenlets, worker processes and gateway nodes sharing the database. Nothing
is cached: a revocation or top-up made by any process is seen by the next call anywhere.
Database errors surface as `StoreError`; argument errors as ValueError/TypeError. Amounts are
integer nano-credits; every movement of money writes ledger entries in its transaction
(ledger.py), and `audit(name)` checks an account against them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from runtime.limits import spend as spendlib
from runtime.limits.policy import limits_from_row, parse_models

from . import holds as holdlib
from . import keys as keylib
from . import ledger, money_history, schema, usage_queries, usage_rollup
from . import responses as stored
from .engine import make_engines
from .errors import AccountExists, AccountNotFound, StoreError
from .fastpath import FastPath
from .key_cache import KeyCache
from .migrations import migrate
from .records import Account, KeyRecord, StoredResponse, UsageRecord
from .schema import accounts, api_keys, usage_log

log = logging.getLogger("tokmodel.holds")

P = ParamSpec("P")
R = TypeVar("R")

MAX_NAME_LENGTH = 200
MAX_USAGE_LIMIT = 10_000

_account_cols = (accounts.c.id, accounts.c.name, accounts.c.balance_nano, accounts.c.created_at,
                 accounts.c.debt_nano, accounts.c.disabled_at)
_key_cols = (
    api_keys.c.id,
    api_keys.c.account_id,
    accounts.c.name.label("account_name"),
    api_keys.c.name,
    api_keys.c.display_prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.manage,
    accounts.c.disabled_at,
    # the limits, read with the key (runtime/limits/policy.py, in this order)
    api_keys.c.expires_at,
    api_keys.c.models,
    api_keys.c.rpm,
    api_keys.c.tpm,
    api_keys.c.spend_limit_nano,
    api_keys.c.daily_limit_nano,
    api_keys.c.monthly_limit_nano,
    api_keys.c.version,
)
_keys_join = api_keys.join(accounts, api_keys.c.account_id == accounts.c.id)

_account_by_name = select(*_account_cols).where(accounts.c.name == bindparam("b_name"))
_account_by_id = select(*_account_cols).where(accounts.c.id == bindparam("b_id"))
_account_id_by_name = select(accounts.c.id).where(accounts.c.name == bindparam("b_name"))
_all_accounts = select(*_account_cols).order_by(accounts.c.id)
# Who may start a priced request before its cost is known (see Store.can_spend).
_can_spend = (
    select(accounts.c.id)
    .where(accounts.c.id == bindparam("b_id"))
    .where(accounts.c.balance_nano > 0)
    .where(accounts.c.debt_nano == 0)
)
_insert_account = insert(accounts).returning(accounts.c.id)
_account_for_update = (
    select(*_account_cols).where(accounts.c.name == bindparam("b_name")).with_for_update()
)
_insert_key = insert(api_keys)
_authenticate = (
    select(*_key_cols)
    .select_from(_keys_join)
    .where(api_keys.c.secret_hash == bindparam("b_hash"))
    .where(api_keys.c.revoked_at.is_(None))
)
_keys_of_account = (
    select(*_key_cols)
    .select_from(_keys_join)
    .where(accounts.c.name == bindparam("b_name"))
    .order_by(api_keys.c.created_at, api_keys.c.id)
)
_all_keys = (select(*_key_cols).select_from(_keys_join)
             .order_by(api_keys.c.created_at, api_keys.c.id))
_key_by_id = select(*_key_cols).select_from(_keys_join).where(api_keys.c.id == bindparam("b_id"))
_revoke_key = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("b_id"))
    .where(api_keys.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
_set_key_manage = (
    update(api_keys).where(api_keys.c.id == bindparam("b_id")).values(manage=bindparam("b_manage"))
)
_set_disabled = (
    update(accounts).where(accounts.c.name == bindparam("b_name"))
    .values(disabled_at=bindparam("b_when"))
)
_rename_key = (
    update(api_keys).where(api_keys.c.id == bindparam("b_id")).values(name=bindparam("b_name"))
)
_usage_of_account = (
    select(usage_log)
    .where(usage_log.c.account_id == _account_id_by_name.scalar_subquery())
    .order_by(usage_log.c.created_at.desc(), usage_log.c.id.desc())
    .limit(bindparam("b_limit"))
)
_ping = text("SELECT 1")


def _db_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Re-raise driver errors as StoreError (chained), keeping statements and values out of
    the message."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise StoreError(f"database error: {type(cause).__name__}: {cause}") from exc

    return wrapper


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_NAME_LENGTH} chars")
    return name


def _check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("request_id must be a non-empty string")
    return request_id


_SPEND_COLUMNS = ("spend_limit_nano", "daily_limit_nano", "monthly_limit_nano")
_LIMIT_COLUMNS = ("expires_at", "models", "rpm", "tpm", *_SPEND_COLUMNS)


def _check_limits(changes: dict[str, Any]) -> dict[str, Any]:
    for column, value in changes.items():
        if column not in _LIMIT_COLUMNS:
            raise ValueError(f"unknown key limit {column!r}")
        if value is None or column == "expires_at":
            continue
        if column == "models":
            parse_models(value)
        elif column in ("rpm", "tpm"):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{column} must be a positive integer")
        else:
            ledger.check_nano(value, column)
    return changes


def _account(row: Any) -> Account:
    return Account(row[0], row[1], row[2], ledger.utc(row[3]), row[4], ledger.utc(row[5]))


def _key(row: Any) -> KeyRecord:
    limits = limits_from_row((ledger.utc(row[9]), *row[10:16]))
    return KeyRecord(row[0], row[1], row[2], row[3], row[4], ledger.utc(row[5]),
                     ledger.utc(row[6]), bool(row[7]), row[8] is not None, limits, row[16])


class Store:
    """The gateway's persistence. Build it with `open_store(url)`, which also migrates."""

    url: str

    def __init__(self, url: str) -> None:
        self._engine, self._reader = make_engines(url)
        self._fast = FastPath(self._engine, self._reader,
                              self._engine.dialect.name == "sqlite")
        # The keys this process authenticated lately (key_cache.py).
        self._keys = KeyCache()
        # The holds this process has open, kept alive by heartbeat_holds (store/holds.py).
        self.open_holds = holdlib.OpenHolds()
        # The time settles and spend-limit periods (UTC days, months) go by; tests move it.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        # For display and logs: the password, if any, is masked.
        self.url = self._engine.url.render_as_string(hide_password=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The read-write engine, for modules that own tables of their own (the console's)."""
        return self._engine

    @_db_errors
    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""
        return migrate(self._engine)

    def ping(self) -> bool:
        try:
            with self._reader.connect() as conn:
                return conn.execute(_ping).scalar() == 1
        except SQLAlchemyError:
            return False

    def close(self) -> None:
        self._fast.close()
        self._reader.dispose()
        self._engine.dispose()

    # accounts

    @_db_errors
    def create_account(self, name: str, balance_nano: int = 0) -> Account:
        """A new account; its initial credits are a top-up entry of the ledger."""
        _check_name(name, "account name")
        ledger.check_nano(balance_nano, "balance_nano")
        now = datetime.now(UTC)
        try:
            with self._engine.begin() as conn:
                account_id = conn.execute(
                    _insert_account,
                    {"name": name, "balance_nano": 0, "debt_nano": 0, "created_at": now},
                ).scalar_one()
                if balance_nano:
                    ledger.credit(conn, account_id, balance_nano, "topup", now,
                                  "initial credits")
        except IntegrityError as exc:
            if self.get_account(name) is not None:
                raise AccountExists(f"account {name!r} already exists") from None
            raise StoreError("could not create account") from exc
        return Account(account_id, name, balance_nano, now, 0)

    @_db_errors
    def get_account(self, name: str) -> Account | None:
        with self._reader.connect() as conn:
            row = conn.execute(_account_by_name, {"b_name": name}).first()
        return None if row is None else _account(row)

    @_db_errors
    def get_account_by_id(self, account_id: int) -> Account | None:
        with self._reader.connect() as conn:
            row = conn.execute(_account_by_id, {"b_id": account_id}).first()
        return None if row is None else _account(row)

    @_db_errors
    def topup(self, name: str, amount_nano: int, note: str | None = None) -> Account:
        """Add credits; a debt is paid from them first. Returns the account after."""
        ledger.check_nano(amount_nano, "amount_nano", positive=True)
        with self._engine.begin() as conn:
            account = self._locked_account(conn, name)
            if account.balance_nano > ledger.MAX_NANO - amount_nano:
                raise ValueError("top-up would overflow the balance")
            ledger.credit(conn, account.id, amount_nano, "topup", datetime.now(UTC), note)
            return _account(conn.execute(_account_by_id, {"b_id": account.id}).one())

    @_db_errors
    def adjust(self, name: str, amount_nano: int, note: str | None = None) -> Account:
        """A manual correction of the balance, either sign (a positive one pays a debt first
        like a top-up); a negative one larger than the balance is refused (ValueError)."""
        if not isinstance(amount_nano, int) or isinstance(amount_nano, bool) or not amount_nano:
            raise ValueError("an adjustment must be a non-zero int of nano-credits")
        ledger.check_nano(abs(amount_nano), "amount_nano", positive=True)
        with self._engine.begin() as conn:
            account = self._locked_account(conn, name)
            now = datetime.now(UTC)
            if amount_nano > 0:
                if account.balance_nano > ledger.MAX_NANO - amount_nano:
                    raise ValueError("adjustment would overflow the balance")
                ledger.credit(conn, account.id, amount_nano, "adjustment", now, note)
            elif not ledger.debit(conn, account.id, -amount_nano, now, note):
                raise ValueError("the balance does not cover that adjustment")
            return _account(conn.execute(_account_by_id, {"b_id": account.id}).one())

    @staticmethod
    def _locked_account(conn: Any, name: str) -> Account:
        row = conn.execute(_account_for_update, {"b_name": name}).first()
        if row is None:
            raise AccountNotFound(f"no account named {name!r}")
        return _account(row)

    @_db_errors
    def audit(self, name: str) -> dict[str, Any]:
        """Check the account's balance, debt, open holds and usage log against its ledger, in
        one consistent snapshot (see ledger.audit); AccountNotFound when there is none."""
        with self._snapshot() as conn:
            row = conn.execute(_account_by_name, {"b_name": name}).first()
            if row is None:
                raise AccountNotFound(f"no account named {name!r}")
            return ledger.audit(conn, _account(row))

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """A read transaction that sees one state of the database while gateways write."""
        if self._engine.dialect.name == "postgresql":
            with self._engine.connect() as conn:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        else:  # SQLite: the write lock, for the few milliseconds an audit takes
            with self._engine.begin() as conn:
                yield conn

    @_db_errors
    def list_accounts(self) -> list[Account]:
        with self._reader.connect() as conn:
            return [_account(row) for row in conn.execute(_all_accounts)]

    # keys

    @_db_errors
    def create_key(self, account_name: str, name: str = "default",
                   limits: dict[str, Any] | None = None, *,
                   manage: bool = False) -> tuple[KeyRecord, str]:
        """Create a key (a management key with `manage`); return its record and the secret,
        which is shown this once only. `limits`: api_keys limit columns and their values
        (see `update_key_limits`)."""
        _check_name(name, "key name")
        limits = _check_limits(limits or {})
        for attempt in range(3):
            secret = keylib.new_secret()
            now = datetime.now(UTC)
            values = {
                "id": keylib.new_key_id(),
                "name": name,
                "secret_hash": keylib.hash_secret(secret),
                "display_prefix": keylib.display_prefix(secret),
                "created_at": now,
                "revoked_at": None,
                "manage": bool(manage),
                **limits,
            }
            try:
                with self._engine.begin() as conn:
                    account_id = conn.execute(
                        _account_id_by_name, {"b_name": account_name}
                    ).scalar()
                    if account_id is None:
                        raise AccountNotFound(f"no account named {account_name!r}")
                    conn.execute(_insert_key, {**values, "account_id": account_id})
            except IntegrityError:
                if attempt == 2:  # three random 48-bit ids collided: something else is wrong
                    raise
                continue
            return self.get_key(values["id"]), secret
        raise AssertionError("unreachable")

    @_db_errors
    def list_keys(self, account_name: str | None) -> list[KeyRecord]:
        """All keys of the account (None: of every account), revoked ones included, oldest
        first ([] if no account)."""
        with self._reader.connect() as conn:
            if account_name is None:
                return [_key(row) for row in conn.execute(_all_keys)]
            return [_key(row) for row in conn.execute(_keys_of_account, {"b_name": account_name})]

    @_db_errors
    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._reader.connect() as conn:
            row = conn.execute(_key_by_id, {"b_id": key_id}).first()
        return None if row is None else _key(row)

    @_db_errors
    def revoke_key(self, key_id: str) -> bool:
        """Revoke now, for every process; False when unknown or already revoked."""
        with self._engine.begin() as conn:
            result = conn.execute(_revoke_key, {"b_id": key_id, "b_now": datetime.now(UTC)})
            # console sessions opened with the key end with it, whoever revokes it
            conn.execute(delete(schema.console_sessions).where(
                schema.console_sessions.c.key_id == key_id))
            return result.rowcount == 1

    @_db_errors
    def set_key_manage(self, key_id: str, manage: bool) -> bool:
        """Make the key a management key (True) or an inference key; False when unknown."""
        with self._engine.begin() as conn:
            return conn.execute(_set_key_manage,
                                {"b_id": key_id, "b_manage": bool(manage)}).rowcount == 1

    @_db_errors
    def set_account_disabled(self, name: str, disabled: bool) -> Account:
        """Disable (every key refused, console included) or enable the account; its
        balance, keys and ledger are untouched. AccountNotFound when there is none."""
        with self._engine.begin() as conn:
            account = self._locked_account(conn, name)
            if disabled != (account.disabled_at is not None):
                conn.execute(_set_disabled, {"b_name": name,
                                             "b_when": datetime.now(UTC) if disabled else None})
            if disabled:  # its console sessions end with it
                conn.execute(delete(schema.console_sessions).where(
                    schema.console_sessions.c.account_id == account.id))
            return _account(conn.execute(_account_by_id, {"b_id": account.id}).one())

    @_db_errors
    def rename_key(self, key_id: str, name: str) -> bool:
        _check_name(name, "key name")
        with self._engine.begin() as conn:
            return conn.execute(_rename_key, {"b_id": key_id, "b_name": name}).rowcount == 1

    @_db_errors
    def update_key_limits(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Set (or, with None, clear) limit columns of a key: expires_at, models (the
        comma-separated patterns), rpm, tpm, spend_limit_nano, daily_limit_nano,
        monthly_limit_nano. Seen by the key's next request on every worker and node.
        None when there is no such key."""
        changes = _check_limits(changes)
        before = self.get_key(key_id)
        if before is None:
            return None
        if any(changes.get(c) is not None for c in _SPEND_COLUMNS) and not (
                before.limits and before.limits.limits_spend):
            # a first spend limit counts what the key spent before it (the counters on the
            # key are only kept up to date while it has one)
            spent = self.spend_by_key([key_id])[key_id]
            day = spendlib.periods(self.clock())
            changes = {**changes, "held_nano": 0, "spent_nano": spent.total,
                       "spent_day": day["day"], "spent_day_nano": spent.today,
                       "spent_month": day["month"], "spent_month_nano": spent.month}
        if changes:
            with self._engine.begin() as conn:
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**changes))
        return self.get_key(key_id)

    @_db_errors
    def authenticate(self, secret: str, cached: bool = False) -> KeyRecord | None:
        """The live key for this secret, or None (unknown, malformed or revoked). `cached`:
        the key this process read last for it, if any, which may be stale: for a request
        whose hold checks it (key_cache.py says how)."""
        if not keylib.looks_like_secret(secret):
            return None
        secret_hash = keylib.hash_secret(secret)
        if cached and (key := self._keys.get(secret_hash)) is not None:
            return key
        row = self._fast.authenticate(secret_hash)
        if row is False:
            with self._reader.connect() as conn:
                row = conn.execute(_authenticate, {"b_hash": secret_hash}).first()
        key = None if row is None else _key(row)
        self._keys.remember(secret_hash, key)
        return key

    # credits: reserve -> forward -> settle

    @_db_errors
    def can_spend(self, account_id: int) -> bool:
        """True when the account may start a priced request at all (a positive balance and
        no debt): the cheap check made before a large request body is read, ahead of the
        exact hold."""
        with self._reader.connect() as conn:
            return conn.execute(_can_spend, {"b_id": account_id}).first() is not None

    @_db_errors
    def hold(self, request_id: str, account_id: int, amount_nano: int,
             spend_key: str | None = None, key_check: tuple[str, int] | None = None) -> bool:
        """Reserve credits before forwarding; False (nothing changed) when not covered or
        when the account owes a debt its balance cannot pay (a debt the balance covers,
        after refunds, is paid first). `spend_key`: the key whose spend limits reserved the
        amount (reserve_key_spend), given back with the hold if it is ever released.
        `key_check`: (key id, version) of a key read from the cache: also False when the
        key changed since, was revoked or its account disabled (key_cache.py)."""
        _check_request_id(request_id)
        ledger.check_nano(amount_nano, "amount_nano")
        now = datetime.now(UTC)
        held = self._fast.hold(request_id, account_id, amount_nano, now, spend_key, key_check)
        if held is None:
            held = self._hold_core(request_id, account_id, amount_nano, now, spend_key,
                                   key_check)
        if not held:
            held = self._pay_debt_and_hold(request_id, account_id, amount_nano, now,
                                           spend_key, key_check)
        if held:
            self.open_holds.add(request_id)
        return held

    def _pay_debt_and_hold(self, request_id: str, account_id: int, amount_nano: int,
                           now: datetime, spend_key: str | None,
                           key_check: tuple[str, int] | None) -> bool:
        """After a refusal: refunds of requests in flight may have come back to an account
        in debt; they pay the debt, and the hold is tried again once it is paid."""
        account = self.get_account_by_id(account_id)
        if account is None or not (account.debt_nano and account.balance_nano):
            return False
        with self._engine.begin() as conn:
            ledger.pay_debt(conn, account_id, None, now)
        if self.get_account_by_id(account_id).debt_nano:
            return False
        return self._hold_core(request_id, account_id, amount_nano, now, spend_key, key_check)

    def _hold_core(self, request_id: str, account_id: int, amount_nano: int,
                   now: datetime, spend_key: str | None,
                   key_check: tuple[str, int] | None) -> bool:
        try:
            with self._engine.begin() as conn:
                return ledger.hold(conn, request_id, account_id, amount_nano, now, spend_key,
                                   key_check)
        except IntegrityError as exc:
            raise StoreError(f"request {request_id!r} already held credits") from exc

    def write(self) -> Any:
        """A write transaction (SQLAlchemy Core connection) for statements of other
        modules (runtime/limits/rates.py)."""
        return self._engine.begin()

    # per-key spend limits (runtime/limits/spend.py)

    @_db_errors
    def reserve_key_spend(self, key_id: str, amount_nano: int) -> str | None:
        """Add a request's hold to the key's spend in flight if every spend limit of the key
        allows it; else change nothing and return the limit it would pass ('spend limit',
        'daily limit', 'monthly limit')."""
        params = {"amount": amount_nano, "key": key_id, **spendlib.periods(self.clock())}
        reserved = self._fast.update_one(spendlib.RESERVE, params)
        if reserved is None:
            with self._engine.begin() as conn:
                reserved = conn.execute(text(spendlib.RESERVE), params).rowcount == 1
        if reserved:
            return None
        with self._reader.connect() as conn:
            row = conn.execute(text(spendlib.READ), {"key": key_id}).first()
        if row is None:
            return "spend limit"
        return spendlib.KeySpend.from_row(row, self.clock()).refused_by(row, amount_nano)

    @_db_errors
    def unreserve_key_spend(self, key_id: str, amount_nano: int) -> None:
        """Take back a reservation whose hold was then refused."""
        with self._engine.begin() as conn:
            conn.execute(text(spendlib.UNRESERVE), {"amount": amount_nano, "key": key_id})

    @_db_errors
    def key_spend(self, key_id: str) -> spendlib.KeySpend | None:
        """What the key spent in all, today and this month (UTC), and holds in flight."""
        with self._reader.connect() as conn:
            row = conn.execute(text(spendlib.READ), {"key": key_id}).first()
        return None if row is None else spendlib.KeySpend.from_row(row, self.clock())

    @_db_errors
    def spend_by_key(self, key_ids: list[str]) -> dict[str, spendlib.KeySpend]:
        """What each key was charged in all, today and this month (UTC), from the usage log
        (every key, limited or not; `held` is 0): a report, not the hot path."""
        now = self.clock()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        found = {key_id: spendlib.KeySpend(0, 0, 0, 0) for key_id in key_ids}
        if key_ids:
            with self._reader.connect() as conn:
                spent = usage_queries.spend_by_key(conn, key_ids, day, day.replace(day=1))
            for key_id, (total, today, this_month) in spent.items():
                found[key_id] = spendlib.KeySpend(total, today, this_month, 0)
        return found

    @_db_errors
    def settle(self, request_id: str, cost_nano: int, usage: UsageRecord,
               spend_key: str | None = None, behind: bool = False) -> int:
        """Charge the cost (from the hold, then the balance, the rest as the account's debt),
        give back what the hold did not need, log `usage`; return the charge. `behind`: the
        answer has gone and nobody waits for this write (runtime/billing/settle_behind.py),
        which may then wait a moment to share the next hold's commit.

        Idempotent per request id: a second settle charges nothing and logs nothing. A cost
        of 0 releases the hold fully.
        """
        _check_request_id(request_id)
        ledger.check_nano(cost_nano, "cost_nano")
        # Settled, or left to a sweeper when this fails: no longer this process's to keep.
        self.open_holds.discard(request_id)
        now = self.clock()

        charged = self._fast.settle(request_id, cost_nano, usage, now, (
            lambda db, run: spendlib.KeySpendStatements(db, run, spend_key, now)
        ) if spend_key else None, behind)
        if charged is not None:
            return charged
        try:
            with self._engine.begin() as conn:
                wrap = spendlib.core_wrap(conn, spend_key, now) if spend_key else None
                return ledger.settle(conn, request_id, cost_nano, usage, now, wrap)
        except IntegrityError:
            # A concurrent settle of the same request wrote its settle entry first (the
            # entry's key allows one): give back any hold left, charge nothing.
            with self._reader.connect() as conn:
                if not ledger.is_settled(conn, usage.account_id, request_id):
                    raise
            with self._engine.begin() as conn:
                ledger.release(conn, request_id, now)
            return 0

    @_db_errors
    def release(self, request_id: str) -> int:
        """Give back a request's hold in full without logging it; return the amount."""
        self.open_holds.discard(request_id)
        with self._engine.begin() as conn:
            return ledger.release(conn, request_id, datetime.now(UTC))

    @_db_errors
    def release_stale_holds(self, older_than_seconds: int) -> int:
        """Give back in full every hold created more than that ago, live or not; return how
        many. Operators settle lost holds with `sweep_stale_holds` instead."""
        if not isinstance(older_than_seconds, int | float) or older_than_seconds < 0:
            raise ValueError("older_than_seconds must be >= 0")
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=older_than_seconds)
        with self._engine.begin() as conn:
            return ledger.release_stale(conn, cutoff, now)

    # holds of lost workers (store/holds.py)

    def heartbeat_holds(self, owner: str) -> int:
        """Stamp this process's open holds with `owner` and the time, recording the progress
        that changed, in one statement per batch; return how many holds were stamped (0 when
        the database failed: the next heartbeat tries again, well within the grace)."""
        ids = self.open_holds.ids()
        if not ids:
            return 0
        progress = self.open_holds.changed_progress()
        done = self._fast.heartbeat(lambda paramstyle, when: holdlib.heartbeat_statements(
            ids, progress, owner, when, paramstyle))
        if not done:
            log.warning("heartbeat of %d open hold(s) failed; retried next interval", len(ids))
            return 0
        self.open_holds.recorded(progress)
        return len(ids)

    @_db_errors
    def sweep_stale_holds(self, stale_seconds: float, *, refund: bool = False,
                          limit: int = 100) -> list[holdlib.Swept]:
        """Settle holds whose heartbeat is older than `stale_seconds` at their recorded
        progress, or give them back in full when none was recorded (or `refund`); one
        transaction per hold. This process's own open holds are never swept."""
        if not isinstance(stale_seconds, int | float) or stale_seconds < 0:
            raise ValueError("stale_seconds must be >= 0")
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=stale_seconds)
        with self._reader.connect() as conn:
            candidates = holdlib.stale_ids(conn, cutoff, limit)
        swept = []
        for request_id in candidates:
            if request_id in self.open_holds:
                continue
            try:
                with self._engine.begin() as conn:
                    done = holdlib.sweep_one(conn, request_id, cutoff, now, refund)
            except IntegrityError:
                # The request id was logged already (held again after it was settled):
                # give the hold back, charge nothing.
                with self._engine.begin() as conn:
                    held = ledger.release(conn, request_id, now)
                done = None
                if held:
                    log.warning("hold %s of a logged request given back", request_id)
            if done is not None:
                swept.append(done)
        return swept

    @_db_errors
    def list_holds(self) -> list[holdlib.HoldRecord]:
        """Every open hold, oldest first, with its owner, heartbeat and progress."""
        with self._reader.connect() as conn:
            return holdlib.all_holds(conn)

    @_db_errors
    def usage(self, account_name: str, limit: int = 100) -> list[UsageRecord]:
        """The account's most recent usage rows, newest first ([] if no account)."""
        if not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be an int >= 0")
        params = {"b_name": account_name, "b_limit": min(limit, MAX_USAGE_LIMIT)}
        with self._reader.connect() as conn:
            return [ledger.usage_record(row) for row in conn.execute(_usage_of_account, params)]

    @_db_errors
    def topups(self, name: str, limit: int = 100, cursor: str | None = None
               ) -> tuple[list[dict[str, Any]], str | None]:
        """The account's top-ups (its initial credits included), newest first, from the
        ledger, one keyset page: ([{"reference", "amount_nano", "note", "created_at"}],
        next cursor or None); AccountNotFound when there is none, ValueError for a bad
        cursor or limit."""
        with self._reader.connect() as conn:
            account_id = conn.execute(_account_id_by_name, {"b_name": name}).scalar()
            if account_id is None:
                raise AccountNotFound(f"no account named {name!r}")
            found, following = money_history.page(conn, account_id, limit, ("topup",), cursor)
        return [{"reference": m.reference, "amount_nano": m.amount_nano, "note": m.note,
                 "created_at": m.created_at} for m in found], following

    # usage queries (usage_queries.py)

    @_db_errors
    def usage_page(self, where: usage_queries.UsageFilter, limit: int, cursor: str | None = None
                   ) -> tuple[list[usage_queries.UsageRow], str | None]:
        """One keyset page of the filter, newest first, and the next page's cursor."""
        with self._reader.connect() as conn:
            return usage_queries.page(conn, where, limit, cursor)

    @_db_errors
    def usage_totals(self, where: usage_queries.UsageFilter) -> usage_queries.UsageTotals:
        with self._reader.connect() as conn:
            return usage_queries.totals(conn, where)

    @_db_errors
    def usage_daily(self, where: usage_queries.UsageFilter) -> list[dict[str, Any]]:
        """Cost and requests per UTC day and model."""
        with self._reader.connect() as conn:
            return usage_queries.daily_by_model(conn, where)

    def usage_batches(self, where: usage_queries.UsageFilter, batch: int = 500
                      ) -> Iterator[list[usage_queries.UsageRow]]:
        """Every row of the filter, newest first, read one short batch at a time."""
        return usage_queries.batches(self._reader.connect, where, batch)

    @_db_errors
    def prune_usage(self, older_than: datetime, batch: int = 1000) -> int:
        """Delete up to `batch` usage rows created before `older_than`; return how many.
        Balances and the ledger are untouched; the audit knows rows before it may be gone."""
        if not isinstance(batch, int) or batch < 1:
            raise ValueError("batch must be an int >= 1")
        with self._engine.begin() as conn:
            return usage_queries.prune(conn, older_than.astimezone(UTC), batch)

    @_db_errors
    def rollup_usage(self, lag_seconds: float = 10.0, most: int = 50_000) -> int:
        """Fold the next usage rows (created more than `lag_seconds` ago, at most `most`)
        into the daily sums the usage reports read; how many rows (usage_rollup.py)."""
        return usage_rollup.roll_up(self._reader.connect, self._engine.begin, lag_seconds,
                                    most)

    @_db_errors
    def prune_audit(self, older_than: datetime, batch: int = 1000) -> int:
        """Delete up to `batch` audit-log rows created before `older_than` (oldest first);
        return how many. Nothing else is touched."""
        if not isinstance(batch, int) or batch < 1:
            raise ValueError("batch must be an int >= 1")
        table = schema.audit_log
        oldest = (select(table.c.id).where(table.c.created_at < older_than.astimezone(UTC))
                  .order_by(table.c.created_at).limit(batch))
        with self._engine.begin() as conn:
            return conn.execute(delete(table).where(table.c.id.in_(oldest))).rowcount

    @_db_errors
    def usage_page_newer(self, where: usage_queries.UsageFilter, limit: int, cursor: str
                         ) -> tuple[list[usage_queries.UsageRow], str | None]:
        """The page just above `cursor` (newest first) and the cursor of the page above it."""
        with self._reader.connect() as conn:
            return usage_queries.newer_page(conn, where, limit, cursor)

    @_db_errors
    def usage_values(self, where: usage_queries.UsageFilter, column: str) -> list[str]:
        """The distinct models or endpoints of the filter's rows, sorted."""
        with self._reader.connect() as conn:
            return usage_queries.values(conn, where, column)

    @_db_errors
    def money_history(self, account_id: int, limit: int = 100, cursor: str | None = None
                      ) -> tuple[list[money_history.MoneyEntry], str | None]:
        """Top-ups, adjustments, debts and debt payments of the account, newest first, one
        keyset page below `cursor`, and the next (older) page's cursor."""
        with self._reader.connect() as conn:
            return money_history.page(conn, account_id, limit, cursor=cursor)

    @_db_errors
    def money_history_newer(self, account_id: int, limit: int, cursor: str
                            ) -> tuple[list[money_history.MoneyEntry], str | None]:
        """The page just above `cursor` (newest first) and the cursor of the page above it."""
        with self._reader.connect() as conn:
            return money_history.newer_page(conn, account_id, limit, cursor=cursor)

    # -- stored Responses API conversations ---------------------------------------------------

    @_db_errors
    def save_response(self, record: StoredResponse, ttl_seconds: float) -> None:
        """Keep a response for its account for `ttl_seconds` (expired ones are purged)."""
        now = datetime.now(UTC)
        record = replace(record, expires_at=now + timedelta(seconds=ttl_seconds))
        with self._engine.begin() as conn:
            stored.save(conn, record, now)

    @_db_errors
    def get_response(self, response_id: str, account_id: int) -> StoredResponse | None:
        """The account's unexpired stored response, or None (also for another account's)."""
        with self._reader.connect() as conn:
            return stored.get(conn, response_id, account_id, datetime.now(UTC))

    @_db_errors
    def delete_response(self, response_id: str, account_id: int) -> bool:
        with self._engine.begin() as conn:
            return stored.remove(conn, response_id, account_id)


def open_store(url: str) -> Store:
    """Connect to `url` (sqlite:///path or postgresql://...) and apply pending migrations."""
    store = Store(url)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
