"""Audio lengths from the audio itself: WAV from its data and sample format whatever its
header claims, compressed formats from their container checked against their size, and
anything else at the lowest bitrate."""

from __future__ import annotations

import io
import struct
from decimal import Decimal

import pytest

from runtime.billing.audio_length import audio_seconds
from runtime.errors import BadRequest
from tests.fakes.media_upstream import make_mp3, make_wav


def seconds(data: bytes) -> Decimal:
    return audio_seconds(io.BytesIO(data), len(data))


def test_wav_from_its_data_whatever_the_data_size_claims():
    wav = make_wav(3.0)                       # 8 kHz, 16-bit mono: 48,000 bytes of data
    assert seconds(wav) == 3
    data_at = wav.index(b"data") + 4
    for claimed in (0xFFFFFFFF, 2):
        forged = wav[:data_at] + struct.pack("<I", claimed) + wav[data_at + 4:]
        assert seconds(forged) == 3


def test_wav_with_a_compressed_codec_is_priced_by_size():
    wav = make_wav(3.0)
    adpcm = wav[:20] + struct.pack("<H", 2) + wav[22:]     # format tag 2: MS ADPCM
    assert seconds(adpcm) == Decimal(-(-len(adpcm) * 8 // 8000))


@pytest.mark.parametrize("channels, bits", [(0, 16), (1, 0x7FFF)])
def test_wav_describing_no_audio_is_a_400(channels, bits):
    wav = make_wav(1.0)
    bad = wav[:22] + struct.pack("<H", channels) + wav[24:34] + struct.pack("<H", bits) + wav[36:]
    with pytest.raises(BadRequest) as info:
        seconds(bad)
    assert info.value.param == "file"


def test_mp3_from_its_frames_and_a_forged_short_duration_is_ignored():
    mp3 = make_mp3(10.0, kbps=32)              # 278 frames of 36 ms, 40,032 bytes
    assert seconds(mp3) == Decimal("10.008")
    # a Xing header in the first frame (after 17 bytes of mono side information) claiming
    # one frame: 36 ms for 40 kB would be 8.9 Mbit/s, beyond any MP3, so the duration is
    # ignored and the file pays its size at 8 kbit/s
    xing = b"Xing" + struct.pack(">II", 1, 1)
    forged = mp3[:21] + xing + mp3[21 + len(xing):]
    assert seconds(forged) == Decimal(-(-len(forged) * 8 // 8000))


def test_unknown_bytes_pay_their_size_at_8_kbit_s():
    assert seconds(b"\x01\x02\x03" * 10_000) == 30
    assert seconds(b"") == 0
