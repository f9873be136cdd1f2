"""POST /v1/audio/speech, /v1/audio/transcriptions and /v1/audio/translations.

Speech: JSON in; the provider's audio (or, with `stream_format: "sse"`, its event stream) is
forwarded to the client chunk by chunk as it arrives, with the provider's Content-Type. It is
charged per input character (`per_mchar`), known before the call: the hold is the exact
price. The charge is settled once when the body ends, fails, or the client goes away; an
answer that delivered no audio byte costs nothing.

Transcriptions and translations: a multipart upload (`file`, `model`, `language`, `prompt`,
`response_format`, `temperature`, `timestamp_granularities[]`, `include[]`, ...) streamed to
the provider; JSON answers (json, verbose_json) gain `usage.cost`, text answers (text, srt,
vtt) are returned as the provider's plain text. Charged per audio second (`per_audio_second`)
from, in order: the answer's `usage` (`{"type": "duration", "seconds"}`), its `duration`
(verbose_json), the end of the last srt/vtt cue, the length of a WAV upload from its header,
and otherwise an estimate of one second per 16,000 bytes of upload (128 kbit/s audio),
rounded up. Answers with token usage are charged at the model's token prices when it has them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, Any

import falcon

from runtime import multipart
from runtime.billing.meter import Meter
from runtime.billing.pricing import Usage, hold_micro, micro_to_credits, token_cost
from runtime.billing.settling_body import SettlingBody
from runtime.billing.unit_pricing import audio_seconds_cost, speech_cost
from runtime.catalogue import Model
from runtime.errors import BadRequest, UpstreamError
from runtime.gateway import Gateway, provider_body
from runtime.providers.base import UpstreamCall, json_headers, query_auth
from runtime.upstream import broken_off, read_body

log = logging.getLogger("tokmodel.audio")

BYTES_PER_SECOND_ESTIMATE = 16_000
# The hold assumes low-bitrate audio (32 kbit/s) so it covers most uploads.
BYTES_PER_SECOND_HOLD = 4_000
_CUE_END = re.compile(r"-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


def _call(gw: Gateway, model: Model, kind: str, headers: dict[str, str], body: Any) -> Any:
    return gw.forward(UpstreamCall("POST", model.provider.url(kind, model.upstream), headers,
                                   body, query_auth(model)), model)


# -- speech ----------------------------------------------------------------------------------


class AudioStream(SettlingBody):
    """The WSGI body of a speech answer: upstream bytes as they arrive; settles exactly once
    (charged when at least one byte reached the client)."""

    def __init__(self, chunks: Iterator[bytes], *, meter: Meter, cost: Decimal,
                 units: dict[str, int | float], on_close: Callable[[], None]) -> None:
        self._chunks = chunks
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
            self._status = broken_off(exc).status
            log.warning("speech stream %s broke off: %s", self._meter.request_id, exc)
        finally:
            self._finish()

    def _finish(self) -> None:
        try:
            self._on_close()
        finally:
            try:
                usage = Usage(units=dict(self._units) if self._sent else {})
                self._meter.settle(usage, self._cost if self._sent else 0, self._status)
            except Exception:
                log.exception("settling speech %s failed", self._meter.request_id)



class AudioSpeech:
    kind = "audio.speech"

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        gw = self.gw
        key = gw.authenticate(req)
        _raw, body = gw.json_body(req, self.kind)
        client_model = body["model"]
        model = gw.model_for(client_model, self.kind)
        chars = len(body["input"])
        cost = speech_cost(model, chars)
        native = provider_body(model, self.kind, body)
        headers = json_headers(model)
        headers["Accept"] = "*/*"

        meter = Meter(gw.store, key, self.kind, client_model, model.provider.id)
        meter.reserve(hold_micro(cost))
        resp.set_header("X-Request-Id", meter.request_id)
        with meter.releasing_on_failure():
            upstream = _call(gw, model, self.kind, headers, json.dumps(native).encode())
        resp.content_type = upstream.headers.get("Content-Type") or "application/octet-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        stream = AudioStream(upstream.iter_content(chunk_size=None), meter=meter, cost=cost,
                             units={"characters": chars}, on_close=upstream.close)
        resp.stream = stream


# -- transcriptions and translations ---------------------------------------------------------


def wav_seconds(file: IO[bytes]) -> Decimal | None:
    """Duration of a RIFF/WAVE file from its fmt and data chunk headers."""
    file.seek(0)
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = None
    while True:
        chunk = file.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            fmt = file.read(size + (size & 1))
            if len(fmt) < 12:
                return None
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
        elif cid == b"data":
            if not byte_rate:
                return None
            return Decimal(size) / Decimal(byte_rate)
        else:
            file.seek(size + (size & 1), 1)


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


class _Transcribe:
    kind = ""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = self.gw.authenticate(req)
        with self.gw.form_body(req) as form:
            self._serve(form, key, resp)

    def _serve(self, form: multipart.Form, key: Any, resp: falcon.Response) -> None:
        gw = self.gw
        multipart.require(form, files=("file",), text=("model",))
        fields = form.text_fields()
        client_model = fields["model"]
        if isinstance(client_model, list):
            raise BadRequest("'model' must be sent once.", param="model")
        model = gw.model_for(client_model, self.kind)
        audio = form.files("file")
        if len(audio) != 1:
            raise BadRequest("Send exactly one 'file' part.", param="file")
        upload = audio[0]
        native = provider_body(model, self.kind, fields)
        body = multipart.MultipartBody(multipart.resend_fields(form, native))
        headers = json_headers(model)
        headers["Content-Type"] = body.content_type
        headers["Accept"] = "*/*"
        hold_seconds = Decimal(math.ceil(upload.size / BYTES_PER_SECOND_HOLD))

        meter = Meter(gw.store, key, self.kind, client_model, model.provider.id)
        meter.reserve(hold_micro(audio_seconds_cost(model, hold_seconds)))
        resp.set_header("X-Request-Id", meter.request_id)
        with meter.releasing_on_failure():
            upstream = _call(gw, model, self.kind, headers, body)
            content_type = upstream.headers.get("Content-Type") or "text/plain; charset=utf-8"
            raw = read_body(upstream)
        payload = None
        if content_type.startswith("application/json"):
            try:
                payload = json.loads(raw)
            except ValueError:
                meter.fail(502)
                raise UpstreamError("The upstream provider answered with invalid JSON.") from None
            if not isinstance(payload, dict):
                meter.fail(502)
                raise UpstreamError("The upstream provider answered without a transcript.")
        usage, cost = self._cost(model, payload, raw, upload)
        meter.settle(usage, cost, 200)
        if payload is None:
            resp.data = raw
            resp.content_type = content_type
            return
        if not isinstance(payload.get("usage"), dict):
            payload["usage"] = {"type": "duration", "seconds": float(usage.units["seconds"])}
        payload["usage"]["cost"] = micro_to_credits(meter.charged)
        resp.data = json.dumps(payload).encode()
        resp.content_type = falcon.MEDIA_JSON

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
        if seconds is None and payload is None:
            seconds, source = cue_end_seconds(raw.decode("utf-8", "replace")), "cues"
        if seconds is None:
            seconds, source = wav_seconds(upload.file), "wav_header"
        if seconds is None:
            seconds = Decimal(math.ceil(upload.size / BYTES_PER_SECOND_ESTIMATE))
            source = "size_estimate"
        logged = Usage(units={"seconds": float(seconds), f"seconds_from_{source}": 1})
        return logged, audio_seconds_cost(model, seconds)


class AudioTranscriptions(_Transcribe):
    kind = "audio.transcriptions"


class AudioTranslations(_Transcribe):
    kind = "audio.translations"
