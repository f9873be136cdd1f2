"""Stored Responses API conversations: save, look up by owner, delete, purge expired.

Every look-up names the account: a response of another account is indistinguishable from
one that never existed, and an expired one is gone (it is purged when saving). Text is kept
as JSON and never logged.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from .ledger import utc
from .records import StoredResponse
from .schema import stored_responses as t

_SURROGATE = re.compile("[\ud800-\udfff]")
_insert = insert(t)
_get = (select(t).where(t.c.id == bindparam("b_id"))
        .where(t.c.account_id == bindparam("b_account"))
        .where(t.c.expires_at > bindparam("b_now")))
_delete = (delete(t).where(t.c.id == bindparam("b_id"))
           .where(t.c.account_id == bindparam("b_account")))
_purge = delete(t).where(t.c.expires_at <= bindparam("b_now"))


def save(conn: Connection, record: StoredResponse, now: datetime) -> None:
    conn.execute(_purge, {"b_now": now})
    conn.execute(_insert, {
        "id": record.id, "account_id": record.account_id, "model": record.model,
        "provider": record.provider, "deployment": record.deployment,
        "native": record.native,
        "input_items": None if record.input_items is None else _json(record.input_items),
        "response": None if record.response is None else _json(record.response),
        "created_at": now, "expires_at": record.expires_at})


def get(conn: Connection, response_id: str, account_id: int,
        now: datetime) -> StoredResponse | None:
    row = conn.execute(_get, {"b_id": response_id, "b_account": account_id,
                              "b_now": now}).first()
    if row is None:
        return None
    m = row._mapping
    return StoredResponse(
        id=m["id"], account_id=m["account_id"], model=m["model"], provider=m["provider"],
        native=bool(m["native"]), deployment=m["deployment"],
        input_items=None if m["input_items"] is None else json.loads(m["input_items"]),
        response=None if m["response"] is None else json.loads(m["response"]),
        created_at=utc(m["created_at"]), expires_at=utc(m["expires_at"]))


def remove(conn: Connection, response_id: str, account_id: int) -> bool:
    return conn.execute(_delete, {"b_id": response_id, "b_account": account_id}).rowcount == 1


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii() and _SURROGATE.search(text):
        # an upstream's text holding a lone surrogate: the database takes it escaped only
        return json.dumps(value, separators=(",", ":"))
    return text
