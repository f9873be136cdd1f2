"""Server-sent events: an incremental reader of upstream streams and the writer for clients.

`iter_events` consumes byte chunks as they arrive (any split, LF/CRLF/CR line ends, comment
lines such as `: keep-alive`) and yields each complete event without waiting for the rest
of the stream. One event may hold at most `max_event_bytes` (TOKMODEL_MAX_STREAM_EVENT_BYTES,
16 MiB: a whole image or tool-call argument fits, and a worker can afford it per stream):
past that the stream is broken off (`EventTooLarge`, a 502 stream error) after taking one
byte more than the cap, so the bytes an upstream sends without ending its event never pile
up in the worker. `encode` frames one event for a client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from runtime.settings import Settings


@cache
def max_event_bytes() -> int:
    return Settings.from_env().max_stream_event_bytes


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str | None = None


def iter_events(chunks: Iterable[bytes], limit: int | None = None) -> Iterator[Event]:
    cap = limit or max_event_bytes()
    buffer = bytearray()   # appends and cuts from the front cost no copy of the rest
    scanned = 0            # buffer[:scanned] holds no line end
    data: list[str] = []
    name: str | None = None
    taken = 0   # bytes of the current event in complete lines, already out of `buffer`
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        while True:
            cut = _line_end(buffer, scanned)
            if cut is None:
                # a CR as the last byte may be half of a CRLF: look at it again
                scanned = max(0, len(buffer) - 1)
                break
            end, skip = cut
            line = buffer[:end].decode("utf-8", errors="replace")
            del buffer[:end + skip]
            scanned = 0
            taken += end + skip
            if not line:
                if data:
                    yield Event("\n".join(data), name)
                data, name, taken = [], None, 0
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
        if taken + len(buffer) > cap:
            raise _too_large(cap, taken + len(buffer))
        # not kept while the next chunk is awaited (an open stream mostly waits)
        chunk, line, value = b"", "", ""
    tail = buffer.decode("utf-8", errors="replace").strip()
    if tail.startswith("data:"):
        data.append(tail[5:].lstrip())
    if data:
        yield Event("\n".join(data), name)


def _too_large(cap: int, received: int) -> Any:
    from runtime.providers.base import EventTooLarge  # base imports this module

    return EventTooLarge(cap, received)


def _line_end(buffer: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(index, length) of the first line terminator, or None when no full line is buffered.
    A lone CR at the very end may be half of CRLF, so wait for the next byte."""
    lf = buffer.find(b"\n", start)
    if lf != -1:
        # a CR is looked for only before the LF: most streams have none, and scanning the
        # whole buffer for one on every line would cost a pass over it per line
        cr = buffer.find(b"\r", start, lf)
        if cr == -1:
            return lf, 1
        return cr, 2 if cr + 1 == lf else 1
    cr = buffer.find(b"\r", start)
    if cr != -1 and cr + 1 < len(buffer):
        return cr, 1  # no LF anywhere: this CR is not half of a CRLF
    return None


def encode(data: str | bytes, event: str | None = None) -> bytes:
    # backslashreplace: a lone surrogate in an upstream's text (a character split between two
    # events) goes out as its JSON escape -- the data is JSON -- instead of failing the stream
    payload = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"
