"""The usage endpoints shared by the admin API and the account API: query parameters ->
`UsageFilter`, one JSON page, totals, the daily series, and CSV streamed in batches.

Parameters: `key`, `model`, `endpoint` (exact matches), `since` (inclusive) and `until`
(exclusive) as ISO 8601 times (UTC when no offset is given), `limit` (1..1000, default 100),
`cursor` (the previous page's `next_cursor`), `format` (`json` or `csv`). Each bad one is a
400 naming it. The caller decides the account (`account_id`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import falcon

from runtime.admin.jsonout import Credits, dumps, iso
from runtime.billing.credits import format_credits
from runtime.errors import BadRequest
from runtime.store import Store
from runtime.store.usage_queries import MAX_PAGE, UsageFilter, UsageRow, UsageTotals

DEFAULT_LIMIT = 100
_CSV_COLUMNS = ("id", "created_at", "request_id", "account", "key_id", "endpoint", "model",
                "provider", "status", "prompt_tokens", "completion_tokens", "cached_tokens",
                "units", "cost", "latency_ms")
_TEXT_PARAMS = ("key", "model", "endpoint")


def _text(req: falcon.Request, name: str) -> str | None:
    value = req.get_param(name)
    if value is None:
        return None
    if not value or len(value) > 200:
        raise BadRequest(f"Invalid query: {name} must be 1 to 200 characters.", param=name)
    return value


def _time(req: falcon.Request, name: str) -> datetime | None:
    value = req.get_param(name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"Invalid query: {name} must be an ISO 8601 time such as "
                         "2026-01-31T00:00:00Z.", param=name) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def usage_filter(req: falcon.Request, account_id: int | None) -> UsageFilter:
    key, model, endpoint = (_text(req, name) for name in _TEXT_PARAMS)
    since, until = _time(req, "since"), _time(req, "until")
    return UsageFilter(account_id=account_id, key_id=key, model=model, endpoint=endpoint,
                       since=since, until=until)


def row_json(row: UsageRow) -> dict[str, Any]:
    return {"id": row.id, "request_id": row.request_id, "created_at": row.created_at,
            "account": row.account, "key_id": row.key_id, "endpoint": row.endpoint,
            "model": row.model, "provider": row.provider, "status": row.status,
            "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "cached_tokens": row.cached_tokens, "units": row.units,
            "cost": Credits(row.cost_nano), "latency_ms": row.latency_ms}


def totals_json(totals: UsageTotals) -> dict[str, Any]:
    return {"requests": totals.requests, "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "cached_tokens": totals.cached_tokens, "units": totals.units,
            "cost": Credits(totals.cost_nano)}


def page_limit(req: falcon.Request) -> int:
    """The `limit` parameter of a paged list (DEFAULT_LIMIT when absent)."""
    value = req.get_param("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(f"Invalid query: limit must be an integer from 1 to {MAX_PAGE}.",
                         param="limit")
    return int(value)


def _csv_lines(store: Store, where: UsageFilter) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for rows in store.usage_batches(where):
        for row in rows:
            writer.writerow((row.id, iso(row.created_at), row.request_id, row.account,
                             row.key_id or "", row.endpoint, row.model, row.provider,
                             row.status, row.prompt_tokens, row.completion_tokens,
                             row.cached_tokens, json.dumps(row.units, sort_keys=True),
                             format_credits(row.cost_nano), row.latency_ms))
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


def answer_page(req: falcon.Request, resp: falcon.Response, store: Store,
                where: UsageFilter) -> None:
    """One JSON page, or with `format=csv` every row of the filter, streamed."""
    form = req.get_param("format") or "json"
    if form not in ("json", "csv"):
        raise BadRequest("Invalid query: format must be json or csv.", param="format")
    if form == "csv":
        if req.get_param("cursor") is not None:
            raise BadRequest("Invalid query: cursor pages JSON; CSV holds every row.",
                             param="cursor")
        resp.content_type = "text/csv; charset=utf-8"
        resp.set_header("Content-Disposition", 'attachment; filename="usage.csv"')
        resp.stream = _csv_lines(store, where)
        return
    limit = page_limit(req)
    try:
        rows, cursor = store.usage_page(where, limit, req.get_param("cursor"))
    except ValueError:
        raise BadRequest("Invalid query: cursor is not a next_cursor of this API.",
                         param="cursor") from None
    send(resp, {"data": [row_json(row) for row in rows], "next_cursor": cursor})


def answer_totals(resp: falcon.Response, store: Store, where: UsageFilter) -> None:
    send(resp, totals_json(store.usage_totals(where)))


def answer_daily(resp: falcon.Response, store: Store, where: UsageFilter) -> None:
    send(resp, {"data": [{"day": day["day"], "model": day["model"],
                          "requests": day["requests"], "cost": Credits(day["cost_nano"])}
                         for day in store.usage_daily(where)]})


def send(resp: falcon.Response, payload: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.set_header("Cache-Control", "no-store")
    resp.data = dumps(payload)
