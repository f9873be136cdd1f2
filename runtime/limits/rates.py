"""Request (rpm) and token (tpm) rates of a key, counted where every worker and node sees
them: in the database (`DatabaseRates`), or in Redis when TOKMODEL_REDIS_URL is set
(`RedisRates`).

Both count per key and UTC minute and judge the last 60 s by the sliding-window
approximation: this minute's count plus the previous minute's weighted by the part of it
still inside the window (`prev * (1 - elapsed/60)`), which assumes the previous minute's
requests were spread evenly. Admission is atomic: the request (1 request, its token
estimate) is added to this minute's count and, when the result is over a limit, taken back
in the same transaction (database) or script (Redis). The estimate is replaced by the
tokens actually used when the request settles (`correct`). Time is the node's clock: keep
nodes in step (NTP).

Redis runs one small Lua script rather than a rate-limiting library: the libraries (e.g.
`limits`) count hits but cannot take back or correct one, and tpm needs both (reserve the
estimate at admission, correct it at settle) and must judge rpm and tpm together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, text

WINDOW = 60
# Redis keeps a minute's counts this long: the minute and the next, when it is `previous`.
REDIS_TTL = 3 * WINDOW


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
    and `estimate` say where and what was counted (for `correct`)."""

    minute: int
    requests: Rate | None
    tokens: Rate | None
    refused: str | None = None
    estimate: int = 0

    @property
    def retry_after(self) -> int:
        rate = self.requests if self.refused == "rpm" else self.tokens
        return rate.reset if rate else 1


class RateCounter(Protocol):
    def admit(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int,
              now: float) -> Admitted:
        """Count one request of `tokens` (estimated) at `now` (epoch seconds) unless that
        passes `rpm` or `tpm`."""

    def correct(self, key_id: str, minute: int, delta: int, requests: int = 0) -> None:
        """Replace a request's estimate by what it used (`delta` = used - estimate);
        `requests=-1` also takes the request itself back (it is admitted again)."""


def _wait(limit: int, current: float, previous: float, elapsed: float, need: float) -> int:
    """Seconds until `need` more fits under `limit` as the window slides."""
    if current + need > limit:
        # this minute alone is too much: wait into the next, until its weight falls enough
        share = max(0.0, (limit - need) / current) if current else 0.0
        return math.ceil(WINDOW - elapsed + WINDOW * (1 - share))
    if previous == 0:
        return 0
    share = (limit - current - need) / previous
    return max(0, math.ceil(WINDOW * (1 - share) - elapsed))


def _rate(limit: int | None, current: float, previous: float, elapsed: float,
          need: float) -> Rate | None:
    if limit is None:
        return None
    used = current + previous * (1 - elapsed / WINDOW)
    return Rate(limit, max(0, math.floor(limit - used)),
                max(1, _wait(limit, current, previous, elapsed, need)))


def _outcome(minute: int, elapsed: float, rpm: int | None, tpm: int | None, tokens: int,
             counts: tuple[int, int, int, int], refused: str | None) -> Admitted:
    """counts: (requests, tokens) of this minute (without the request when refused), and
    of the previous minute."""
    requests, counted, prev_requests, prev_tokens = counts
    need = tokens if refused else 1
    return Admitted(minute, _rate(rpm, requests, prev_requests, elapsed, 1),
                    _rate(tpm, counted, prev_tokens, elapsed, need), refused,
                    0 if refused else tokens)


def _over(rpm: int | None, tpm: int | None, requests: float, counted: float) -> str | None:
    if rpm is not None and requests > rpm:
        return "rpm"
    if tpm is not None and counted > tpm:
        return "tpm"
    return None


# -- the database ---------------------------------------------------------------------------

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
                "THEN tokens + :delta ELSE 0 END, requests = CASE WHEN requests + :requests "
                "> 0 THEN requests + :requests ELSE 0 END "
                "WHERE key_id = :key AND minute = :minute")


