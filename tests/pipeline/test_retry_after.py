"""How long an upstream asks the gateway to wait before a retry (runtime/pipeline/attempts.py):
`retry-after-ms`, `Retry-After` in seconds, and `Retry-After` as an HTTP date, which some
providers and proxies send (RFC 9110 10.2.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from runtime.pipeline.attempts import retry_after

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
