"""runtime.multipart: incremental parsing of multipart/form-data (whatever the read sizes),
spooling, limits and clear refusals, and the streamed re-encoding sent to providers."""

from __future__ import annotations

import io
import random

import pytest
import requests

from runtime import multipart
from runtime.errors import BadRequest, GatewayError, PayloadTooLarge
from tests.fakes.http_fake import parse_form


class Trickle(io.RawIOBase):
    """A body that arrives in small, irregular reads, as from a slow socket."""

    def __init__(self, data: bytes, seed: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.rng = random.Random(seed)

    def read(self, size: int = -1) -> bytes:
        n = self.rng.randint(1, 9)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def encoded(files: dict, data: dict) -> tuple[bytes, str]:
    req = requests.Request("POST", "http://x/", files=files, data=data).prepare()
    return req.body, req.headers["Content-Type"]


TRICKY = b"\r\n--not-the-boundary\r\n\r\n" + bytes(range(256)) * 3 + b"\r\n-"


@pytest.mark.parametrize("seed", range(5))
def test_parses_what_requests_sends_in_any_read_size(seed):
    body, ctype = encoded({"image[]": ("a.png", TRICKY, "image/png"),
                           "mask": ("m.png", b"")}, {"prompt": "héllo", "n": "2"})
    form = multipart.parse(Trickle(body, seed), ctype, 10_000)
    assert form.text_fields() == {"prompt": "héllo", "n": "2"}
    [image] = form.files("image")
    assert (image.name, image.filename, image.content_type) == ("image[]", "a.png", "image/png")
    assert image.file.read() == TRICKY and image.size == len(TRICKY)
    assert form.files("mask")[0].file.read() == b""
    form.close()


def test_repeated_and_array_fields_become_lists():
    body, ctype = encoded({"f": ("f.bin", b"1")},
                          {"include[]": ["logprobs", "x"], "tag": ["a", "b"], "one[]": "z"})
    form = multipart.parse(io.BytesIO(body), ctype, 10_000)
    assert form.text_fields() == {"include": ["logprobs", "x"], "tag": ["a", "b"],
                                  "one": ["z"]}


def test_large_part_is_spooled_to_disk():
    big = b"\xff" * 300_000
    body, ctype = encoded({"file": ("a.wav", big)}, {})
    form = multipart.parse(io.BytesIO(body), ctype, 1_000_000, memory_threshold=64 * 1024)
    part = form.files("file")[0]
    assert part.file._rolled and part.size == len(big)


def test_limit_is_enforced_while_reading_and_from_content_length():
    body, ctype = encoded({"file": ("a.wav", b"x" * 5000)}, {})
    with pytest.raises(PayloadTooLarge):
        multipart.parse(Trickle(body), ctype, 4000)
    with pytest.raises(PayloadTooLarge):
        multipart.parse(io.BytesIO(b""), ctype, 4000, content_length=4001)


@pytest.mark.parametrize(("body", "ctype", "message"), [
    (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n",
     "application/json", None),
    (b"", "multipart/form-data", "no valid boundary"),
    (b"", "multipart/form-data; boundary=b", "boundary never appears"),
    (b"--b--\r\n", "multipart/form-data; boundary=b", "no parts"),
    (b"--b\r\nContent-Type: text/plain\r\n\r\n1\r\n--b--", "multipart/form-data; boundary=b",
     "no Content-Disposition"),
    (b"--b\r\nContent-Disposition: form-data\r\n\r\n1\r\n--b--", "multipart/form-data; "
     "boundary=b", "no name"),
    (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n123",
     "multipart/form-data; boundary=b", "closing boundary"),
    (b"--b\r\nContent-Disposition: form-data; name=\"a\"", "multipart/form-data; boundary=b",
     "inside a part's headers"),
])
def test_malformed_bodies_are_named(body, ctype, message):
    with pytest.raises(GatewayError) as err:
        multipart.parse(io.BytesIO(body), ctype, 10_000)
    if message is None:
        assert err.value.status == 415
    else:
        assert isinstance(err.value, BadRequest) and message in err.value.message


def test_require_names_every_missing_part():
    body, ctype = encoded({"f": ("f.bin", b"1")}, {"prompt": "x"})
    form = multipart.parse(io.BytesIO(body), ctype, 10_000)
    with pytest.raises(BadRequest) as err:
        multipart.require(form, files=("image",), text=("prompt", "model"))
    assert err.value.message == "Missing required form part(s): 'image' (file), 'model'."


def test_reencoding_streams_with_exact_length():
    body, ctype = encoded({"image[]": ("a.png", TRICKY, "image/png")}, {"prompt": "p"})
    form = multipart.parse(io.BytesIO(body), ctype, 10_000)
    text = {"prompt": "p", "model": "dall-e-2", "timestamp_granularities": ["word", "segment"],
            "stream": False}
    out = multipart.MultipartBody(multipart.resend_fields(form, text))
    wire = b""
    while chunk := out.read(7):
        wire += chunk
    assert len(wire) == len(out)
    parts = parse_form(out.content_type, wire)
    assert [(p.name, p.filename, p.data) for p in parts] == [
        ("prompt", None, b"p"), ("model", None, b"dall-e-2"),
        ("timestamp_granularities[]", None, b"word"),
        ("timestamp_granularities[]", None, b"segment"), ("stream", None, b"false"),
        ("image[]", "a.png", TRICKY)]
    assert b"".join(out) == wire


# -- credit before spooling ------------------------------------------------------------------

class Counted(io.RawIOBase):
    """A body whose bytes taken by the parser are counted."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)
        self.taken = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.data.read(size)
        self.taken += len(chunk)
        return chunk


class Refused(Exception):
    pass


def upload(size: int, *, model_first: bool) -> tuple[bytes, str]:
    """A 25 MB-style upload, `model` before or after the file (curl and Node send either)."""
    file = ("file", ("a.wav", b"\x01" * size, "audio/wav"))
    fields = [("model", (None, "openai/whisper-1"))]
    req = requests.Request("POST", "http://x/",
                           files=[*fields, file] if model_first else [file, *fields]).prepare()
    return req.body, req.headers["Content-Type"]


@pytest.mark.parametrize("model_first", [True, False])
def test_a_refused_hold_stops_the_upload_before_anything_reaches_the_disk(model_first):
    body, ctype = upload(25 * 1024 * 1024, model_first=model_first)
    stream = Counted(body)
    seen = []

    def before_spill(form: multipart.Form) -> None:
        seen.append(form.text_fields())
        raise Refused

    with pytest.raises(Refused):
        multipart.parse(stream, ctype, 30 * 1024 * 1024, before_spill=before_spill)
    # called once, with the text parts sent before the file
    assert seen == [{"model": "openai/whisper-1"} if model_first else {}]
    # taken: the buffered bound plus at most two reads, never the 25 MB
    assert stream.taken <= multipart.SPILL_BOUND + 2 * multipart.READ_SIZE + 1024


def test_files_past_the_bound_spill_only_after_the_call():
    body, ctype = upload(3 * multipart.SPILL_BOUND, model_first=True)
    rolled_at_call = []

    def before_spill(form: multipart.Form) -> None:
        rolled_at_call.append(stream.taken)

    stream = Counted(body)
    form = multipart.parse(stream, ctype, 10 * 1024 * 1024, before_spill=before_spill)
    (file,) = form.files("file")
    assert file.size == 3 * multipart.SPILL_BOUND
    assert len(rolled_at_call) == 1 and rolled_at_call[0] < 2 * multipart.SPILL_BOUND
    form.close()


def test_files_within_the_bound_are_read_whole_without_the_call():
    body, ctype = upload(multipart.SPILL_BOUND - 1024, model_first=False)
    called = []
    form = multipart.parse(io.BytesIO(body), ctype, 10 * 1024 * 1024,
                           before_spill=called.append)
    assert called == []
    assert form.text_fields() == {"model": "openai/whisper-1"}
    form.close()
