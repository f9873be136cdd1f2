"""Reading upstream SSE however the bytes are split, and framing events for clients."""

import pytest

from runtime.sse import Event, encode, iter_events

STREAM = (b'data: {"a":1}\n\n: keep-alive\n\nevent: message_start\ndata: {"b":2}\n\n'
          b'data: line1\ndata: line2\n\ndata: [DONE]\n\n')
EXPECTED = [Event('{"a":1}'), Event('{"b":2}', "message_start"), Event("line1\nline2"),
            Event("[DONE]")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_events_survive_any_split(size):
    chunks = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
    assert list(iter_events(chunks)) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_crlf_delimiters(size):
    raw = STREAM.replace(b"\n", b"\r\n")
    chunks = [raw[i:i + size] for i in range(0, len(raw), size)]
    assert list(iter_events(chunks)) == EXPECTED


def test_event_is_yielded_before_the_stream_ends():
    def chunks():
        yield b'data: {"first":true}\n\n'
        raise AssertionError("read past the first event before yielding it")

    assert next(iter_events(chunks())) == Event('{"first":true}')


def test_last_event_without_blank_line():
    assert list(iter_events([b"data: x"])) == [Event("x")]


def test_encode():
    assert encode("{}") == b"data: {}\n\n"
    assert encode("{}", "ping") == b"event: ping\ndata: {}\n\n"
