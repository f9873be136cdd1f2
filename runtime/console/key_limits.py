"""The console's per-key limits form: /console/keys/{key_id}/limits (GET shows, POST saves).

Contract:
- Every field left empty clears that limit; the form always sends them all, so what is saved
  is exactly what the form shows. Fields: models (comma-separated ids and globs), rpm, tpm
  (positive whole numbers), spend/daily/monthly limits (credits, exact to the nano-credit),
  expiry (a UTC date and time, YYYY-MM-DDTHH:MM as a datetime-local input sends it).
- A bad value re-renders the form with a 400 naming the field, and changes nothing.
- A saved limit is seen by the key's next request on every worker and node (the store reads
  limits with the key).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import falcon

from runtime.billing.credits import format_credits, parse_credits
from runtime.console.admin import AMOUNT_PATTERN
from runtime.console.pages import Viewer, account_page, current_viewer, own_key
from runtime.console.web import Console, PageError, Redirect, require_csrf
from runtime.store import KeyRecord

# form field -> (api_keys column, label)
FIELDS: dict[str, tuple[str, str]] = {
    "models": ("models", "Models allowed"),
    "rpm": ("rpm", "Requests per minute"),
    "tpm": ("tpm", "Tokens per minute"),
    "spend_limit": ("spend_limit_nano", "Spend limit in all"),
    "daily_limit": ("daily_limit_nano", "Daily spend limit"),
    "monthly_limit": ("monthly_limit_nano", "Monthly spend limit"),
    "expires": ("expires_at", "Expires"),
}
_CREDITS = ("spend_limit", "daily_limit", "monthly_limit")
_MAX_TEXT = 2000


def form_values(key: KeyRecord) -> dict[str, str]:
    """The key's limits as the form shows them (empty: no limit)."""
    limits = key.limits
    if limits is None:
        return dict.fromkeys(FIELDS, "")
    out = {"models": ", ".join(limits.models) if limits.models is not None else "",
           "expires": limits.expires_at.strftime("%Y-%m-%dT%H:%M") if limits.expires_at else ""}
    for name in ("rpm", "tpm"):
        value = getattr(limits, name)
        out[name] = "" if value is None else str(value)
    for name in _CREDITS:
        value = getattr(limits, FIELDS[name][0])
        out[name] = "" if value is None else format_credits(value)
    return out


def _parse(name: str, text: str) -> Any:
    label = FIELDS[name][1]
    if name == "models":
        patterns = [p.strip() for p in text.split(",") if p.strip()]
        if not patterns:
            raise ValueError(f"{label}: name at least one model id or pattern, or leave it "
                             "empty for every model.")
        return ",".join(patterns)
    if name in ("rpm", "tpm"):
        if not text.isdigit() or int(text) < 1 or len(text) > 12:
            raise ValueError(f"{label} must be a whole number greater than 0.")
        return int(text)
    if name in _CREDITS:
        try:
            if not AMOUNT_PATTERN.fullmatch(text):
                raise ValueError(text)
            nano = parse_credits(text)
        except ValueError:
            raise ValueError(f"{label} must be an amount of credits such as 12.5 "
                             "(at most 9 decimals).") from None
        if nano > 2**63 - 1:
            raise ValueError(f"{label} is too large.")
        return nano
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{label} must be a date and time such as 2027-01-31T00:00 "
                         "(UTC).") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def read_changes(form: dict[str, str]) -> dict[str, Any]:
    """Every limit column and its new value (None: no limit); ValueError naming a field."""
    changes: dict[str, Any] = {}
    for name, (column, label) in FIELDS.items():
        text = (form.get(name) or "").strip()
        if len(text) > _MAX_TEXT or any(ord(ch) < 32 for ch in text):
            raise ValueError(f"{label} is too long or holds control characters.")
        changes[column] = _parse(name, text) if text else None
    return changes


class KeyLimitsPage:
    def __init__(self, console: Console) -> None:
        self.console = console

    def _own_key(self, viewer: Viewer, key_id: str) -> KeyRecord:
        return own_key(self.console, viewer, key_id)

    def _render(self, resp: falcon.Response, viewer: Viewer, key: KeyRecord,
                values: dict[str, str], status: int = 200, error: str = "") -> None:
        self.console.render(resp, "key_limits.html", status=status,
                            **account_page(viewer, "keys"), key=key, values=values,
                            labels={name: label for name, (_, label) in FIELDS.items()},
                            error=error)

    def on_get(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        key = self._own_key(viewer, key_id)
        self._render(resp, viewer, key, form_values(key))

    def on_post(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        viewer = current_viewer(self.console, req)
        form = self.console.form(req)
        require_csrf(self.console, viewer.binding, form)
        key = self._own_key(viewer, key_id)
        try:
            changes = read_changes(form)
            saved = self.console.store.update_key_limits(key.id, changes)
        except ValueError as exc:
            self._render(resp, viewer, key, {name: form.get(name, "") for name in FIELDS},
                         400, str(exc))
            return
        if saved is None:
            raise PageError(404, "There is no such key in this account.")
        self.console.audit.record("key_limits", viewer.actor, self.console.client(req),
                                  account_id=viewer.account.id, key_id=key.id,
                                  detail=", ".join(summary(saved)) or "no limits")
        raise Redirect("/console/keys?done=limits")


def summary(key: KeyRecord) -> list[str]:
    """The key's limits in a few words each, for the keys list ([] when none is set)."""
    limits = key.limits
    if limits is None:
        return []
    out = []
    if limits.models is not None:
        out.append("models: " + ", ".join(limits.models))
    if limits.rpm is not None:
        out.append(f"{limits.rpm:,} requests/min")
    if limits.tpm is not None:
        out.append(f"{limits.tpm:,} tokens/min")
    for column, words in (("spend_limit_nano", "in all"), ("daily_limit_nano", "a day"),
                          ("monthly_limit_nano", "a month")):
        value = getattr(limits, column)
        if value is not None:
            out.append(f"{format_credits(value)} credits {words}")
    if limits.expires_at is not None:
        out.append("expires " + limits.expires_at.strftime("%Y-%m-%d %H:%M UTC"))
    return out


def add_key_limits_routes(app: falcon.App, console: Console) -> None:
    console.templates.globals["limit_summary"] = summary
    app.add_route("/console/keys/{key_id}/limits", KeyLimitsPage(console))
