"""Content-Encoding decoding of an answer's body, as urllib3's decode_content did: gzip (and
x-gzip, several members in a row) and deflate (zlib-wrapped, or raw as some servers send
it). Any other coding (br, zstd, unknown) is passed through as received, since urllib3 only
decoded those with optional packages this project does not install.

`Decoder.decode(data, limit)` never returns more than `limit` bytes, keeping the rest of its
input for the next call, so a small compressed body cannot expand past a cap in memory.
A body that does not decode raises `UndecodableAnswer` (an OSError: a broken answer).
"""

from __future__ import annotations

import zlib

_GZIP_WBITS = 16 + zlib.MAX_WBITS


class UndecodableAnswer(ConnectionError):
    """The body does not decode with its Content-Encoding."""


class Decoder:
    __slots__ = ("_gzip", "_obj", "_raw_fallback")

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj = zlib.decompressobj(_GZIP_WBITS if gzip else zlib.MAX_WBITS)
        # deflate: until the first bytes decode, a zlib error means a raw deflate stream
        self._raw_fallback = not gzip

    def decode(self, data: bytes, limit: int) -> bytes:
        """Up to `limit` (> 0) decoded bytes of the input so far plus `data`; b"" when all
        of it is decoded and more input is needed."""
        out: list[bytes] = []
        size = 0
        while size < limit:
            obj = self._obj
            if obj.eof:
                data = obj.unused_data + data
                if not (data and self._gzip):
                    break   # the end (bytes after a deflate stream are ignored, as urllib3 did)
                obj = self._obj = zlib.decompressobj(_GZIP_WBITS)   # another gzip member
            else:
                data = obj.unconsumed_tail + data
                if not data:
                    break
            try:
                piece = obj.decompress(data, limit - size)
            except zlib.error as exc:
                if not self._raw_fallback:
                    raise UndecodableAnswer(f"The answer's body does not decode: {exc}") from exc
                self._raw_fallback = False
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                continue    # the same input again, as raw deflate
            data = b""
            if piece:
                self._raw_fallback = False
                out.append(piece)
                size += len(piece)
            elif not obj.eof and not obj.unconsumed_tail:
                break       # all input taken, more is needed
        return b"".join(out)


def decoder_for(coding: str | None) -> Decoder | None:
    """The decoder of a Content-Encoding value, None when the body is used as received."""
    if not coding:
        return None
    coding = coding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        return Decoder(gzip=True)
    if coding == "deflate":
        return Decoder(gzip=False)
    return None
