"""Server-sent events: an incremental reader of upstream streams and the writer for clients.

`iter_events` consumes byte chunks as they arrive (any split, LF/CRLF/CR line ends, comment
lines such as `: keep-alive`) and yields each complete event without waiting for the rest
of the stream. `encode` frames one event for a client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str | None = None


def iter_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    buffer = b""
    data: list[str] = []
    name: str | None = None
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        while True:
            cut = _line_end(buffer)
            if cut is None:
                break
            end, skip = cut
            line = buffer[:end].decode("utf-8", errors="replace")
            buffer = buffer[end + skip:]
            if not line:
                if data:
                    yield Event("\n".join(data), name)
                data, name = [], None
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
    tail = buffer.decode("utf-8", errors="replace").strip()
    if tail.startswith("data:"):
        data.append(tail[5:].lstrip())
    if data:
        yield Event("\n".join(data), name)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """(index, length) of the first line terminator, or None when no full line is buffered.
    A lone CR at the very end may be half of CRLF, so wait for the next byte."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, 1
    if cr + 1 < len(buffer):
        return cr, 2 if buffer[cr + 1:cr + 2] == b"\n" else 1
    return None


def encode(data: str | bytes, event: str | None = None) -> bytes:
    # backslashreplace: a lone surrogate in an upstream's text (a character split between two
    # events) goes out as its JSON escape -- the data is JSON -- instead of failing the stream
    payload = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"
