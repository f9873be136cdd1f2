"""OpenAI audio clients: `POST /v1/audio/speech`, `/v1/audio/transcriptions` and
`/v1/audio/translations`.

Speech: JSON in; the provider's audio (or, with `stream_format: "sse"`, its event stream) is
forwarded to the client chunk by chunk as it arrives, with the provider's Content-Type. It is
charged per input character (`per_mchar`), known before the call: the hold is the exact
price. The charge is settled once when the body ends, fails, or the client goes away; an
answer that delivered no audio byte costs nothing.

Transcriptions and translations: a multipart upload (`file`, `model`, `language`, `prompt`,
`response_format`, `temperature`, `timestamp_granularities[]`, `include[]`, ...) streamed to
the provider; JSON answers (json, verbose_json) gain `usage.cost`, text answers (text, srt,
vtt) are returned as the provider's plain text. Charged per audio second (`per_audio_second`)
from the duration the provider reports: the answer's `usage` (`{"type": "duration",
"seconds"}`) or its `duration` (verbose_json). Without one (text, srt, vtt, json without
usage) from the length of the audio itself (runtime/billing/audio_length.py: WAV from its
data and sample format, other formats from their container's duration checked against the
file size, else the size at the lowest common bitrate), or the end of the last srt/vtt cue
when that is later. The hold is that same length; an upload too large to keep in memory is
held before it is spooled, for the longest audio the request body can hold (its size at the
lowest common bitrate: runtime/pipeline/form_hold.py), and charged the exact length.
Answers with token usage are charged at the model's token prices when it has them.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from runtime import multipart
from runtime.billing.audio_length import audio_seconds, size_seconds
from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage, hold_nano, nano_to_credits, token_cost
from runtime.billing.settling_body import SettlingBody
from runtime.billing.unit_pricing import audio_seconds_cost, speech_cost
from runtime.catalogue import Model
from runtime.errors import BadRequest, UpstreamError
from runtime.gateway import provider_body
from runtime.pipeline.route import JSON, Answer, Request
from runtime.providers.base import UpstreamCall, json_headers, query_auth
from runtime.providers.openai_chat import openai_error
from runtime.upstream import UpstreamResponse, broken_off, read_body

log = logging.getLogger("tokmodel.audio")

_CUE_END = re.compile(r"-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


def _call(model: Model, kind: str, headers: dict[str, str], body: Any) -> UpstreamCall:
    return UpstreamCall("POST", model.provider.url(kind, model.upstream), headers, body,
                        query_auth(model))


# -- speech ----------------------------------------------------------------------------------


class AudioStream(SettlingBody):
    """The WSGI body of a speech answer: upstream bytes as they arrive; settles exactly once
    (charged when at least one byte reached the client)."""

    def __init__(self, chunks: Iterator[bytes], *, meter: Meter, cost: Decimal,
                 units: dict[str, int | float], on_close: Callable[[], None],
                 content_type: str) -> None:
        self._chunks = chunks
        self.content_type = content_type
        self._cost = cost
        self._units = units
        self._on_close = on_close
        self._sent = 0
        super().__init__(meter)

    def _run(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                if chunk:
                    self._sent += len(chunk)
                    yield chunk
        except Exception as exc:  # the status line is gone: the client sees a cut body
            self._status = getattr(exc, "status", broken_off(exc).status)
            log.warning("speech stream %s broke off: %s", self._meter.request_id, exc)
        finally:
            self._finish()

    def produced(self) -> tuple[Usage, Decimal]:
        """What a cut now would be charged: the whole input (the provider accepted it and
        audio is on its way). Recorded on the hold while the stream runs."""
        return Usage(units=dict(self._units)), self._cost

    def _finish(self) -> None:
        self._note_interruption()
        try:
            self._on_close()
        finally:
            try:
                usage = Usage(units=dict(self._units) if self._sent else {})
                self._meter.settle(usage, self._cost if self._sent else 0, self._status)
            except Exception:
                log.exception("settling speech %s failed", self._meter.request_id)



def speech_hold(request: Request, model: Model) -> int:
    return hold_nano(speech_cost(model, len(request.body["input"])))


class SpeechExchange:
    """The provider's audio (or its event stream) forwarded as it arrives."""

    stream = True
    error = staticmethod(openai_error)

    def __init__(self, request: Request, model: Model, shown: str) -> None:
        self.chars = len(request.body["input"])
        self.cost = speech_cost(model, self.chars)
        headers = json_headers(model)
        headers["Accept"] = "*/*"
        self.call = _call(model, "audio.speech", headers,
                          json.dumps(provider_body(model, "audio.speech", request.body)).encode())

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return True

    def whole(self, upstream: UpstreamResponse) -> Answer:
        raise AssertionError("speech is always streamed")

    def stream_body(self, chunks: Iterator[bytes], upstream: UpstreamResponse,
                    meter: Meter) -> AudioStream:
        return AudioStream(chunks, meter=meter, cost=self.cost,
                           units={"characters": self.chars}, on_close=upstream.close,
                           content_type=upstream.headers.get("Content-Type")
                           or "application/octet-stream")


