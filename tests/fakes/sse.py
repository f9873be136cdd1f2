"""Server-sent events (SSE) encoding and decoding shared by the fake upstream servers and tests.

Contract
--------
* ``encode_event(data, event=None)`` returns one complete SSE frame as bytes: an optional
  ``event: <name>`` line, one ``data: <line>`` line per line of the payload, and a blank line.
  A mapping or list payload is JSON-encoded compactly (``{"a":1}``, UTF-8, no ASCII escaping),
  the way OpenAI, Anthropic and Gemini write their chunks; a string payload is sent verbatim.
  ``crlf=True`` uses ``\\r\\n`` line ends (Gemini's framing).
* ``encode_comment(text)`` returns a comment frame (``: keep-alive\\n\\n``); clients ignore it.
* ``SSEDecoder`` is an incremental decoder following the WHATWG event-stream rules: lines end
  with ``\\n``, ``\\r\\n`` or ``\\r`` (also when split across ``feed`` calls), lines starting with
  ``:`` are comments, ``data`` lines of one event are joined with ``\\n``, an event is dispatched
  at a blank line, and an event without data is dropped. Bytes after the last blank line are
  an incomplete event: ``close()`` discards them and ``incomplete`` reports whether any were
  left, which is how a test tells a cut stream from a finished one.
* ``parse_sse(raw)`` decodes a whole body into ``SSEEvent`` objects (event name, data, id).
* ``parse_events(raw)`` decodes a whole body into payloads: each event's data parsed as JSON,
  except the ``[DONE]`` sentinel and any other non-JSON data, which are returned as strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"
"""The OpenAI Chat Completions end-of-stream sentinel (``data: [DONE]``)."""

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched server-sent event."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """The data field decoded as JSON."""
        return json.loads(self.data)


def encode_event(
    data: Mapping[str, Any] | list[Any] | str,
    event: str | None = None,
    *,
    id: str | None = None,
    crlf: bool = False,
) -> bytes:
    """Encode one SSE frame; dicts and lists become compact JSON, strings are sent verbatim."""
    eol = "\r\n" if crlf else "\n"
    if isinstance(data, str):
        text = data
    else:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    lines: list[str] = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(f"data: {line}" for line in text.splitlines() or [""])
    return (eol.join(lines) + eol + eol).encode("utf-8")


def encode_comment(text: str = "keep-alive", *, crlf: bool = False) -> bytes:
    """Encode an SSE comment frame such as ``: keep-alive``; clients must ignore it."""
    eol = "\r\n" if crlf else "\n"
    return f": {text}{eol}{eol}".encode()


class SSEDecoder:
    """Incremental SSE decoder: feed bytes as they arrive, get complete events back."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._dirty = False
        self.incomplete = False
        """True after ``close()`` when the stream ended in the middle of an event."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(self._buffer):
            # A trailing CR may be the first half of a CRLF that arrives in the next chunk.
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break
            line = self._buffer[start : match.start()].decode("utf-8")
            start = match.end()
            sse = self._line(line)
            if sse is not None:
                events.append(sse)
        self._buffer = self._buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """Signal end of input; returns the event completed by a final lone CR, if any."""
        events: list[SSEEvent] = []
        if self._buffer.endswith(b"\r"):
            sse = self._line(self._buffer[:-1].decode("utf-8"))
            self._buffer = b""
            if sse is not None:
                events.append(sse)
        self.incomplete = bool(self._buffer) or self._dirty
        self._buffer = b""
        self._reset_event()
        return events

    def _reset_event(self) -> None:
        self._data = []
        self._event = None
        self._retry = None
        self._dirty = False

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._reset_event()
                return None
            sse = SSEEvent(
                data="\n".join(self._data), event=self._event, id=self._id, retry=self._retry
            )
            self._reset_event()
            return sse
        if line.startswith(":"):
            return None
        self._dirty = True
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


def iter_sse(chunks: Iterable[bytes]) -> Iterator[SSEEvent]:
    """Decode an iterable of byte chunks (e.g. ``response.iter_content(None)``) lazily."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


def parse_sse(raw: bytes) -> list[SSEEvent]:
    """Decode a complete SSE body into events (comments skipped, incomplete tail dropped)."""
    return list(iter_sse([raw]))


def parse_events(raw: bytes) -> list[dict[str, Any] | str]:
    """Decode a complete SSE body into payloads: JSON data decoded, ``"[DONE]"`` kept as str."""
    payloads: list[dict[str, Any] | str] = []
    for sse in parse_sse(raw):
        if sse.data == DONE:
            payloads.append(DONE)
            continue
        try:
            payloads.append(json.loads(sse.data))
        except ValueError:
            payloads.append(sse.data)
    return payloads
