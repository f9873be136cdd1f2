"""Server-side console sessions in the `console_sessions` table (shared by every worker and
node using the database).

Contract:
- `Sessions.open(kind, ...)` makes a session and returns its id: 32 random bytes, URL-safe,
  to be sent only as an HttpOnly cookie. The table keeps the id's SHA-256, never the id.
  An operator session's digest also covers a digest of the admin token, so changing the
  token ends every operator session.
- `Sessions.read(kind, session_id)` gives the live `Session` or None (unknown, ended,
  expired); expired rows are deleted as they are met and whenever a session is opened.
- `Sessions.end(...)` deletes at once: one session (logout), every session of a key
  (revocation; `Store.revoke_key` does it too) or of an account.
- `Sessions.put_flash` / `take_flash`: one value (a new key's secret) kept for one display;
  `take_flash` clears it atomically, so two concurrent loads cannot both get it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update

from runtime.console.audit import aware
from runtime.store.schema import console_sessions as table

ACCOUNT = "account"
OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    kind: str
    account_id: int | None
    key_id: str | None
    binding: str
    expires_at: datetime


class Sessions:
    """Open, read and end console sessions; `lifetime` seconds from login."""

    def __init__(self, engine: Engine, lifetime: float, admin_token: str | None) -> None:
        self._engine = engine
        self.lifetime = lifetime
        self._admin_digest = (hashlib.sha256(admin_token.encode("utf-8")).hexdigest()
                              if admin_token else "")

    def _digest(self, kind: str, session_id: str) -> str:
        salt = self._admin_digest if kind == OPERATOR else ""
        return hashlib.sha256(f"{kind}\x1f{salt}\x1f{session_id}".encode()).hexdigest()

    def open(self, kind: str, account_id: int | None = None, key_id: str | None = None) -> str:
        """A new session's id; sessions expired by now are deleted on the way."""
        session_id = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(delete(table).where(table.c.expires_at <= now))
            conn.execute(insert(table).values(
                id_hash=self._digest(kind, session_id), kind=kind, account_id=account_id,
                key_id=key_id, binding=secrets.token_hex(32), created_at=now,
                expires_at=now + timedelta(seconds=self.lifetime)))
        return session_id

    def read(self, kind: str, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128 or not session_id.isascii():
            return None
        id_hash = self._digest(kind, session_id)
        with self._engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.id_hash == id_hash,
                                                   table.c.kind == kind)).first()
        if row is None:
            return None
        expires_at = aware(row.expires_at)
        if expires_at <= datetime.now(UTC):
            self._delete(table.c.id_hash == id_hash)
            return None
        return Session(id_hash, kind, row.account_id, row.key_id, row.binding, expires_at)

    def end(self, session: Session | None = None, *, key_id: str | None = None,
            account_id: int | None = None) -> int:
        """End one session, or every session of a key or of an account; how many ended."""
        if session is not None:
            return self._delete(table.c.id_hash == session.id_hash)
        if key_id is not None:
            return self._delete(table.c.key_id == key_id)
        if account_id is not None:
            return self._delete(table.c.account_id == account_id)
        return 0

    def put_flash(self, session: Session, value: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(table).where(table.c.id_hash == session.id_hash)
                         .values(flash=value))

    def take_flash(self, session: Session) -> str | None:
        with self._engine.begin() as conn:
            value = conn.execute(select(table.c.flash).where(
                table.c.id_hash == session.id_hash)).scalar()
            if value is None:
                return None
            taken = conn.execute(update(table).where(
                table.c.id_hash == session.id_hash, table.c.flash == value).values(flash=None))
        return value if taken.rowcount == 1 else None

    def _delete(self, condition: object) -> int:
        with self._engine.begin() as conn:
            return conn.execute(delete(table).where(condition)).rowcount

