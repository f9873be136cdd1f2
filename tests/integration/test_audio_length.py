"""Transcriptions and translations priced from the audio itself when the provider's answer
carries no duration (text, json without usage): hostile uploads pay their real length."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
import requests

from tests.fakes.media_stack import media_stack
from tests.fakes.media_upstream import TRANSCRIPT, make_mp3, make_wav
from tests.harness import usage_rows
from tests.pricing_oracle import price, usd

pytestmark = pytest.mark.integration

START = 5_000_000_000
WHISPER = "openai/whisper-1"


def seconds_cost(seconds: str) -> int:
    return usd(Decimal(seconds) * price(WHISPER, "per_audio_second"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("audio-length"))
    yield s
    s.stop()


@pytest.fixture
def account(stack):
    stack.reset()
    stack.openai.json_usage = False
    account_id, secret = stack.gateway.account(START)
    yield account_id, secret
    stack.openai.json_usage = True


def transcribe(stack, secret: str, name: str, data: bytes, fmt: str,
               kind: str = "transcriptions") -> requests.Response:
    return requests.post(f"{stack.gateway.base_url}/audio/{kind}", timeout=20,
                         headers={"Authorization": f"Bearer {secret}"},
                         files={"file": (name, data), "model": (None, WHISPER),
                                "response_format": (None, fmt)})


def with_fmt(wav: bytes, *, rate: int | None = None, byte_rate: int | None = None,
             align: int | None = None) -> bytes:
    """`wav` (as the standard library writes it: fmt first, at byte 20) with header fields
    replaced."""
    tag, channels, old_rate, old_byte_rate, old_align, bits = struct.unpack(
        "<HHIIHH", wav[20:36])
    fmt = struct.pack("<HHIIHH", tag, channels, old_rate if rate is None else rate,
                      old_byte_rate if byte_rate is None else byte_rate,
                      old_align if align is None else align, bits)
    return wav[:20] + fmt + wav[36:]


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("byte_rate", [0xFFFFFFFF, 1])
def test_forged_wav_byte_rate_pays_the_real_length(stack, account, fmt, byte_rate):
    account_id, secret = account
    wav = with_fmt(make_wav(6.0), byte_rate=byte_rate, align=7)
    resp = transcribe(stack, secret, "clip.wav", wav, fmt)
    assert resp.status_code == 200, resp.text
    assert TRANSCRIPT in resp.text
    # the provider plays 6 s (its decoder ignores the byte rate): so is it charged
    cost = seconds_cost("6")
    assert stack.gateway.balance(account_id) == START - cost
    (row,) = usage_rows(stack.gateway, account_id)
    assert row.cost_nano == cost and row.details["seconds"] == 6.0


def test_wav_claiming_a_tiny_sample_rate_is_refused_and_free(stack, account):
    account_id, secret = account
    wav = with_fmt(make_wav(2.0), rate=8, byte_rate=16)
    resp = transcribe(stack, secret, "clip.wav", wav, "text")
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "file" and "sample rate of 8 Hz" in error["message"]
    assert stack.openai.requests == []
    assert stack.gateway.balance(account_id) == START


@pytest.mark.parametrize("kind", ["transcriptions", "translations"])
def test_32_kbit_mp3_without_a_duration_pays_at_least_its_real_length(stack, account, kind):
    account_id, secret = account
    mp3 = make_mp3(60.0, kbps=32)     # 1,667 frames of 36 ms: 60.012 s, 240 kB
    resp = transcribe(stack, secret, "talk.mp3", mp3, "text", kind)
    assert resp.status_code == 200, resp.text
    assert resp.text.strip() == TRANSCRIPT
    charged = START - stack.gateway.balance(account_id)
    # at 128 kbit/s (the former estimate) this file would have paid 16 s
    assert charged >= seconds_cost("60.012")
    assert charged == seconds_cost("60.012")

