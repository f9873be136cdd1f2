"""The account's usage views: the filtered, paged usage page with totals and a daily chart,
its CSV export, and the money history (top-ups, adjustments, debts), also paged.

Contract:
- Filters come from the query string: `key` (a key id of the account), `model`, `endpoint`,
  `since` and `until` (UTC days, YYYY-MM-DD, both inclusive), `size` (one of PAGE_SIZES) and
  `before` or `after` (opaque cursors of the "Older" and "Newer" links; pages are keyset
  pages of runtime/store/usage_queries.py). A bad value is a 400 page naming it.
- Totals and the chart cover every row of the filter, not only the page shown.
- `/console/usage.csv` streams every row of the filter, read in short batches.
- `/console/topups` (and the operator's account page, through `history_page`) shows the
  money history in keyset pages of HISTORY_ROWS, `before`/`after` cursors like usage.
- Units are shown per kind: tokens in/out, images, audio seconds, speech characters,
  rerank documents ranked and searches billed, web searches (see `describe`); the CSV has a
  column for each.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import falcon

from runtime.billing.credits import format_credits
from runtime.billing.pricing import WEB_SEARCHES
from runtime.console.pages import Viewer, account_page, current_viewer
from runtime.console.web import Console, PageError, secure_headers
from runtime.store.money_history import MoneyEntry
from runtime.store.money_history import encode_cursor as encode_history_cursor
from runtime.store.usage_queries import UsageFilter, UsageRow, encode_cursor

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_SIZE = 50
HISTORY_ROWS = 50
MAX_FILTER_TEXT = 200
# One colour per model series in the chart (cycled when there are more models).
PALETTE = ("#2457d6", "#e07a10", "#157347", "#b42318", "#7a4cc2", "#0f8a9d", "#a16207",
           "#c2418a", "#4b5563", "#65a30d")
# How each priced unit in a usage row's details reads: (singular, plural).
UNIT_WORDS = {
    "images": ("image", "images"),
    "seconds": ("second of audio", "seconds of audio"),
    "characters": ("character", "characters"),
    "documents": ("document ranked", "documents ranked"),
    "searches": ("search", "searches"),
    WEB_SEARCHES: ("web search", "web searches"),
}


def _count(value: int | float, words: tuple[str, str]) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f} {words[1]}"
    value = int(value)
    return f"{value:,} {words[0] if value == 1 else words[1]}"


def describe(prompt: int, completion: int, cached: int, units: dict[str, Any]) -> list[str]:
    """What a row (or a total) consumed, one phrase per kind of unit."""
    out = []
    estimated = bool(units.get("estimated_tokens"))
    if prompt or completion:
        text = f"{prompt:,} in / {completion:,} out tokens"
        if cached:
            text += f" ({cached:,} cached)"
        out.append(text + (" (estimated)" if estimated else ""))
    for name, words in UNIT_WORDS.items():
        value = units.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value:
            out.append(_count(value, words))
    return out or ["—"]


@dataclass(frozen=True, slots=True)
class Filters:
    key: str = ""
    model: str = ""
    endpoint: str = ""
    since: str = ""
    until: str = ""
    size: int = DEFAULT_SIZE
    before: str | None = None
    after: str | None = None

    def where(self, account_id: int) -> UsageFilter:
        since = _day(self.since, "since") if self.since else None
        until = _day(self.until, "until") + timedelta(days=1) if self.until else None
        return UsageFilter(account_id=account_id, key_id=self.key or None,
                           model=self.model or None, endpoint=self.endpoint or None,
                           since=since, until=until)

    def query(self, **changes: Any) -> str:
        """The query string of these filters with `changes` (empty values left out)."""
        values = {"key": self.key, "model": self.model, "endpoint": self.endpoint,
                  "since": self.since, "until": self.until,
                  "size": "" if self.size == DEFAULT_SIZE else str(self.size)}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


def _day(text: str, field: str) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PageError(400, f"The {field!r} filter must be a day such as 2026-12-04.") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def read_filters(req: falcon.Request, key_ids: set[str]) -> Filters:
    """The filters of the query string, checked; PageError(400) naming a bad one."""
    values = {}
    for name in ("key", "model", "endpoint", "since", "until"):
        value = (req.get_param(name) or "").strip()
        if len(value) > MAX_FILTER_TEXT or any(ord(ch) < 32 for ch in value):
            raise PageError(400, f"The {name!r} filter is too long or holds control "
                                 "characters.")
        values[name] = value
    if values["key"] and values["key"] not in key_ids:
        raise PageError(400, "The 'key' filter names no key of this account.")
    for name in ("since", "until"):
        if values[name]:
            _day(values[name], name)
    if values["since"] and values["until"] and values["since"] > values["until"]:
        raise PageError(400, "The 'since' day is after the 'until' day.")
    size_text = req.get_param("size") or str(DEFAULT_SIZE)
    if not size_text.isdigit() or int(size_text) not in PAGE_SIZES:
        raise PageError(400, "The page size must be one of "
                             + ", ".join(map(str, PAGE_SIZES)) + ".")
    return Filters(**values, size=int(size_text), before=req.get_param("before") or None,
                   after=req.get_param("after") or None)


def chart(daily: list[dict[str, Any]], width: int = 720, height: int = 200
          ) -> dict[str, Any] | None:
    """A stacked bar chart of cost per UTC day, one series (colour) per model, as SVG shapes:
    {"width", "height", "series": [{"model", "colour", "bars": [{x, y, w, h, title}]}],
    "days": first and last day, "top": the tallest day's cost}. None without data."""
    if not daily:
        return None
    days = sorted({row["day"] for row in daily})
    models = sorted({row["model"] for row in daily})
    per_day: dict[str, int] = {}
    for row in daily:
        per_day[row["day"]] = per_day.get(row["day"], 0) + row["cost_nano"]
    top = max(per_day.values()) or 1
    slot = width / len(days)
    bar = max(slot * 0.8, 1.0)
    stacked = dict.fromkeys(days, 0)
    series = {model: [] for model in models}
    for row in sorted(daily, key=lambda r: (r["day"], r["model"])):
        h = row["cost_nano"] / top * height
        x = days.index(row["day"]) * slot + (slot - bar) / 2
        y = height - stacked[row["day"]] - h
        stacked[row["day"]] += h
        series[row["model"]].append({
            "x": round(x, 2), "y": round(y, 2), "w": round(bar, 2), "h": round(max(h, 0.5), 2),
            "title": f"{row['day']} · {row['model']}: {format_credits(row['cost_nano'])} "
                     f"credits, {row['requests']} requests"})
    return {"width": width, "height": height, "days": (days[0], days[-1]),
            "top": format_credits(top),
            "series": [{"model": model, "colour": PALETTE[i % len(PALETTE)],
                        "bars": series[model]} for i, model in enumerate(models)]}


class Usage:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        store = self.console.store
        keys = store.list_keys(viewer.account.name)
        filters = read_filters(req, {key.id for key in keys})
        where = filters.where(viewer.account.id)
        try:
            rows, older, newer = self._page(where, filters)
        except ValueError:
            raise PageError(400, "That page link is not valid: start again from the newest "
                                 "page.") from None
        totals = store.usage_totals(where)
        everything = UsageFilter(account_id=viewer.account.id)
        self.console.render(
            resp, "usage.html", **account_page(viewer, "usage"), filters=filters,
            rows=rows, totals=totals,
            older=f"?{filters.query(before=older)}" if older else "",
            newer=f"?{filters.query(after=newer)}" if newer else "",
            csv_link=f"/console/usage.csv?{filters.query(size='')}",
            chart=chart(store.usage_daily(where)), sizes=PAGE_SIZES, keys=keys,
            key_names={key.id: key.name for key in keys},
            models=store.usage_values(everything, "model"),
            endpoints=store.usage_values(everything, "endpoint"))

    def _page(self, where: UsageFilter, filters: Filters
              ) -> tuple[list[UsageRow], str | None, str | None]:
        """The rows to show and the cursors of the older and newer pages (None: none)."""
        store = self.console.store
        if filters.after:
            rows, newer = store.usage_page_newer(where, filters.size, filters.after)
            return rows, encode_cursor(rows[-1].id) if rows else None, newer
        rows, older = store.usage_page(where, filters.size, filters.before)
        newer = None
        if filters.before and rows:
            above = encode_cursor(rows[0].id)
            newer = above if store.usage_page_newer(where, 1, above)[0] else None
        return rows, older, newer


CSV_COLUMNS = ("time_utc", "request_id", "key", "model", "endpoint", "provider", "status",
               "prompt_tokens", "completion_tokens", "cached_tokens", "images",
               "audio_seconds", "characters", "documents", "searches", "web_searches",
               "cost_credits", "latency_ms")


def _cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is kept as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_lines(rows: Iterator[list[UsageRow]], key_names: dict[str, str]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> bytes:
        data = buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        return data

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for batch in rows:
        for row in batch:
            units = row.units
            writer.writerow([_cell(v) for v in (
                row.created_at.strftime("%Y-%m-%d %H:%M:%S"), row.request_id,
                key_names.get(row.key_id or "", ""), row.model, row.endpoint, row.provider,
                row.status, row.prompt_tokens, row.completion_tokens, row.cached_tokens,
                units.get("images", ""), units.get("seconds", ""),
                units.get("characters", ""), units.get("documents", ""),
                units.get("searches", ""),
                units.get(WEB_SEARCHES, ""), format_credits(row.cost_nano),
                row.latency_ms)])
        yield flush()


class UsageCsv:
    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer = current_viewer(self.console, req)
        keys = self.console.store.list_keys(viewer.account.name)
        filters = read_filters(req, {key.id for key in keys})
        where = filters.where(viewer.account.id)
        resp.content_type = "text/csv; charset=utf-8"
        secure_headers(resp)
        resp.set_header("Content-Disposition", 'attachment; filename="usage.csv"')
        resp.stream = csv_lines(self.console.store.usage_batches(where),
                                {key.id: key.name for key in keys})


HISTORY_KINDS = {
    "topup": "Top-up",
    "adjustment": "Adjustment",
    "debt": "Debt (a request cost more than the balance)",
    "debt_payment": "Debt paid",
}


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of an account's money history and the query strings of its "Older" and
    "Newer" links ("" when there is no such page)."""

    entries: list[MoneyEntry]
    older: str
    newer: str


def history_page(store: Any, account_id: int, req: falcon.Request,
                 size: int = HISTORY_ROWS) -> HistoryPage:
    """The page the query string's `before` or `after` cursor asks for (the newest without
    either); a cursor this console did not make is a 400 page."""
    before, after = req.get_param("before") or None, req.get_param("after") or None
    try:
        if after:
            entries, newer = store.money_history_newer(account_id, size, after)
            older = encode_history_cursor(entries[-1]) if entries else None
        else:
            entries, older = store.money_history(account_id, size, before)
            newer = None
            if before and entries:
                above = encode_history_cursor(entries[0])
                newer = above if store.money_history_newer(account_id, 1, above)[0] else None
    except ValueError:
        raise PageError(400, "That page link is not valid: start again from the newest "
                             "page.") from None
    return HistoryPage(entries, f"?{urlencode({'before': older})}" if older else "",
                       f"?{urlencode({'after': newer})}" if newer else "")


class History:
    """/console/topups: the account's top-ups, adjustments, debts and debt payments, in
    pages of HISTORY_ROWS with "Older"/"Newer" links."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        viewer: Viewer = current_viewer(self.console, req)
        self.console.render(
            resp, "topups.html", **account_page(viewer, "topups"), account=viewer.account,
            history=history_page(self.console.store, viewer.account.id, req),
            kinds=HISTORY_KINDS)


def add_usage_routes(app: falcon.App, console: Console) -> None:
    console.templates.globals["describe"] = describe
    app.add_route("/console/usage", Usage(console))
    app.add_route("/console/usage.csv", UsageCsv(console))
    app.add_route("/console/topups", History(console))
