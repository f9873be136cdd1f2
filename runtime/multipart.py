"""multipart/form-data in and out, without holding a whole upload in memory.

`parse(stream, content_type, limit)` reads a request body incrementally and spools each part
to its own `SpooledTemporaryFile` (kept in memory up to `memory_threshold` bytes, then on
disk), so at most one part's tail is buffered at a time. A body larger than `limit` is a 413
as soon as the limit is crossed; a body that is not well-formed multipart is a 400 saying
what is wrong; a request that is not multipart/form-data at all is a 415.

Credit before spooling: with `before_spill`, files stay in memory until they would exceed
`spill_bound` bytes in all (SPILL_BOUND, below every part's memory threshold, so nothing is
on disk yet); then `before_spill(form)` is called once, with the text parts read so far,
before another file byte is taken, and may raise (a refused hold) to stop the upload there.
A body whose files fit in the bound is read whole without the call.

`MultipartBody(fields)` is the reverse: a file-like request body with a known length that
streams text fields and spooled parts to a provider, for `requests` to send as is.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from tempfile import SpooledTemporaryFile
from typing import IO

from runtime.errors import BadRequest, GatewayError, PayloadTooLarge

READ_SIZE = 64 * 1024
MEMORY_THRESHOLD = 256 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 256
SPILL_BOUND = 256 * 1024


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    file: IO[bytes]
    size: int = 0

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    def text(self) -> str:
        self.file.seek(0)
        try:
            return self.file.read().decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"The form field '{self.name}' is not valid UTF-8 text.",
                             param=self.name) from None

    def close(self) -> None:
        self.file.close()


@dataclass
class Form:
    parts: list[Part] = field(default_factory=list)

    def text_fields(self) -> dict[str, str | list[str]]:
        """Text parts by name; `name[]` parts and repeated names become lists."""
        out: dict[str, str | list[str]] = {}
        for part in self.parts:
            if part.is_file:
                continue
            name, many = _array_name(part.name)
            value = part.text()
            if name in out:
                prev = out[name]
                out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                out[name] = [value] if many else value
        return out

    def files(self, name: str) -> list[Part]:
        """File parts sent as `name` or as repeated `name[]`, in order."""
        return [p for p in self.parts if p.is_file and _array_name(p.name)[0] == name]

    def file_names(self) -> set[str]:
        return {_array_name(p.name)[0] for p in self.parts if p.is_file}

    def close(self) -> None:
        for part in self.parts:
            part.close()


def _array_name(name: str) -> tuple[str, bool]:
    return (name[:-2], True) if name.endswith("[]") else (name, False)


def boundary_of(content_type: str | None) -> bytes:
    msg = Message()
    msg["content-type"] = content_type or ""
    if msg.get_content_type() != "multipart/form-data":
        raise GatewayError("This endpoint takes a multipart/form-data body (got "
                           f"'{content_type or 'no Content-Type'}').", status=415,
                           type="invalid_request_error")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 200:
        raise BadRequest("The multipart/form-data Content-Type has no valid boundary.")
    return boundary.encode("latin-1")


class _Reader:
    """The request body in chunks, refusing more than `limit` bytes in total; counts the
    file bytes taken, for the `before_spill` call."""

    def __init__(self, stream: IO[bytes], limit: int,
                 before_spill: Callable[[Form], None] | None = None,
                 spill_bound: int = SPILL_BOUND) -> None:
        self.stream = stream
        self.limit = limit
        self.total = 0
        self.before_spill = before_spill
        self.spill_bound = spill_bound
        self.file_bytes = 0

    def read(self) -> bytes:
        chunk = self.stream.read(READ_SIZE)
        self.total += len(chunk)
        if self.total > self.limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {self.limit} bytes.")
        return chunk


def parse(stream: IO[bytes], content_type: str | None, limit: int, *,
          content_length: int | None = None,
          memory_threshold: int = MEMORY_THRESHOLD,
          before_spill: Callable[[Form], None] | None = None,
          spill_bound: int = SPILL_BOUND) -> Form:
    """Read a whole multipart/form-data body into spooled parts (see module docstring)."""
    boundary = boundary_of(content_type)
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"Request body of {content_length} bytes exceeds the limit of "
                              f"{limit} bytes.")
    form = Form()
    try:
        _parse_into(form, _Reader(stream, limit, before_spill, min(spill_bound,
                                                                   memory_threshold)),
                    boundary, memory_threshold)
    except BaseException:
        form.close()
        raise
    return form


def _parse_into(form: Form, reader: _Reader, boundary: bytes, threshold: int) -> None:
    sep = b"\r\n--" + boundary
    # Preamble: ignored up to the first boundary line (searched as if preceded by CRLF).
    buf = b"\r\n"
    while (at := buf.find(sep)) == -1:
        chunk = reader.read()
        if not chunk:
            raise BadRequest("The multipart body has no part: its boundary never appears.")
        buf = buf[-(len(sep) - 1):] + chunk
    buf = buf[at + len(sep):]
    while True:
        buf, ended = _after_boundary(buf, reader)
        if ended:
            if not form.parts:
                raise BadRequest("The multipart body has no parts.")
            return
        if len(form.parts) >= MAX_PARTS:
            raise BadRequest(f"The multipart body has more than {MAX_PARTS} parts.")
        buf, part = _headers(buf, reader, threshold)
        form.parts.append(part)
        buf = _body(buf, reader, part, sep, form)


def _after_boundary(buf: bytes, reader: _Reader) -> tuple[bytes, bool]:
    """After a boundary: `--` ends the body, CRLF starts a part (padding allowed)."""
    while True:
        if buf[:2] == b"--":
            return b"", True
        if b"\r\n" in buf:
            break
        if len(buf) > 256:
            raise BadRequest("The multipart body has garbage after a boundary.")
        chunk = reader.read()
        if not chunk:
            raise BadRequest("The multipart body ends right after a boundary.")
        buf += chunk
    line_end = buf.index(b"\r\n")
    if buf[:line_end].strip(b" \t"):
        raise BadRequest("The multipart body has garbage after a boundary.")
    return buf[line_end + 2:], False


def _headers(buf: bytes, reader: _Reader, threshold: int) -> tuple[bytes, Part]:
    while (end := buf.find(b"\r\n\r\n")) == -1 and not buf.startswith(b"\r\n"):
        if len(buf) > MAX_HEADER_BYTES:
            raise BadRequest("A multipart part has headers larger than "
                             f"{MAX_HEADER_BYTES} bytes.")
        chunk = reader.read()
        if not chunk:
            raise BadRequest("The multipart body ends inside a part's headers.")
        buf += chunk
    if buf.startswith(b"\r\n"):
        raise BadRequest("A multipart part has no Content-Disposition header.")
    msg = Message()
    for line in buf[:end].split(b"\r\n"):
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        if not colon:
            raise BadRequest("A multipart part has a malformed header line.")
        msg[name.strip()] = value.strip()
    if msg.get("content-disposition") is None:
        raise BadRequest("A multipart part has no Content-Disposition header.")
    name = msg.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise BadRequest("A multipart part has no name in its Content-Disposition.")
    filename = msg.get_filename()
    content_type = msg.get("content-type")
    part = Part(name, filename, content_type,
                SpooledTemporaryFile(max_size=threshold))  # closed by Form.close
    return buf[end + 4:], part


def _body(buf: bytes, reader: _Reader, part: Part, sep: bytes, form: Form) -> bytes:
    """Write the part's content up to the next boundary; return what follows it."""
    keep = len(sep) - 1
    while True:
        at = buf.find(sep)
        if at != -1:
            _write(part, buf[:at], reader, form)
            part.file.seek(0)
            return buf[at + len(sep):]
        if len(buf) > keep:
            _write(part, buf[:-keep], reader, form)
            buf = buf[-keep:]
        chunk = reader.read()
        if not chunk:
            raise BadRequest(f"The multipart body ends inside part '{part.name}' (no closing "
                             "boundary).")
        buf += chunk


