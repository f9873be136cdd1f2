"""Settlement writes behind the answer (runtime/billing/settle_behind.py), in-process: inline
unless enabled; enabled, a failing write is tried again until it succeeds, and a write that
keeps failing is given up after the last retry with its hold left to the sweeper."""

from __future__ import annotations

import logging

import gevent
import gevent.event
import pytest

from runtime.billing import settle_behind


@pytest.fixture
def behind(monkeypatch):
    monkeypatch.setattr(settle_behind, "_behind", False)
    monkeypatch.setattr(settle_behind, "RETRY_PAUSES", (0.01, 0.01))
    settle_behind.enable()
    yield
    assert settle_behind.wait(5)


def failing(times: int, calls: list[bool]):
    def write(behind: bool) -> int:
        calls.append(behind)
        if len(calls) <= times:
            raise RuntimeError("database unavailable")
        return 42
    return write


def test_inline_until_enabled_returns_the_write_result(monkeypatch):
    monkeypatch.setattr(settle_behind, "_behind", False)
    calls: list[bool] = []
    assert settle_behind.submit("req_a", failing(0, calls)) == 42
    assert calls == [False]   # the write is told that its caller waits for it
    with pytest.raises(RuntimeError):   # inline, a failure is the caller's, as before
        settle_behind.submit("req_b", failing(1, []))


def test_behind_returns_at_once_and_writes_when_the_loop_runs(behind):
    calls: list[bool] = []
    assert settle_behind.submit("req_c", failing(0, calls)) is None
    assert calls == [] and settle_behind.pending() == 1
    assert settle_behind.wait(5)
    assert calls == [True] and settle_behind.pending() == 0   # told it runs behind


def test_a_failed_write_is_tried_again_until_it_succeeds(behind):
    calls: list[bool] = []
    settle_behind.submit("req_d", failing(2, calls))
    assert settle_behind.wait(5)
    assert len(calls) == 3


def test_a_write_failing_every_time_is_given_up_and_logged(behind, caplog):
    calls: list[bool] = []
    with caplog.at_level(logging.WARNING, logger="tokmodel.billing"):
        settle_behind.submit("req_e", failing(99, calls))
        assert settle_behind.wait(5)
    assert len(calls) == 3   # the first attempt and the two retries
    assert "settlement of req_e failed 3 times" in caplog.text


def test_wait_gives_up_at_its_timeout(behind):
    settle_behind.submit("req_f", lambda behind: gevent.sleep(0.3) or 0)
    assert not settle_behind.wait(0.01)
    assert settle_behind.wait(5)


def test_writes_in_flight_run_together(behind):
    """Writes submitted together are written concurrently (so they can share a commit), each
    once, with far fewer writer greenlets than writes over time."""
    together = 20
    started: list[str] = []
    all_in = gevent.event.Event()

    def write_for(name: str):
        def write(behind: bool) -> int:
            started.append(name)
            if len(started) == together:
                all_in.set()
            # a write that waits for the others in flight: serial writers would never end
            assert all_in.wait(2), f"only {len(started)} writes in flight"
            return 1
        return write

    for n in range(together):
        settle_behind.submit(f"req_t{n}", write_for(f"req_t{n}"))
    assert settle_behind.wait(5)
    assert sorted(started) == sorted(f"req_t{n}" for n in range(together))
    for round_ in range(5):   # later writes reuse the writers
        for n in range(together):
            settle_behind.submit(f"req_r{round_}_{n}", lambda behind: 1)
        assert settle_behind.wait(5)
    assert settle_behind._writers.started <= settle_behind.WRITERS
    assert settle_behind._writers.started < 3 * together
