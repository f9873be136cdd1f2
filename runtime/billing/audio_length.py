"""How long an uploaded audio file plays, for pricing per audio second when the provider's
answer does not say (text, srt and vtt answers, json without usage) and for the hold.

Every figure comes from the audio itself, never from a header field a client can set freely:
- WAV (RIFF/WAVE): frames = bytes from the data chunk to the end of the file (a `data` size
  that claims less or more than that is ignored) / block size (channels x bytes per sample,
  from the fmt chunk), seconds = frames / sample rate. The header's own `byte_rate` and
  `block_align` are checked against that sample format and never used: a forged byte rate
  (0xFFFFFFFF to pay nothing, 1 to make an honest file look huge) changes nothing. A fmt
  chunk that cannot describe PCM-like audio (no channels, no sample size, a sample rate
  outside 1 kHz - 768 kHz) is a 400; a compressed codec inside WAV (no sample size) is
  priced like any other compressed file.
- Other formats: the duration `mutagen` reads from the container (MP3 frame headers and
  Xing/VBRI, MP4/M4A, Ogg Opus and Vorbis, FLAC, AIFF, ...), accepted when the bitrate it
  implies (size / duration) is at most the codec's highest (MAX_KBPS); a shorter duration
  than that size allows is forged or broken and is ignored. mutagen is pure Python (no
  native code, no ffmpeg), maintained, and reads durations without decoding.
- Without a duration to trust: size / the lowest bitrate in common use (LOWEST_KBPS, 8
  kbit/s for speech MP3 and Opus), the longest the file can play: never cheaper than the
  audio can be. A WAV file holding a compressed codec is priced this way too.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import IO

import mutagen

from runtime.errors import BadRequest

LOWEST_KBPS = 8
# Highest bitrate each codec produces (kbit/s): MPEG audio layer I, AAC-LC at 48 kHz in
# stereo, Opus and Vorbis; lossless codecs and anything unknown: 24-bit 192 kHz stereo PCM.
MAX_KBPS = {"MP3": 448, "MP4": 576, "AAC": 576, "OggOpus": 512, "OggVorbis": 512,
            "ASF": 768}
LOSSLESS_MAX_KBPS = 9_216
MIN_RATE, MAX_RATE = 1_000, 768_000
MAX_CHANNELS = 64
_PCM_LIKE = {1, 3, 6, 7, 0xFFFE}   # PCM, IEEE float, A-law, mu-law, extensible


def audio_seconds(file: IO[bytes], size: int) -> Decimal:
    """Seconds of audio in an upload of `size` bytes (see the module docstring); leaves the
    file at its start."""
    try:
        seconds = wav_seconds(file, size)
        if seconds is None:
            seconds = container_seconds(file, size)
    finally:
        file.seek(0)
    return seconds if seconds is not None else size_seconds(size)


def size_seconds(size: int) -> Decimal:
    """The longest `size` bytes of audio can play: at LOWEST_KBPS."""
    return Decimal(math.ceil(size * 8 / (LOWEST_KBPS * 1000)))


def wav_seconds(file: IO[bytes], size: int) -> Decimal | None:
    """Length of a RIFF/WAVE upload from its sample format and its data; None when it is no
    WAV file or holds compressed audio; 400 for a fmt chunk that describes no audio."""
    file.seek(0)
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block = rate = None
    while True:
        chunk = file.read(8)
        if len(chunk) < 8:
            raise _bad("it has no data chunk")
        cid, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            fmt = file.read(chunk_size + (chunk_size & 1))
            if len(fmt) < 16:
                raise _bad("its fmt chunk is too short")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", fmt[:16])
            if tag not in _PCM_LIKE or bits == 0:
                # a compressed codec inside WAV: its header's rates are the client's word
                return size_seconds(size)
            if not 0 < channels <= MAX_CHANNELS or bits > 64:
                raise _bad(f"its fmt chunk claims {channels} channels of {bits}-bit samples")
            if not MIN_RATE <= rate <= MAX_RATE:
                raise _bad(f"its fmt chunk claims a sample rate of {rate} Hz")
            block = channels * math.ceil(bits / 8)
        elif cid == b"data":
            if block is None or rate is None:
                raise _bad("its data chunk comes before its fmt chunk")
            audio_bytes = max(size - file.tell(), 0)
            return Decimal(audio_bytes // block) / Decimal(rate)
        else:
            file.seek(chunk_size + (chunk_size & 1), 1)
            if file.tell() >= size:
                raise _bad("it has no data chunk")


def container_seconds(file: IO[bytes], size: int) -> Decimal | None:
    """The container's duration, when mutagen reads one the file's size makes plausible."""
    file.seek(0)
    try:
        found = mutagen.File(file)
    except Exception:   # mutagen raises its own errors, and others, on broken files
        return None
    length = getattr(getattr(found, "info", None), "length", None)
    if found is None or not isinstance(length, int | float) or not length > 0:
        return None
    seconds = Decimal(str(length))
    highest = MAX_KBPS.get(type(found).__name__, LOSSLESS_MAX_KBPS)
    if str(getattr(found.info, "codec", "")).startswith("alac"):   # lossless in MP4
        highest = LOSSLESS_MAX_KBPS
    if Decimal(size * 8) / seconds > highest * 1000:
        return None
    return seconds


def _bad(why: str) -> BadRequest:
    return BadRequest(f"The 'file' is not a valid WAV file: {why}.", param="file")
