"""The hold keeper every gateway worker runs: heartbeats for its own holds, and the sweep that
settles the holds of workers that are gone.

Every `heartbeat_seconds` (TOKMODEL_HOLD_HEARTBEAT_SECONDS, default 10) a worker
- stamps all its open holds with its owner id (`host:pid:random`) and the time, recording the
  progress of its accepted streams that changed (one statement per interval: see
  runtime/store/holds.py);
- sweeps: a hold whose heartbeat is older than `stale_seconds` (TOKMODEL_HOLD_STALE_SECONDS,
  default 60) belongs to a worker that was killed or crashed, or to a node that was lost. It
  is settled at the progress last recorded (prompt estimate plus the output counted so far,
  usage row with status 499), or given back in full when nothing was recorded (the provider
  never accepted the request). Many workers on many nodes sweep the same database: a hold is
  claimed under a row lock the others skip, and settlement is exactly-once per request id.

The grace must be well above the heartbeat interval (at least twice it; the default is six
times) so that a live stream on a busy node is never taken for a lost one. The keeper runs
as a thread, which is a greenlet in the gevent worker (it must share the worker's loop: it
reads the state of the streams that loop is serving).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.periodic import PeriodicTask
from runtime.store import Store
from runtime.store.holds import Swept

log = logging.getLogger("tokmodel.holds")

HEARTBEAT_ENV = "TOKMODEL_HOLD_HEARTBEAT_SECONDS"
STALE_ENV = "TOKMODEL_HOLD_STALE_SECONDS"
SWEEP_LIMIT = 100   # holds settled per sweep; more wait for the next interval


@dataclass(frozen=True, slots=True)
class HoldSettings:
    heartbeat_seconds: float = 10.0
    stale_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.heartbeat_seconds > 0:
            raise ValueError(f"{HEARTBEAT_ENV} must be > 0")
        if not self.stale_seconds >= 2 * self.heartbeat_seconds:
            raise ValueError(f"{STALE_ENV} must be at least twice {HEARTBEAT_ENV}: a live "
                             "stream would otherwise be taken for a lost one")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HoldSettings:
        env = os.environ if env is None else env
        base = cls()
        return cls(heartbeat_seconds=float(env.get(HEARTBEAT_ENV) or base.heartbeat_seconds),
                   stale_seconds=float(env.get(STALE_ENV) or base.stale_seconds))


def worker_id() -> str:
    """This process's owner id: host, pid, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class HoldKeeper(PeriodicTask):
    """Heartbeat and sweep for one worker process; `start()` once the worker runs."""

    name = "tokmodel-holds"
    log = log

    def __init__(self, store: Store, settings: HoldSettings, owner: str | None = None) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.owner = owner or worker_id()

    def interval(self) -> float:
        return self.settings.heartbeat_seconds

    def run_once(self) -> None:
        self.beat()
        self.sweep()

    def beat(self) -> int:
        """Stamp this worker's open holds; return how many."""
        return self.store.heartbeat_holds(self.owner)

    def sweep(self) -> list[Swept]:
        """Settle the holds of lost workers; return them."""
        swept = self.store.sweep_stale_holds(self.settings.stale_seconds, limit=SWEEP_LIMIT)
        for hold in swept:
            if hold.logged:
                log.warning("hold %s of a lost worker settled: %d of %d nano-credits charged "
                            "(account %d)", hold.request_id, hold.charged, hold.held,
                            hold.account_id)
            else:
                log.warning("hold %s of a lost worker given back (%d nano-credits, account "
                            "%d): the provider had not accepted it", hold.request_id,
                            hold.held, hold.account_id)
        return swept
