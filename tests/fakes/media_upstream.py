"""A strict fake of OpenAI's embeddings, images and audio endpoints (also vLLM-style rerank).

Contract
--------
``FakeOpenAIMedia`` (base path ``/v1``) checks ``Authorization: Bearer <api_key>`` and answers
like api.openai.com (protocols.md §6-8):

* ``POST /embeddings``: fields model, input, encoding_format, dimensions, user only; input a
  non-empty string, list of strings, token array or list of token arrays; ``dimensions`` only
  for text-embedding-3 models and at most their native size. Vector ``i`` has component ``j``
  equal to ``vector_value(i, j)`` (exactly representable in float32); base64 when asked.
  ``usage.prompt_tokens`` = words of each text (token arrays: their length).
* ``POST /images/generations`` (JSON), ``/images/edits`` and ``/images/variations``
  (multipart): models dall-e-2, dall-e-3, gpt-image-1 with their sizes, qualities and ``n``
  rules; edits need ``image`` (or repeated ``image[]`` for gpt-image-1) and ``prompt``, PNG
  images for dall-e-2 (one image); variations are dall-e-2 only. dall-e answers ``url`` (or
  ``b64_json``); gpt-image-1 answers ``b64_json`` and ``usage`` with ``input_tokens`` = words
  of the prompt + ``IMAGE_INPUT_TOKENS`` per input image and ``output_tokens`` from
  ``GPT_IMAGE_TOKENS`` times ``n``.
* ``POST /audio/speech``: model, input, voice required; the audio is ``speech_bytes(input)``
  sent in ``SPEECH_CHUNKS`` HTTP chunks with the Content-Type of ``response_format``; with
  ``stream_format: "sse"`` the same bytes as ``speech.audio.delta`` events and a
  ``speech.audio.done`` event.
* ``POST /audio/transcriptions`` and ``/audio/translations`` (multipart): ``file`` (a known
  audio extension) and ``model`` required; the audio must be a WAV file, whose duration (read
  with the standard library's ``wave``, which ignores the header's byte rate) is the
  transcript's duration, or (``.mp3``) MPEG audio Layer III frames from the first byte to the
  last (an ID3v2 tag first is allowed), whose duration is the sum of the frames' samples
  over their sample rate, as a decoder plays them. ``response_format`` json
  (with ``usage: {"type": "duration", "seconds"}`` unless ``json_usage`` is False), text, srt,
  vtt or verbose_json (``timestamp_granularities[]`` only with verbose_json).
* ``POST /rerank`` (vLLM style): ``{model, query, documents, top_n?, return_documents?}`` ->
  ``{"id","model","usage":{"total_tokens"},"results":[...]}``; the score of a document is
  the share of the query's words it contains.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import wave
from typing import Any

from .http_fake import FakeServer, Received, Reject, Reply, require_json

EMBED_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
              "text-embedding-ada-002": 1536}
IMAGE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
IMAGE_QUALITIES = {"dall-e-2": ("standard",), "dall-e-3": ("standard", "hd"),
                   "gpt-image-1": ("low", "medium", "high", "auto")}
GPT_IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
IMAGE_INPUT_TOKENS = 323
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
SPEECH_CHUNKS = 5
AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
               "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
AUDIO_EXTENSIONS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm")
TRANSCRIPT = "Hello there from the fake."
_EMBED_FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
_IMAGE_FIELDS = ("model", "prompt", "n", "size", "quality", "response_format", "style", "user",
                 "background", "moderation", "output_format", "output_compression")
_SPEECH_FIELDS = ("model", "input", "voice", "instructions", "response_format", "speed",
                  "stream_format")


def vector_value(i: int, j: int) -> float:
    return ((i * 31 + j * 7) % 256 - 128) / 256


def speech_bytes(text: str) -> bytes:
    """Deterministic 'audio' for a text: 4 KiB per word, so it spans several chunks."""
    seed = text.encode()
    return (seed * (4096 // max(len(seed), 1) + 1))[:4096] * max(len(text.split()), 1)


def words(text: str) -> int:
    return max(len(text.split()), 1)


def wav_duration(data: bytes) -> float:
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise Reject(400, "Audio file might be corrupted or unsupported.",
                     param="file") from exc


# MPEG-1 and MPEG-2 Layer III: bitrates (kbit/s) by index, sample rates by index.
_MP3_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000)}


def mp3_duration(data: bytes) -> float:
    """Seconds of a Layer III stream, frame by frame; 400 unless the whole file is frames."""
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    seconds = 0.0
    while pos < len(data):
        head = data[pos:pos + 4].ljust(4, b"\0")
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        if head[0] != 0xFF or head[1] & 0xE0 != 0xE0 or layer != 1 or version not in _MP3_KBPS:
            raise Reject(400, "Audio file might be corrupted or unsupported.", param="file")
        kbps = _MP3_KBPS[version][head[2] >> 4] if head[2] >> 4 < 15 else 0
        rate_index = (head[2] >> 2) & 3
        if not kbps or rate_index == 3:
            raise Reject(400, "Audio file might be corrupted or unsupported.", param="file")
        rate = _MP3_RATES[version][rate_index]
        samples = 1152 if version == 3 else 576
        pos += samples // 8 * kbps * 1000 // rate + ((head[2] >> 1) & 1)
        seconds += samples / rate
    if seconds == 0:
        raise Reject(400, "Audio file might be corrupted or unsupported.", param="file")
    return seconds


def make_mp3(seconds: float, kbps: int = 32) -> bytes:
    """Silent mono MPEG-1 Layer III at 32 kHz and a constant `kbps`, no Xing header: frames
    of 1152 samples (36 ms), the last one complete."""
    index = _MP3_KBPS[3].index(kbps)
    frame = bytes([0xFF, 0xFB, index << 4 | 2 << 2, 0xC0])
    frame += bytes(144 * kbps * 1000 // 32000 - 4)
    return frame * math.ceil(seconds / 0.036)


def make_wav(seconds: float, rate: int = 8000) -> bytes:
    """A silent mono 16-bit WAV file of the given length."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


