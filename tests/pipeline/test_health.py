"""Deployment health: weighted choice, exclusion, cool-down after consecutive failures,
recovery, and the least-recently-failed choice when everything is cooling down."""

from __future__ import annotations

import random
from collections import Counter

from runtime.catalogue import Cooldown, Deployment, Provider
from runtime.pipeline.health import DeploymentHealth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Descriptor:
    keyless = False


def provider(*specs: tuple[str, int], failures: int = 3, seconds: float = 30.0,
             keys: dict[str, str | None] | None = None) -> Provider:
    cooldown = Cooldown(failures, seconds)
    keys = keys or {}
    deployments = tuple(
        Deployment(name, "p", f"https://{name}.example", keys.get(name, "k"), "KEY", weight,
                   cooldown=cooldown)
        for name, weight in specs)
    first = deployments[0]
    return Provider("p", Descriptor(), first.base_url, first.api_key, first.api_key_env,
                    deployments, cooldown=cooldown)


def health() -> tuple[DeploymentHealth, Clock]:
    clock = Clock()
    return DeploymentHealth(clock=clock, rng=random.Random(1234)), clock


def names(h: DeploymentHealth, p: Provider, n: int = 4000, **kw) -> Counter:
    return Counter(h.pick(p, **kw).name for _ in range(n))


def test_weights_share_the_traffic():
    h, _ = health()
    counts = names(h, provider(("east", 3), ("west", 1)), 8000)
    assert set(counts) == {"east", "west"}
    assert abs(counts["east"] / 8000 - 0.75) < 0.03


def test_exclude_and_none_when_everything_is_excluded():
    h, _ = health()
    p = provider(("east", 3), ("west", 1), ("north", 1))
    assert set(names(h, p, 500, exclude={"east"})) == {"west", "north"}
    assert set(names(h, p, 50, exclude=("east", "north"))) == {"west"}
    assert h.pick(p, exclude={"east", "west", "north"}) is None
    single = provider(("only", 1))
    assert h.pick(single) is single.deployments[0]
    assert h.pick(single, exclude=["only"]) is None


def test_deployments_without_their_key_are_never_picked():
    h, _ = health()
    p = provider(("east", 3), ("west", 1), keys={"east": None})
    assert set(names(h, p, 200)) == {"west"}
    assert h.pick(p, exclude={"west"}) is None
    assert h.pick(provider(("only", 1), keys={"only": None})) is None


def test_cool_down_after_n_consecutive_failures_then_recovery():
    h, clock = health()
    p = provider(("east", 3), ("west", 1), failures=2, seconds=30)
    east, west = p.deployments
    h.failed(east)
    assert h.is_up(east)
    h.failed(east)
    assert not h.is_up(east) and h.is_up(west)
    assert set(names(h, p, 200)) == {"west"}
    clock.now = 29.9
    assert set(names(h, p, 200)) == {"west"}
    clock.now = 30.0
    assert h.is_up(east)
    assert set(names(h, p, 400)) == {"east", "west"}
    # A fresh trial: one more failure cools it down again at once.
    h.failed(east)
    assert not h.is_up(east)
    clock.now = 59.9
    assert not h.is_up(east)
    clock.now = 60.0
    assert h.is_up(east)


def test_succeeded_resets_the_count_and_ends_the_cool_down():
    h, _ = health()
    p = provider(("east", 1), ("west", 1), failures=2)
    east, _ = p.deployments
    h.failed(east)
    h.succeeded(east)
    h.failed(east)
    assert h.is_up(east)                   # the count restarted: one failure, not two
    h.failed(east)
    assert not h.is_up(east)
    h.succeeded(east)
    assert h.is_up(east)
    h.failed(east)
    assert h.is_up(east)


def test_when_all_cool_down_the_least_recently_failed_is_picked():
    h, clock = health()
    p = provider(("a", 1), ("b", 1), ("c", 1), failures=1, seconds=100)
    a, b, c = p.deployments
    clock.now = 1.0
    h.failed(b)
    clock.now = 2.0
    h.failed(a)
    clock.now = 3.0
    h.failed(c)
    assert not any(h.is_up(d) for d in p.deployments)
    assert h.pick(p) is b
    assert h.pick(p, exclude={"b"}) is a
    assert h.pick(p, exclude={"a", "b", "c"}) is None
    # A cooling single deployment is still the one to try.
    single = provider(("only", 1), failures=1)
    h.failed(single.deployments[0])
    assert h.pick(single) is single.deployments[0]


def test_zero_seconds_never_cools_down():
    h, _ = health()
    p = provider(("east", 1), ("west", 1), failures=1, seconds=0)
    h.failed(p.deployments[0])
    assert h.is_up(p.deployments[0])


def test_on_change_reports_down_and_up_once_each():
    h, clock = health()
    events: list[tuple[str, bool]] = []
    h.on_change(lambda d, up: events.append((d.name, up)))
    p = provider(("east", 1), ("west", 1), failures=1, seconds=10)
    east, west = p.deployments
    h.failed(east)
    h.failed(east)                         # already down: no second event
    assert events == [("east", False)]
    clock.now = 20.0
    h.pick(p)
    assert events == [("east", False), ("east", True)]
    h.failed(west)
    h.succeeded(west)
    h.succeeded(west)
    assert events[2:] == [("west", False), ("west", True)]
    # A cool-down that ended unnoticed is reported up before the next down.
    h.failed(east)
    clock.now = 40.0
    h.failed(east)
    assert events[4:] == [("east", False), ("east", True), ("east", False)]


def test_state_is_per_provider_and_deployment():
    h, _ = health()
    p1 = provider(("east", 1), ("west", 1), failures=1)
    q = Provider("q", Descriptor(), "https://q", "k", "K",
                 (Deployment("east", "q", "https://q", "k", "K", cooldown=Cooldown(1, 30)),
                  Deployment("west", "q", "https://q2", "k", "K", cooldown=Cooldown(1, 30))))
    h.failed(p1.deployments[0])
    assert not h.is_up(p1.deployments[0]) and h.is_up(q.deployments[0])
