"""Request (rpm) and token (tpm) rates of a key, counted in the database so that every worker
and node shares them.

Counts live in `key_rates`, one row per key and UTC minute. The rate over the last 60 s is
the sliding-window approximation: this minute's count plus the previous minute's weighted
by the part of it still inside the window (`prev * (1 - elapsed/60)`), which assumes the
previous minute's requests were spread evenly. Admission is one transaction: it adds the
request (1 request, its token estimate) to this minute's row with an atomic upsert, and
takes it back again in the same transaction when the result is over a limit. The token
estimate is corrected to the tokens actually used when the request settles (`correct`).
Rows older than the previous minute are deleted when a key opens a new minute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, text

_PREVIOUS = text("SELECT requests, tokens FROM key_rates WHERE key_id = :key "
                 "AND minute = :minute")
_COUNT = text(
    "INSERT INTO key_rates (key_id, minute, requests, tokens) "
    "VALUES (:key, :minute, 1, :tokens) ON CONFLICT (key_id, minute) DO UPDATE SET "
    "requests = key_rates.requests + 1, tokens = key_rates.tokens + :tokens "
    "RETURNING requests, tokens")
_TAKE_BACK = text("UPDATE key_rates SET requests = requests - 1, tokens = tokens - :tokens "
                  "WHERE key_id = :key AND minute = :minute")
_FORGET = text("DELETE FROM key_rates WHERE key_id = :key AND minute < :minute")
_CORRECT = text("UPDATE key_rates SET tokens = CASE WHEN tokens + :delta > 0 "
                "THEN tokens + :delta ELSE 0 END WHERE key_id = :key AND minute = :minute")

WINDOW = 60


@dataclass(frozen=True, slots=True)
class Rate:
    """One limit's state after admission: `reset` is the seconds until the window frees
    room for one more unit (a request, or the request's tokens when refused)."""

    limit: int
    remaining: int
    reset: int


@dataclass(frozen=True, slots=True)
class Admitted:
    """The outcome: `refused` names the limit passed ('rpm' or 'tpm'), else None; `minute`
    is where the tokens were counted (for `correct`)."""

    minute: int
    requests: Rate | None
    tokens: Rate | None
    refused: str | None = None
    estimate: int = 0

    @property
    def retry_after(self) -> int:
        rate = self.requests if self.refused == "rpm" else self.tokens
        return rate.reset if rate else 1


def _wait(limit: int, current: float, previous: float, elapsed: float, need: float) -> int:
    """Seconds until `need` more fits under `limit` as the window slides."""
    if current + need <= limit and previous == 0:
        return 0
    if current + need > limit:
        # this minute alone is too much: wait into the next, until its weight falls enough
        share = max(0.0, (limit - need) / current) if current else 0.0
        return math.ceil(WINDOW - elapsed + WINDOW * (1 - share))
    share = (limit - current - need) / previous
    return max(0, math.ceil(WINDOW * (1 - share) - elapsed))


def _rate(limit: int | None, current: float, previous: float, elapsed: float,
          need: float) -> Rate | None:
    if limit is None:
        return None
    used = current + previous * (1 - elapsed / WINDOW)
    return Rate(limit, max(0, math.floor(limit - used)),
                max(1, _wait(limit, current, previous, elapsed, need)))


def admit(write: Callable[[], AbstractContextManager[Connection]], key_id: str,
          rpm: int | None, tpm: int | None, tokens: int, now: float) -> Admitted:
    """Count one request of `tokens` (estimated) for the key at time `now` (epoch seconds)
    unless that passes `rpm` or `tpm` over the sliding window."""
    minute, elapsed = divmod(now, WINDOW)
    minute = int(minute)
    params = {"key": key_id, "minute": minute, "tokens": tokens}
    with write() as conn:
        prev = conn.execute(_PREVIOUS, {**params, "minute": minute - 1}).first() or (0, 0)
        requests, counted = conn.execute(_COUNT, params).one()
        if requests == 1:
            conn.execute(_FORGET, {"key": key_id, "minute": minute - 1})
        weight = 1 - elapsed / WINDOW
        refused = None
        if rpm is not None and requests + prev[0] * weight > rpm:
            refused = "rpm"
        elif tpm is not None and counted + prev[1] * weight > tpm:
            refused = "tpm"
        if refused:
            conn.execute(_TAKE_BACK, params)
            requests, counted = requests - 1, counted - tokens
    if refused:
        return Admitted(minute, _rate(rpm, requests, prev[0], elapsed, 1),
                        _rate(tpm, counted, prev[1], elapsed, tokens), refused)
    return Admitted(minute, _rate(rpm, requests, prev[0], elapsed, 1),
                    _rate(tpm, counted, prev[1], elapsed, 1), estimate=tokens)


def correct(write: Callable[[], AbstractContextManager[Connection]], key_id: str,
            minute: int, delta: int) -> None:
    """Replace a request's token estimate by what it used (`delta` = used - estimate)."""
    if delta:
        with write() as conn:
            conn.execute(_CORRECT, {"key": key_id, "minute": minute, "delta": delta})
