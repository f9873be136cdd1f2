"""Credit before spooling, on the real gateway under gunicorn with the strict media fake: a
multipart upload larger than memory keeps is held before its files are read on, from the
fields sent before them and the body's size (the worst case across the endpoint's models
when `model` comes after the file, as the Node SDK and curl may send it). An account that
cannot cover that hold is refused after the gateway took a few hundred kB of a 25 MB body;
one that can is charged the exact audio length."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests

from runtime import multipart
from runtime.billing.audio_length import size_seconds
from tests.fakes.media_stack import media_stack
from tests.fakes.media_upstream import make_wav
from tests.harness import usage_rows
from tests.pricing_oracle import price, usd

pytestmark = pytest.mark.integration

WHISPER = "openai/whisper-1"
BIG = 25 * 1024 * 1024
BOUNDARY = "----tokmodel-test-boundary"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("upload-hold"),
                    {"TOKMODEL_MAX_BODY_BYTES": str(30 * 1024 * 1024)})
    yield s
    s.stop()


@pytest.fixture
def up(stack):
    stack.reset()
    return stack


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if filename:
        head += "Content-Type: audio/wav\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def send_only_the_start(gw, secret: str, *, model_first: bool) -> tuple[int, bytes]:
    """Announce a 25 MB transcription upload, send its first 1 MB only, and read the answer:
    the gateway must answer without waiting for the rest."""
    model = part("model", WHISPER.encode())
    file_head = part("file", b"", "big.wav")[:-2]     # headers only, content follows
    wav = make_wav(BIG / 16000)[:BIG]
    tail = b"\r\n" + (b"" if model_first else model) + f"--{BOUNDARY}--\r\n".encode()
    start = (model if model_first else b"") + file_head
    length = len(start) + len(wav) + len(tail)
    url = urlsplit(gw.url)
    with socket.create_connection((url.hostname, url.port), timeout=15) as sock:
        sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {url.netloc}\r\n"
                      f"Authorization: Bearer {secret}\r\nContent-Length: {length}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
                      ).encode() + start + wav[:1024 * 1024])
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    return int(head.split()[1]), body


def worst_case(body_bytes: int) -> int:
    return usd(size_seconds(body_bytes) * price(WHISPER, "per_audio_second"))


@pytest.mark.parametrize("model_first", [True, False])
def test_an_account_that_cannot_cover_the_upload_is_refused_before_it_is_read(up,
                                                                               model_first):
    gw = up.gateway
    # enough for a minute of audio many times over, not for 25 MB at the lowest bitrate
    balance = worst_case(BIG) // 2
    account, secret = gw.account(balance)
    status, body = send_only_the_start(gw, secret, model_first=model_first)
    assert status == 403
    assert b"Insufficient credits" in body
    assert up.openai.requests == []
    assert gw.balance(account) == balance
    assert [r.cost_nano for r in usage_rows(gw, account)] in ([], [0])


def test_a_small_upload_is_held_exactly_after_it_is_read(up):
    # within the in-memory bound: no hold before the file, the exact one after it
    gw = up.gateway
    wav = make_wav(4.0)
    assert len(wav) < multipart.SPILL_BOUND
    cost = usd(4 * price(WHISPER, "per_audio_second"))
    account, secret = gw.account(cost + 1)
    resp = requests.post(gw.url + "/v1/audio/transcriptions", timeout=20,
                         headers={"Authorization": f"Bearer {secret}"},
                         files=[("file", ("a.wav", wav, "audio/wav")),
                                ("model", (None, WHISPER))])
    assert resp.status_code == 200, resp.text
    assert gw.balance(account) == 1


@pytest.mark.parametrize("model_first", [True, False])
def test_an_account_that_can_pay_uploads_past_the_bound_and_pays_the_exact_length(
        up, model_first):
    gw = up.gateway
    wav = make_wav(60.0)             # 960 kB: spooled, after the hold
    assert len(wav) > multipart.SPILL_BOUND
    account, secret = gw.account(worst_case(len(wav) + 1000))
    start = gw.balance(account)
    files = [("file", ("minute.wav", wav, "audio/wav"))]
    model = [("model", (None, WHISPER))]
    resp = requests.post(gw.url + "/v1/audio/transcriptions", timeout=20,
                         headers={"Authorization": f"Bearer {secret}"},
                         files=model + files if model_first else files + model)
    assert resp.status_code == 200, resp.text
    cost = usd(60 * price(WHISPER, "per_audio_second"))
    assert start - gw.balance(account) == cost
    (row,) = usage_rows(gw, account)
    assert (row.model, row.cost_nano) == (WHISPER, cost)
