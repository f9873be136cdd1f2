"""The console's login throttle: failed logins counted per client address (API-key and
operator logins together) and per key prefix, shared by every worker and node.

Contract (both kinds):
- `failed(client_addr, key_prefix)` counts one failed login (`key_prefix` None for an
  operator-token failure, which counts for the address only). The caller also writes the
  audit-log row; the secret typed is never seen here.
- `retry_at(client_addr, key_prefix)`: when `max_failures` failures came from the address,
  or named the prefix, within the last `window` seconds, the time at which the oldest of
  the newest `max_failures` of them leaves the window (when a login may be tried again);
  else None. A success never resets a count: a valid key must not buy an attacker more
  guesses.

`DatabaseThrottle` counts the failure rows of the audit log (runtime.console.audit), so
`failed` has nothing more to write. `RedisThrottle`, used when TOKMODEL_REDIS_URL is set,
counts them in Redis with the client the key rate counters use (runtime.limits.rates), in one
sorted set per address and per prefix (`tokmodel:{login}:addr:<address>`,
`tokmodel:{login}:prefix:<prefix>`: one hash slot, so each script runs on a cluster too)
holding at most the newest `max_failures` failure times and expiring with the window. Times
are the Redis server's clock, so nodes whose clocks differ still agree. A login that finds
Redis unreachable is judged by the database's counts (the audit rows are written either
way) and the error is logged: an outage neither locks everyone out nor lifts the throttle.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from runtime.console.audit import AuditLog
from runtime.limits.rates import redis_client

log = logging.getLogger("tokmodel.console")


class LoginThrottle(Protocol):
    def failed(self, client_addr: str, key_prefix: str | None) -> None: ...

    def retry_at(self, client_addr: str, key_prefix: str | None = None
                 ) -> datetime | None: ...


class DatabaseThrottle:
    """The failures are the audit log's `login_failed` / `operator_login_failed` rows."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def failed(self, client_addr: str, key_prefix: str | None) -> None:
        """Nothing to add: the caller's audit row is the count."""

    def retry_at(self, client_addr: str, key_prefix: str | None = None) -> datetime | None:
        return self.audit.retry_at(client_addr, key_prefix)


# KEYS: the sorted sets to count in; ARGV: window (ms), max failures, a unique member.
_FAILED_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, most = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZREMRANGEBYRANK', key, 0, -(most + 1))
  redis.call('PEXPIRE', key, window)
end
return 1
"""
# KEYS: the sorted sets to judge; ARGV: window (ms), max failures. Returns the milliseconds
# until a login may be tried again (0: now).
_WAIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for _, key in ipairs(KEYS) do
  local newest = redis.call('ZRANGEBYSCORE', key, now - window, '+inf', 'WITHSCORES')
  local count = #newest / 2
  if count >= most then
    local oldest = tonumber(newest[(count - most) * 2 + 2])
    wait = math.max(wait, oldest + window - now)
  end
end
return wait
"""


class RedisThrottle:
    """Failures counted in Redis; `fallback` (the database's counts) when Redis fails."""

    def __init__(self, url: str, audit: AuditLog, client: Any = None) -> None:
        self._redis = client or redis_client(url)
        self._failed = self._redis.register_script(_FAILED_LUA)
        self._wait = self._redis.register_script(_WAIT_LUA)
        self.fallback = DatabaseThrottle(audit)
        self.max_failures = audit.max_failures
        self.window_ms = int(audit.window * 1000)

    @staticmethod
    def _keys(client_addr: str, key_prefix: str | None) -> list[str]:
        keys = [f"tokmodel:{{login}}:addr:{client_addr}"]
        if key_prefix:
            keys.append(f"tokmodel:{{login}}:prefix:{key_prefix}")
        return keys

    def failed(self, client_addr: str, key_prefix: str | None) -> None:
        try:
            self._failed(keys=self._keys(client_addr, key_prefix),
                         args=[self.window_ms, self.max_failures, secrets.token_hex(8)])
        except Exception as exc:  # noqa: BLE001 - any Redis failure: the audit row remains
            log.warning("login throttle: Redis unavailable (%s); the failure is counted "
                        "in the database only", type(exc).__name__)

    def retry_at(self, client_addr: str, key_prefix: str | None = None) -> datetime | None:
        try:
            wait_ms = int(self._wait(keys=self._keys(client_addr, key_prefix),
                                     args=[self.window_ms, self.max_failures]))
        except Exception as exc:  # noqa: BLE001 - judged by the database's counts instead
            log.warning("login throttle: Redis unavailable (%s); judging by the database's "
                        "counts", type(exc).__name__)
            return self.fallback.retry_at(client_addr, key_prefix)
        if wait_ms <= 0:
            return None
        return datetime.now(UTC) + timedelta(milliseconds=wait_ms)


def login_throttle(redis_url: str | None, audit: AuditLog) -> LoginThrottle:
    """Redis when a URL is configured, else the database."""
    return RedisThrottle(redis_url, audit) if redis_url else DatabaseThrottle(audit)
