"""Background work in chunks: every chunk runs until the last one, a stop ends it at once, and
between two chunks the task waits nine times as long as the chunk took, so that a backlog
never takes more than a tenth of the worker's and the database's time."""

from __future__ import annotations

import threading

from runtime import periodic
from runtime.periodic import PeriodicTask


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def _task_with_clock(monkeypatch) -> tuple[PeriodicTask, _Clock, list[float]]:
    clock = _Clock()
    monkeypatch.setattr(periodic.time, "monotonic", clock.monotonic)
    task = PeriodicTask()
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.now += seconds
        return task._stop.is_set()

    monkeypatch.setattr(task._stop, "wait", wait)
    return task, clock, waits


def test_chunks_run_until_the_last_with_pauses_nine_times_their_length(monkeypatch):
    task, clock, waits = _task_with_clock(monkeypatch)
    counts = iter([200, 200, 200, 37])
    lengths = iter([0.004, 0.020, 0.0001, 0.5])

    def chunk() -> int:
        clock.now += next(lengths)
        return next(counts)

    assert task.in_chunks(chunk, 10, lambda n: n < 200) == 637
    # no wait after the last chunk; a very short chunk still leaves 10 ms to the requests
    assert [round(w, 6) for w in waits] == [0.036, 0.18, periodic.MIN_PAUSE_SECONDS]


def test_in_chunks_stops_at_most_chunks_and_at_a_stop(monkeypatch):
    task, _clock, waits = _task_with_clock(monkeypatch)
    assert task.in_chunks(lambda: 5, 3, lambda n: False) == 15
    assert len(waits) == 3

    calls = []

    def chunk() -> int:
        calls.append(1)
        if len(calls) == 2:
            task.stop()  # e.g. the worker is stopping
        return 5

    assert task.in_chunks(chunk, 100, lambda n: False) == 10
    assert len(calls) == 2


def test_a_stop_ends_the_pause_between_chunks():
    task = PeriodicTask()
    threading.Timer(0.3, task.stop).start()  # while it pauses after the first chunk
    calls = []

    def slow_chunk() -> int:
        calls.append(1)
        threading.Event().wait(0.2 if len(calls) == 1 else 0)  # then a 1.8 s pause
        return 1

    done = threading.Event()
    threading.Thread(target=lambda: (task.in_chunks(slow_chunk, 100, lambda n: False),
                                     done.set())).start()
    assert done.wait(1.2), "the pause did not end at the stop"
    assert len(calls) == 1