def _write(part: Part, data: bytes, reader: _Reader, form: Form) -> None:
    if not data:
        return
    if part.is_file and reader.before_spill is not None:
        if reader.file_bytes + len(data) > reader.spill_bound:
            call, reader.before_spill = reader.before_spill, None
            call(Form([p for p in form.parts if p is not part]))   # the parts complete so far
        else:
            reader.file_bytes += len(data)
    part.file.write(data)
    part.size += len(data)


# -- encoding -------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace(
        "\n", "%0A")


class MultipartBody:
    """A multipart/form-data request body streamed from text values and spooled parts.

    `fields` is a sequence of (name, value) where value is a str or a `Part` (sent with its
    filename and content type). `len()` is the exact byte length, so the body goes out with
    Content-Length rather than chunked."""

    def __init__(self, fields: Sequence[tuple[str, str | Part]]) -> None:
        self.boundary = "tokmodel-" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._segments: list[bytes | Part] = []
        for name, value in fields:
            head = f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{_quote(name)}\""
            if isinstance(value, Part):
                head += f"; filename=\"{_quote(value.filename or name)}\"\r\n"
                head += f"Content-Type: {value.content_type or 'application/octet-stream'}\r\n"
                self._segments += [(head + "\r\n").encode(), value, b"\r\n"]
            else:
                self._segments.append((head + "\r\n\r\n").encode() + value.encode() + b"\r\n")
        self._segments.append(f"--{self.boundary}--\r\n".encode())
        self._length = sum(s.size if isinstance(s, Part) else len(s) for s in self._segments)
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for segment in self._segments:
            if isinstance(segment, Part):
                segment.file.seek(0)
                while chunk := segment.file.read(READ_SIZE):
                    yield chunk
            else:
                yield segment

    def read(self, size: int = -1) -> bytes:
        if self._chunks is None:
            self._chunks = iter(self)
        out = self._pending
        while size < 0 or len(out) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            out += chunk
        if size >= 0:
            out, self._pending = out[:size], out[size:]
        else:
            self._pending = b""
        return out


# -- forms as the gateway uses them ---------------------------------------------------------


def require(form: Form, files: Sequence[str] = (), text: Sequence[str] = ()) -> None:
    """400 naming every required part the form lacks (a file sent as text counts as missing)."""
    present_files = form.file_names()
    present_text = {_array_name(p.name)[0] for p in form.parts if not p.is_file}
    missing = [n for n in files if n not in present_files]
    missing += [n for n in text if n not in present_text]
    if missing:
        labels = [f"'{n}' (file)" if n in files else f"'{n}'" for n in missing]
        raise BadRequest(f"Missing required form part(s): {', '.join(labels)}.",
                         param=missing[0] if len(missing) == 1 else None)


def int_field(fields: dict[str, str | list[str]], name: str, low: int, high: int) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}, got {value!r}.",
                         param=name)
    return number


def resend_fields(form: Form, text: dict[str, object]) -> list[tuple[str, str | Part]]:
    """What to send upstream: `text` (the form's text fields after the provider mapping; lists
    go out as repeated `name[]`) followed by the form's files under their original names."""
    out: list[tuple[str, str | Part]] = []
    for name, value in text.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            out.append((f"{name}[]" if isinstance(value, list) else name, _text(item)))
    out += [(p.name, p) for p in form.parts if p.is_file]
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)