# -- transcriptions and translations ---------------------------------------------------------


def cue_end_seconds(text: str) -> Decimal | None:
    """End time of the last cue of an srt or vtt transcript."""
    ends = _CUE_END.findall(text)
    if not ends:
        return None
    hours, minutes, seconds, fraction = ends[-1]
    return (Decimal(int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
            + Decimal(fraction.ljust(3, "0")) / 1000)


def _seconds(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return Decimal(str(value))


def upload(request: Request) -> multipart.Part:
    """The one audio file of the form (400 naming what is missing)."""
    assert request.form is not None
    multipart.require(request.form, files=("file",), text=("model",))
    audio = request.form.files("file")
    if len(audio) != 1:
        raise BadRequest("Send exactly one 'file' part.", param="file")
    return audio[0]


def upload_seconds(part: multipart.Part) -> Decimal:
    """The audio length of the upload (runtime/billing/audio_length.py)."""
    return audio_seconds(part.file, part.size)


def transcription_prehold(fields: Mapping[str, Any], body_bytes: int, model: Model) -> int:
    """Before the upload is read: the longest audio a body of `body_bytes` can hold
    (audio_length.size_seconds, the length a file without a trusted duration is charged)."""
    return hold_nano(audio_seconds_cost(model, size_seconds(body_bytes)))


def transcription_hold(request: Request, model: Model) -> int:
    seconds = Decimal(math.ceil(upload_seconds(upload(request))))
    return hold_nano(audio_seconds_cost(model, seconds))


class TranscriptionExchange:
    stream = False
    error = staticmethod(openai_error)

    def __init__(self, kind: str, request: Request, model: Model) -> None:
        self.model = model
        self.upload = upload(request)
        native = provider_body(model, kind, request.fields)
        body = multipart.MultipartBody(multipart.resend_fields(request.form, native))
        headers = json_headers(model)
        headers["Content-Type"] = body.content_type
        headers["Accept"] = "*/*"
        self.call = _call(model, kind, headers, body)

    def is_stream(self, upstream: UpstreamResponse) -> bool:
        return False

    def whole(self, upstream: UpstreamResponse) -> Answer:
        content_type = upstream.headers.get("Content-Type") or "text/plain; charset=utf-8"
        raw = read_body(upstream)
        payload = None
        if content_type.startswith("application/json"):
            try:
                payload = json.loads(raw)
            except ValueError:
                raise UpstreamError("The upstream provider answered with invalid JSON.") from None
            if not isinstance(payload, dict):
                raise UpstreamError("The upstream provider answered without a transcript.")
        usage, cost = self._cost(self.model, payload, raw, self.upload)
        if payload is None:
            return Answer(usage, cost, lambda charged: raw, content_type=content_type)

        def render(charged: int) -> bytes:
            if not isinstance(payload.get("usage"), dict):
                payload["usage"] = {"type": "duration",
                                    "seconds": float(usage.units["seconds"])}
            payload["usage"]["cost"] = nano_to_credits(charged)
            return json.dumps(payload).encode()

        return Answer(usage, cost, render, content_type=JSON)

    def stream_body(self, *args: object) -> None:
        raise AssertionError("transcripts are answered whole")

    def _cost(self, model: Model, payload: dict[str, Any] | None, raw: bytes,
              upload: multipart.Part) -> tuple[Usage, Decimal]:
        usage = payload.get("usage") if payload else None
        usage = usage if isinstance(usage, dict) else {}
        if usage.get("type") == "tokens" and "input_per_mtok" in model.pricing:
            logged = Usage.from_openai({"prompt_tokens": usage.get("input_tokens"),
                                        "completion_tokens": usage.get("output_tokens")})
            return logged, token_cost(model, logged)
        seconds = _seconds(usage.get("seconds", usage.get("duration")))
        source = "usage"
        if seconds is None and payload is not None:
            seconds, source = _seconds(payload.get("duration")), "duration"
        if seconds is None:
            seconds, source = upload_seconds(upload), "audio_length"
            cues = cue_end_seconds(raw.decode("utf-8", "replace")) if payload is None else None
            if cues is not None and cues > seconds:
                seconds, source = cues, "cues"
        logged = Usage(units={"seconds": float(seconds), f"seconds_from_{source}": 1})
        return logged, audio_seconds_cost(model, seconds)




def transcriptions(request: Request, model: Model, shown: str) -> TranscriptionExchange:
    return TranscriptionExchange("audio.transcriptions", request, model)


def translations(request: Request, model: Model, shown: str) -> TranscriptionExchange:
    return TranscriptionExchange("audio.translations", request, model)
