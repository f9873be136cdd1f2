"""Work deferred until the answer has been sent (runtime/after_answer.py), through a WSGI
application called the way a server calls it."""

from __future__ import annotations

import logging

import falcon.testing
import pytest

from runtime.after_answer import AfterAnswer, defer


class _Body:
    """A response body that records its close()."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def __iter__(self):
        self.events.append("sent")
        yield b"answer"

    def close(self) -> None:
        self.events.append("body closed")


def _app(events: list[str], *deferred):
    def app(environ, start_response):
        for fn in deferred:
            defer(environ, lambda fn=fn: fn(events))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Body(events)
    return app


def _serve(app) -> list[bytes]:
    body = app(falcon.testing.create_environ("/"), lambda *args: None)
    try:
        return list(body)
    finally:
        body.close()


def test_deferred_work_runs_after_the_answer_before_the_body_closes():
    events: list[str] = []
    assert _serve(AfterAnswer(_app(events, lambda e: e.append("first"),
                                   lambda e: e.append("second")))) == [b"answer"]
    assert events == ["sent", "first", "second", "body closed"]


def test_a_failing_deferred_function_is_logged_and_the_rest_still_run(caplog):
    events: list[str] = []

    def broken(_events: list[str]) -> None:
        raise RuntimeError("metrics file gone")

    with caplog.at_level(logging.ERROR, logger="tokmodel.server"):
        _serve(AfterAnswer(_app(events, broken, lambda e: e.append("after"))))
    assert events == ["sent", "after", "body closed"]
    assert "work after an answer failed" in caplog.text and "metrics file gone" in caplog.text


def test_without_the_wrapper_deferred_work_runs_at_once():
    events: list[str] = []
    _serve(_app(events, lambda e: e.append("now")))
    assert events == ["now", "sent", "body closed"]


def test_an_app_that_raises_still_runs_what_it_deferred():
    events: list[str] = []

    def app(environ, start_response):
        defer(environ, lambda: events.append("deferred"))
        raise ValueError("broken app")

    with pytest.raises(ValueError):
        AfterAnswer(app)(falcon.testing.create_environ("/"), lambda *args: None)
    assert events == ["deferred"]


def test_nothing_deferred_leaves_the_body_unwrapped():
    events: list[str] = []
    inner = _app(events)
    body = AfterAnswer(inner)(falcon.testing.create_environ("/"), lambda *args: None)
    assert isinstance(body, _Body)