class DatabaseRates:
    """Counts in `key_rates` (one row per key and minute, upserted atomically); rows before
    the previous minute are deleted when a key opens a new minute."""

    def __init__(self, write: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._write = write

    def admit(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int,
              now: float) -> Admitted:
        whole, elapsed = divmod(now, WINDOW)
        minute = int(whole)
        params = {"key": key_id, "minute": minute, "tokens": tokens}
        with self._write() as conn:
            prev = conn.execute(_PREVIOUS, {**params, "minute": minute - 1}).first() or (0, 0)
            requests, counted = conn.execute(_COUNT, params).one()
            if requests == 1:
                conn.execute(_FORGET, {"key": key_id, "minute": minute - 1})
            weight = 1 - elapsed / WINDOW
            refused = _over(rpm, tpm, requests + prev[0] * weight, counted + prev[1] * weight)
            if refused:
                conn.execute(_TAKE_BACK, params)
                requests, counted = requests - 1, counted - tokens
        return _outcome(minute, elapsed, rpm, tpm, tokens,
                        (requests, counted, prev[0], prev[1]), refused)

    def correct(self, key_id: str, minute: int, delta: int, requests: int = 0) -> None:
        if delta or requests:
            with self._write() as conn:
                conn.execute(_CORRECT, {"key": key_id, "minute": minute, "delta": delta,
                                        "requests": requests})


# -- Redis ----------------------------------------------------------------------------------

# KEYS: this minute's hash, the previous minute's; ARGV: rpm, tpm (-1: none), tokens,
# weight of the previous minute, ttl. Returns {refused (0, 1 rpm, 2 tpm), requests, tokens,
# previous requests, previous tokens}, this minute's counts without the request if refused.
_ADMIT_LUA = """
local prev_r = tonumber(redis.call('HGET', KEYS[2], 'r') or '0')
local prev_t = tonumber(redis.call('HGET', KEYS[2], 't') or '0')
local tokens = tonumber(ARGV[3])
local r = redis.call('HINCRBY', KEYS[1], 'r', 1)
local t = redis.call('HINCRBY', KEYS[1], 't', tokens)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
local w = tonumber(ARGV[4])
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local refused = 0
if rpm >= 0 and r + prev_r * w > rpm then refused = 1
elseif tpm >= 0 and t + prev_t * w > tpm then refused = 2 end
if refused > 0 then
  r = redis.call('HINCRBY', KEYS[1], 'r', -1)
  t = redis.call('HINCRBY', KEYS[1], 't', 0 - tokens)
end
return {refused, r, t, prev_r, prev_t}
"""
_CORRECT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('HINCRBY', KEYS[1], 't', tonumber(ARGV[1]))
if t < 0 then redis.call('HSET', KEYS[1], 't', 0) end
local r = redis.call('HINCRBY', KEYS[1], 'r', tonumber(ARGV[2]))
if r < 0 then redis.call('HSET', KEYS[1], 'r', 0) end
return 1
"""


def redis_client(url: str) -> Any:
    """The Redis client of TOKMODEL_REDIS_URL, as every Redis counter of the gateway opens it
    (these rates, the console's login throttle)."""
    import redis

    return redis.Redis.from_url(url)


class RedisRates:
    """Counts in Redis hashes `tokmodel:rate:{key_id}:minute` (fields r, t) that expire by
    themselves; one script call per admission and per correction."""

    def __init__(self, url: str, client: Any = None) -> None:
        self._redis = client or redis_client(url)
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._correct = self._redis.register_script(_CORRECT_LUA)

    @staticmethod
    def _key(key_id: str, minute: int) -> str:
        return f"tokmodel:rate:{{{key_id}}}:{minute}"   # one hash slot per key (cluster)

    def admit(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int,
              now: float) -> Admitted:
        whole, elapsed = divmod(now, WINDOW)
        minute = int(whole)
        refused, *counts = self._admit(
            keys=[self._key(key_id, minute), self._key(key_id, minute - 1)],
            args=[-1 if rpm is None else rpm, -1 if tpm is None else tpm, tokens,
                  repr(1 - elapsed / WINDOW), REDIS_TTL])
        return _outcome(minute, elapsed, rpm, tpm, tokens,
                        tuple(int(c) for c in counts), (None, "rpm", "tpm")[int(refused)])

    def correct(self, key_id: str, minute: int, delta: int, requests: int = 0) -> None:
        if delta or requests:
            self._correct(keys=[self._key(key_id, minute)], args=[delta, requests])


def counter(redis_url: str | None, write: Callable[[], AbstractContextManager[Connection]]
            ) -> RateCounter:
    """Redis when a URL is configured, else the database."""
    return RedisRates(redis_url) if redis_url else DatabaseRates(write)
