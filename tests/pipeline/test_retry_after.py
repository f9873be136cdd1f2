"""How long the gateway waits before a retry (runtime/pipeline/attempts.py): what an
upstream asks for (`retry-after-ms`, `Retry-After` in seconds, and `Retry-After` as an HTTP
date, which some providers and proxies send: RFC 9110 10.2.3), else a growing pause with
jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from runtime.pipeline.attempts import backoff, retry_after

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ({"Retry-After": "7"}, 7.0),
    ({"Retry-After": "0"}, 0.0),
    ({"Retry-After": "-3"}, 0.0),
    # an unreadable retry-after-ms does not hide a readable Retry-After
    ({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0),
    ({}, None),
    ({"Retry-After": "whenever"}, None),
])
def test_delays_in_seconds(headers, seconds):
    assert retry_after(headers, now=NOW.timestamp()) == seconds


@pytest.mark.parametrize("form", [
    lambda when: format_datetime(when, usegmt=True),          # IMF-fixdate
    lambda when: when.strftime("%A, %d-%b-%y %H:%M:%S GMT"),   # RFC 850
    lambda when: when.strftime("%a %b %d %H:%M:%S %Y"),        # asctime, no zone: GMT
])
def test_an_http_date_is_the_time_left_until_it(form):
    header = {"Retry-After": form(NOW + timedelta(seconds=90))}
    assert retry_after(header, now=NOW.timestamp()) == pytest.approx(90.0)


def test_an_http_date_in_the_past_means_now():
    header = {"Retry-After": format_datetime(NOW - timedelta(minutes=5), usegmt=True)}
    assert retry_after(header, now=NOW.timestamp()) == 0.0


def test_backoff_without_a_named_delay_is_spread_and_grows():
    # the bounds: half of each step to the whole step, the last step repeated
    for attempt, step in enumerate((0.05, 0.2, 0.5, 1.0, 1.0)):
        assert backoff(attempt, draw=lambda: 0.0) == pytest.approx(step / 2)
        assert backoff(attempt, draw=lambda: 0.999999) == pytest.approx(step, rel=1e-5)
    # requests failed together come back at different times
    pauses = {backoff(1) for _ in range(50)}
    assert len(pauses) > 40 and all(0.1 <= p <= 0.2 for p in pauses)