class FakeOpenAIMedia(FakeServer):
    base_path = "/v1"
    routes = {
        ("POST", "/embeddings"): "embeddings",
        ("POST", "/images/generations"): "generations",
        ("POST", "/images/edits"): "edits",
        ("POST", "/images/variations"): "variations",
        ("POST", "/audio/speech"): "speech",
        ("POST", "/audio/transcriptions"): "transcriptions",
        ("POST", "/audio/translations"): "translations",
        ("POST", "/rerank"): "rerank",
    }

    def __init__(self, api_key: str | None = "sk-up", *, chunk_delay: float = 0.0,
                 json_usage: bool = True) -> None:
        super().__init__(api_key, chunk_delay=chunk_delay)
        self.json_usage = json_usage

    def error_body(self, status: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"error": {"message": message, "type": "invalid_request_error",
                          "param": extra.get("param"), "code": extra.get("code")}}

    # -- embeddings --------------------------------------------------------------------------

    def embeddings(self, req: Received) -> Reply:
        body = require_json(req, _EMBED_FIELDS, ("model", "input"))
        model = body["model"]
        if model not in EMBED_DIMS:
            raise Reject(404, f"The model `{model}` does not exist", code="model_not_found")
        items = body["input"]
        if isinstance(items, str) or (isinstance(items, list) and items
                                      and isinstance(items[0], int)):
            items = [items]
        if not isinstance(items, list) or not items or any(
                not (isinstance(i, str) and i) and not (isinstance(i, list) and i and all(
                    isinstance(t, int) for t in i)) for i in items):
            raise Reject(400, "'$.input' is invalid.", param="input")
        dims = EMBED_DIMS[model]
        if body.get("dimensions") is not None:
            if not model.startswith("text-embedding-3") or not 1 <= body["dimensions"] <= dims:
                raise Reject(400, "This model does not support specifying dimensions.",
                             param="dimensions")
            dims = body["dimensions"]
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise Reject(400, "Invalid encoding_format.", param="encoding_format")
        data = []
        for i in range(len(items)):
            vec = [vector_value(i, j) for j in range(dims)]
            emb: Any = vec
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(i) if isinstance(i, list) else words(i) for i in items)
        return Reply.json({"object": "list", "data": data, "model": model,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # -- images ------------------------------------------------------------------------------

    def _image_params(self, model: str, params: dict[str, Any], n_max: int = 10) -> tuple:
        if model not in IMAGE_SIZES:
            raise Reject(400, f"Invalid model {model}.", param="model")
        n = params.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= (1 if model == "dall-e-3" else n_max):
            raise Reject(400, f"Invalid 'n' for {model}.", param="n")
        size = params.get("size") or ("auto" if model == "gpt-image-1" else "1024x1024")
        if size not in IMAGE_SIZES[model]:
            raise Reject(400, f"Invalid size for {model}: {size}.", param="size")
        quality = params.get("quality") or ("auto" if model == "gpt-image-1" else "standard")
        if quality not in IMAGE_QUALITIES[model]:
            raise Reject(400, f"Invalid quality for {model}: {quality}.", param="quality")
        fmt = params.get("response_format")
        if fmt is not None and (model == "gpt-image-1" or fmt not in ("url", "b64_json")):
            raise Reject(400, "Invalid response_format.", param="response_format")
        return n, size, quality, fmt or "url"

    def _images(self, model: str, prompt: str, n: int, quality: str, fmt: str,
                input_images: int = 0) -> Reply:
        out: dict[str, Any] = {"created": 1735689600}
        if model == "gpt-image-1":
            out["data"] = [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)]
            text = words(prompt)
            image = IMAGE_INPUT_TOKENS * input_images
            output = GPT_IMAGE_TOKENS[quality] * n
            out["usage"] = {"input_tokens": text + image, "output_tokens": output,
                            "total_tokens": text + image + output,
                            "input_tokens_details": {"text_tokens": text,
                                                     "image_tokens": image}}
            out["quality"] = quality
        elif fmt == "b64_json":
            out["data"] = [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)]
        else:
            out["data"] = [{"url": f"https://images.example/{i}.png"} for i in range(n)]
        if model == "dall-e-3":
            for item in out["data"]:
                item["revised_prompt"] = "revised: " + prompt
        return Reply.json(out)

    def generations(self, req: Received) -> Reply:
        body = require_json(req, _IMAGE_FIELDS, ("prompt",))
        model = body.get("model") or "dall-e-2"
        n, _size, quality, fmt = self._image_params(model, body)
        return self._images(model, body["prompt"], n, quality, fmt)

    def _form(self, req: Received, allowed: tuple[str, ...]) -> dict[str, Any]:
        if req.form is None:
            raise Reject(400, "Content-Type must be multipart/form-data.")
        fields = {}
        for name, values in req.fields().items():
            if name not in allowed:
                raise Reject(400, f"Unrecognized request argument supplied: {name}",
                             param=name)
            fields[name] = values[-1]
        if "n" in fields:
            try:
                fields["n"] = int(fields["n"])
            except ValueError:
                raise Reject(400, "Invalid 'n'.", param="n") from None
        return fields

    def edits(self, req: Received) -> Reply:
        fields = self._form(req, ("model", "prompt", "n", "size", "quality", "response_format",
                                  "user", "background", "input_fidelity", "output_format"))
        model = fields.get("model") or "dall-e-2"
        files = req.files()
        images = [f for f in files if f.name in ("image", "image[]")]
        masks = [f for f in files if f.name == "mask"]
        if not images:
            raise Reject(400, "Missing required parameter: 'image'.", param="image")
        if not fields.get("prompt"):
            raise Reject(400, "Missing required parameter: 'prompt'.", param="prompt")
        if model == "dall-e-2" and (len(images) != 1 or not images[0].data.startswith(PNG[:8])):
            raise Reject(400, "dall-e-2 edits take one PNG image.", param="image")
        if len(masks) > 1 or (masks and not masks[0].data.startswith(PNG[:8])):
            raise Reject(400, "Invalid mask: one PNG.", param="mask")
        n, _size, quality, fmt = self._image_params(model, fields)
        return self._images(model, fields["prompt"], n, quality, fmt, len(images))

    def variations(self, req: Received) -> Reply:
        fields = self._form(req, ("model", "n", "size", "response_format", "user"))
        model = fields.get("model") or "dall-e-2"
        if model != "dall-e-2":
            raise Reject(400, "Variations are only supported by dall-e-2.", param="model")
        images = [f for f in req.files() if f.name == "image"]
        if len(images) != 1 or not images[0].data.startswith(PNG[:8]):
            raise Reject(400, "Missing or invalid 'image': one PNG.", param="image")
        n, _size, quality, fmt = self._image_params(model, fields)
        return self._images(model, "", n, quality, fmt)

    # -- audio -------------------------------------------------------------------------------

    def speech(self, req: Received) -> Reply:
        body = require_json(req, _SPEECH_FIELDS, ("model", "input", "voice"))
        fmt = body.get("response_format") or "mp3"
        if fmt not in AUDIO_TYPES:
            raise Reject(400, "Invalid response_format.", param="response_format")
        audio = speech_bytes(body["input"])
        size = -(-len(audio) // SPEECH_CHUNKS)
        pieces = [audio[i:i + size] for i in range(0, len(audio), size)]
        if body.get("stream_format") == "sse":
            events = [b"data: " + json.dumps({"type": "speech.audio.delta",
                                              "audio": base64.b64encode(p).decode()}).encode()
                      + b"\n\n" for p in pieces]
            done = {"type": "speech.audio.done",
                    "usage": {"input_tokens": words(body["input"]), "output_tokens": 10,
                              "total_tokens": words(body["input"]) + 10}}
            events.append(b"data: " + json.dumps(done).encode() + b"\n\n")
            return Reply(200, iter(events), "text/event-stream")
        return Reply(200, iter(pieces), AUDIO_TYPES[fmt])

    def _transcribe(self, req: Received, task: str) -> Reply:
        allowed = ("model", "prompt", "response_format", "temperature")
        if task == "transcribe":
            allowed += ("language", "timestamp_granularities[]", "include[]",
                        "chunking_strategy", "stream")
        fields = self._form(req, allowed)
        files = [f for f in req.files() if f.name == "file"]
        if len(files) != 1:
            raise Reject(400, "Missing required parameter: 'file'.", param="file")
        if not fields.get("model"):
            raise Reject(400, "Missing required parameter: 'model'.", param="model")
        ext = (files[0].filename or "").rsplit(".", 1)[-1].lower()
        if ext not in AUDIO_EXTENSIONS:
            raise Reject(400, f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}",
                         param="file")
        data = files[0].data
        seconds = mp3_duration(data) if ext == "mp3" else wav_duration(data)
        fmt = fields.get("response_format") or "json"
        granularities = req.fields().get("timestamp_granularities[]", [])
        if granularities and fmt != "verbose_json":
            raise Reject(400, "timestamp_granularities requires verbose_json.",
                         param="timestamp_granularities")
        text = TRANSCRIPT
        if fmt == "json":
            out: dict[str, Any] = {"text": text}
            if self.json_usage:
                out["usage"] = {"type": "duration", "seconds": seconds}
            return Reply.json(out)
        if fmt == "verbose_json":
            out = {"task": task, "language": "english", "duration": seconds, "text": text,
                   "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds,
                                 "text": " " + text, "tokens": [1, 2], "temperature": 0.0,
                                 "avg_logprob": -0.2, "compression_ratio": 0.8,
                                 "no_speech_prob": 0.01}]}
            if "word" in granularities:
                out["words"] = [{"word": "Hello", "start": 0.0, "end": 0.5}]
            return Reply.json(out)
        if fmt == "text":
            return Reply(200, (text + "\n").encode(), "text/plain; charset=utf-8")
        if fmt in ("srt", "vtt"):
            sep = "," if fmt == "srt" else "."
            cue = f"{_timestamp(0, sep)} --> {_timestamp(seconds, sep)}\n{text}\n"
            out_text = f"1\n{cue}\n" if fmt == "srt" else f"WEBVTT\n\n{cue}\n"
            return Reply(200, out_text.encode(), "text/plain; charset=utf-8")
        raise Reject(400, "Invalid response_format.", param="response_format")

    def transcriptions(self, req: Received) -> Reply:
        return self._transcribe(req, "transcribe")

    def translations(self, req: Received) -> Reply:
        return self._transcribe(req, "translate")

    # -- vLLM-style rerank -------------------------------------------------------------------

    def rerank(self, req: Received) -> Reply:
        body = require_json(req, ("model", "query", "documents", "top_n", "return_documents"),
                            ("model", "query", "documents"))
        results, tokens = score_documents(body["query"], body["documents"])
        if body.get("top_n"):
            results = results[:body["top_n"]]
        if body.get("return_documents"):
            for r in results:
                r["document"] = {"text": body["documents"][r["index"]]}
        return Reply.json({"id": "rerank-fake", "model": body["model"],
                           "usage": {"total_tokens": tokens}, "results": results})


def score_documents(query: str, documents: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """Results sorted by score (share of query words in the document) and the tokens read
    (words of the query once per document plus words of each document)."""
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise Reject(400, "documents must be a list of strings.", param="documents")
    q = set(query.lower().split())
    results = []
    for i, doc in enumerate(documents):
        d = set(doc.lower().split())
        results.append({"index": i, "relevance_score": round(len(q & d) / max(len(q), 1), 4)})
    results.sort(key=lambda r: (-r["relevance_score"], r["index"]))
    tokens = sum(words(query) + words(doc) for doc in documents)
    return results, tokens
