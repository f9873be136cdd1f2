"""Per-worker health of provider deployments, and the weighted choice among the healthy ones.

Contract:
- `pick(provider, exclude)` chooses among the provider's usable deployments whose names are
  not in `exclude`: weighted at random (by `Deployment.weight`) among those not cooling down;
  when every remaining one is cooling down, the one whose last failure is the oldest (it is
  the likeliest to have recovered); None when none remain.
- `failed(d)` counts a consecutive failure; reaching `d.cooldown.failures` starts a cool-down
  of `d.cooldown.seconds` (0 seconds: never cools down). A failure while cooling restarts it.
- After the cool-down the deployment gets a fresh trial: it is pickable again but keeps its
  failure count, so one more failure cools it down again at once, while `succeeded(d)`
  resets the count and ends any cool-down.
- `on_change(callback)` registers `callback(deployment, up)`, called when a deployment goes
  down or comes back up (for a metrics gauge). Expiry is noticed lazily, when the
  deployment is next looked at, so "up" may be reported later than the cool-down's end.

State lives in this object, one per worker process: workers do not share health, which keeps
the hot path free of I/O. gevent is cooperative and nothing here blocks or yields, so no
locks are needed. pick() runs on every request: a provider with one deployment never touches
the state, and the general path allocates nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection

from runtime.catalogue import Deployment, Provider

ChangeCallback = Callable[[Deployment, bool], None]


class DeploymentHealth:
    """Consecutive failures and cool-downs of deployments, keyed by `Deployment.key`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._clock = clock
        self._random = (rng or random.Random()).random
        self._failures: dict[str, int] = {}
        self._down_until: dict[str, float] = {}      # only deployments cooling down
        self._last_failed: dict[str, float] = {}
        self._callbacks: list[ChangeCallback] = []

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    def _notify(self, deployment: Deployment, up: bool) -> None:
        for callback in self._callbacks:
            callback(deployment, up)

    def _up(self, deployment: Deployment, now: float) -> bool:
        until = self._down_until.get(deployment.key)
        if until is None:
            return True
        if now < until:
            return False
        del self._down_until[deployment.key]      # cool-down over: a fresh trial
        self._notify(deployment, True)
        return True

    def is_up(self, deployment: Deployment) -> bool:
        """Not cooling down."""
        if not self._down_until:
            return True
        return self._up(deployment, self._clock())

    def pick(self, provider: Provider, exclude: Collection[str] = ()) -> Deployment | None:
        """A deployment to send the next attempt to, or None when none remains."""
        deployments = provider.deployments
        if len(deployments) == 1:
            # Nothing to choose between: cooling down or not, it is the only one left.
            only = deployments[0]
            return only if only.usable and only.name not in exclude else None
        cooling = bool(self._down_until)        # else no clock read, no lookups
        now = self._clock() if cooling else 0.0
        total = 0
        for d in deployments:
            if d.usable and d.name not in exclude and (not cooling or self._up(d, now)):
                total += d.weight
        if total:
            point = self._random() * total
            chosen = None
            for d in deployments:
                if d.usable and d.name not in exclude and (not cooling or self._up(d, now)):
                    chosen = d
                    point -= d.weight
                    if point < 0:
                        break
            return chosen
        # Every remaining deployment is cooling down (or none remains).
        oldest = None
        oldest_at = 0.0
        for d in deployments:
            if d.usable and d.name not in exclude:
                at = self._last_failed.get(d.key, 0.0)
                if oldest is None or at < oldest_at:
                    oldest, oldest_at = d, at
        return oldest

    def failed(self, deployment: Deployment) -> None:
        """One more consecutive failure; cools the deployment down at its policy's count."""
        key = deployment.key
        now = self._clock()
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        self._last_failed[key] = now
        policy = deployment.cooldown
        if count >= policy.failures and policy.seconds > 0:
            # _up() first settles a cool-down that ended unnoticed, so "up" and "down"
            # notifications always alternate.
            was_up = self._up(deployment, now)
            self._down_until[key] = now + policy.seconds
            if was_up:
                self._notify(deployment, False)

    def succeeded(self, deployment: Deployment) -> None:
        """The deployment answered: forget its failures and end any cool-down."""
        key = deployment.key
        if key in self._failures:
            del self._failures[key]
        if self._down_until.pop(key, None) is not None:
            self._notify(deployment, True)
