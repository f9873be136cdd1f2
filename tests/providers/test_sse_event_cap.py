"""One upstream stream event is capped in size, however it is split; events up to the cap,
and any number of them, pass."""

import pytest

from runtime.providers.base import EventTooLarge, StreamBroken
from runtime.sse import Event, iter_events

CAP = 1000


def test_events_up_to_the_cap_pass_in_any_number():
    event = b"data: " + b"a" * (CAP - 8) + b"\n\n"   # exactly CAP bytes with its blank line
    assert len(event) == CAP
    got = list(iter_events([event * 50], limit=CAP))
    assert got == [Event("a" * (CAP - 8))] * 50


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_one_event_past_the_cap_breaks_the_stream(size):
    raw = b'data: {"ok":1}\n\n' + b"data: " + b"b" * 5000
    chunks = [raw[i:i + size] for i in range(0, len(raw), size)]
    events = iter_events(chunks, limit=CAP)
    assert next(events) == Event('{"ok":1}')
    with pytest.raises(EventTooLarge) as info:
        next(events)
    assert isinstance(info.value, StreamBroken) and info.value.status == 502
    assert "1000 bytes" in info.value.message
    assert CAP < info.value.received <= CAP + size


def test_many_data_lines_count_towards_one_event():
    lines = b"data: xxxxxxxxxx\n" * 200   # 3,400 bytes, no blank line
    with pytest.raises(EventTooLarge):
        list(iter_events([lines], limit=CAP))


def test_the_buffer_is_bounded_while_an_event_grows():
    def endless():
        yield b"data: "
        while True:
            yield b"z" * 100

    with pytest.raises(EventTooLarge) as info:
        list(iter_events(endless(), limit=CAP))
    assert info.value.received <= CAP + 100
