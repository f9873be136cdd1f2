"""Audio end to end with the official openai SDK: speech streamed to a file as the provider
sends it (and its SSE variant), transcriptions and translations in json, text, srt and
verbose_json, charged per character and per audio second; oversized uploads are a 413,
uploads sent with chunked transfer coding (no Content-Length) are read whole, as the openai
npm package sends a `fs.createReadStream` upload (tests/integration/test_node_sdks.py)."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal

import pytest
import requests
from urllib3 import encode_multipart_formdata

from tests.fakes.media_stack import media_stack
from tests.fakes.media_upstream import SPEECH_CHUNKS, TRANSCRIPT, make_wav, speech_bytes
from tests.harness import openai_client
from tests.pricing_oracle import per_munit, price, usd

pytestmark = pytest.mark.integration

START = 5_000_000_000
LIMIT = 2 * 1024 * 1024
TEXT = "Welcome to TokModel, your unified gateway."


def seconds_cost(model: str, seconds: str) -> int:
    return usd(Decimal(seconds) * price(model, "per_audio_second"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("audio"), {"TOKMODEL_MAX_BODY_BYTES": str(LIMIT)})
    yield s
    s.stop()


@pytest.fixture
def account(stack):
    stack.reset()
    stack.openai.chunk_delay = 0.0
    stack.openai.json_usage = True
    account_id, secret = stack.gateway.account(START)
    return account_id, secret, openai_client(stack.gateway, secret)


def test_speech_streams_to_file_and_charges_per_character(stack, account, tmp_path):
    account_id, _secret, client = account
    stack.openai.chunk_delay = 0.15
    target = tmp_path / "speech.opus"
    with client.audio.speech.with_streaming_response.create(
            model="openai/tts-1-hd", voice="nova", input=TEXT, response_format="opus") as resp:
        assert resp.headers["content-type"] == "audio/ogg"
        chunks = resp.iter_bytes()
        first = next(chunks)
        # the first bytes reach the client while the provider is still sending
        assert stack.openai.chunks_sent < SPEECH_CHUNKS
        with target.open("wb") as fh:
            fh.write(first)
            for chunk in chunks:
                fh.write(chunk)
    assert target.read_bytes() == speech_bytes(TEXT)
    assert stack.openai.last.body == {"model": "tts-1-hd", "voice": "nova", "input": TEXT,
                                      "response_format": "opus"}
    cost = per_munit(len(TEXT) * price("openai/tts-1-hd", "per_mchar"))
    assert stack.gateway.balance(account_id) == START - cost


def test_speech_stream_to_file_helper(stack, account, tmp_path):
    _id, _secret, client = account
    target = tmp_path / "speech.mp3"
    with client.audio.speech.with_streaming_response.create(
            model="openai/tts-1", voice="alloy", input="short one") as resp:
        assert resp.headers["content-type"] == "audio/mpeg"
        resp.stream_to_file(target)
    assert target.read_bytes() == speech_bytes("short one")


def test_speech_sse_passthrough(stack, account):
    account_id, secret, _client = account
    resp = requests.post(stack.gateway.base_url + "/audio/speech", stream=True,
                         headers={"Authorization": f"Bearer {secret}"},
                         json={"model": "openai/tts-1", "voice": "alloy", "input": TEXT,
                               "stream_format": "sse"})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: ")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events
                     if e["type"] == "speech.audio.delta")
    assert audio == speech_bytes(TEXT) and events[-1]["type"] == "speech.audio.done"
    assert stack.openai.last.body["stream_format"] == "sse"
    cost = per_munit(len(TEXT) * price("openai/tts-1", "per_mchar"))
    assert stack.gateway.balance(account_id) == START - cost


def test_speech_client_gone_is_settled_once(stack, account):
    account_id, secret, _client = account
    stack.openai.chunk_delay = 0.2
    resp = requests.post(stack.gateway.base_url + "/audio/speech", stream=True,
                         headers={"Authorization": f"Bearer {secret}"},
                         json={"model": "openai/tts-1", "voice": "alloy", "input": TEXT})
    next(resp.iter_content(1024))
    resp.close()
    cost = per_munit(len(TEXT) * price("openai/tts-1", "per_mchar"))
    deadline = time.monotonic() + 5
    while stack.gateway.balance(account_id) != START - cost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.gateway.balance(account_id) == START - cost


@pytest.mark.parametrize("kind", ["transcriptions", "translations"])
def test_transcribe_json_text_verbose(stack, account, kind):
    account_id, _secret, client = account
    api = getattr(client.audio, kind)
    wav = make_wav(3.5)
    out = api.create(model="openai/whisper-1", file=("clip.wav", wav, "audio/wav"),
                     prompt="greeting", temperature=0.2)
    sent = stack.openai.last
    assert sent.path == f"/v1/audio/{kind}"
    assert sent.fields() == {"model": ["whisper-1"], "prompt": ["greeting"],
                             "temperature": ["0.2"]}
    assert [(f.name, f.filename, f.data) for f in sent.files()] == [("file", "clip.wav", wav)]
    assert out.text == TRANSCRIPT
    cost = seconds_cost("openai/whisper-1", "3.5")
    usage = out.usage if isinstance(out.usage, dict) else out.usage.model_dump()
    assert usage["cost"] == cost / 1_000_000_000
    assert stack.gateway.balance(account_id) == START - cost

    text = api.create(model="openai/whisper-1", file=("clip.wav", wav), response_format="text")
    assert text.strip() == TRANSCRIPT  # plain text; charged from the WAV header
    assert stack.gateway.balance(account_id) == START - 2 * cost

    verbose = api.create(model="openai/whisper-1", file=("clip.wav", wav),
                         response_format="verbose_json")
    assert verbose.duration == 3.5 and verbose.segments[0].end == 3.5
    assert stack.gateway.balance(account_id) == START - 3 * cost


def test_transcription_arrays_srt_and_usage_less_json(stack, account):
    account_id, secret, client = account
    wav = make_wav(2.25)
    client.audio.transcriptions.create(
        model="openai/whisper-1", file=("clip.wav", wav), response_format="verbose_json",
        timestamp_granularities=["word", "segment"], include=["logprobs"], language="en")
    fields = stack.openai.last.fields()
    assert fields["timestamp_granularities[]"] == ["word", "segment"]
    assert fields["include[]"] == ["logprobs"] and fields["language"] == ["en"]
    srt = requests.post(stack.gateway.base_url + "/audio/transcriptions",
                        headers={"Authorization": f"Bearer {secret}"},
                        files={"file": ("c.wav", wav), "model": (None, "openai/whisper-1"),
                               "response_format": (None, "srt")})
    assert srt.headers["Content-Type"].startswith("text/plain")
    assert "00:00:02,250" in srt.text
    stack.openai.json_usage = False
    plain = requests.post(stack.gateway.base_url + "/audio/transcriptions",
                          headers={"Authorization": f"Bearer {secret}"},
                          files={"file": ("c.wav", wav), "model": (None, "openai/whisper-1")})
    assert plain.json()["usage"]["seconds"] == 2.25
    cost = seconds_cost("openai/whisper-1", "2.25")
    assert stack.gateway.balance(account_id) == START - 3 * cost


def test_audio_refusals(stack, account):
    account_id, secret, _client = account
    url = stack.gateway.base_url
    auth = {"Authorization": f"Bearer {secret}"}
    missing = requests.post(f"{url}/audio/transcriptions", headers=auth,
                            files={"prompt": (None, "x")})
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == (
        "Missing required form part(s): 'file' (file), 'model'.")
    big = requests.post(f"{url}/audio/transcriptions", headers=auth,
                        files={"file": ("big.wav", b"\0" * (LIMIT + 1)),
                               "model": (None, "openai/whisper-1")})
    assert big.status_code == 413
    wrong = requests.post(f"{url}/audio/speech", headers=auth,
                          json={"model": "openai/whisper-1", "input": "x", "voice": "alloy"})
    assert wrong.status_code == 400
    assert "audio.transcriptions, audio.translations" in wrong.json()["error"]["message"]
    bad_fmt = requests.post(f"{url}/audio/speech", headers=auth,
                            json={"model": "openai/tts-1", "input": "x", "voice": "alloy",
                                  "response_format": "ogg"})
    assert bad_fmt.status_code == 400 and bad_fmt.json()["error"]["param"] == "response_format"
    assert stack.openai.requests == []
    assert stack.gateway.balance(account_id) == START


def chunked(data: bytes, size: int = 8192):
    """A generator body: `requests` sends it with Transfer-Encoding: chunked, no length."""
    for at in range(0, len(data), size):
        yield data[at:at + size]


def test_chunked_upload_is_read_whole_and_charged(stack, account):
    account_id, secret, _client = account
    wav = make_wav(4.0)  # about 128 kB: many HTTP chunks
    body, content_type = encode_multipart_formdata(
        {"model": "openai/whisper-1", "file": ("clip.wav", wav, "audio/wav")})
    resp = requests.post(stack.gateway.base_url + "/audio/transcriptions", data=chunked(body),
                         headers={"Authorization": f"Bearer {secret}",
                                  "Content-Type": content_type}, timeout=10)
    assert resp.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in resp.request.headers
    assert resp.status_code == 200, resp.text
    assert resp.json()["text"] == TRANSCRIPT
    assert [(f.name, f.filename, f.data) for f in stack.openai.last.files()] == [
        ("file", "clip.wav", wav)]
    assert stack.gateway.balance(account_id) == START - seconds_cost("openai/whisper-1", "4.0")


def test_chunked_upload_over_the_limit_is_413_and_free(stack, account):
    account_id, secret, _client = account
    body, content_type = encode_multipart_formdata(
        {"model": "openai/whisper-1", "file": ("big.wav", b"\0" * (LIMIT + 1), "audio/wav")})
    resp = requests.post(stack.gateway.base_url + "/audio/transcriptions",
                         data=chunked(body, 65536), timeout=10,
                         headers={"Authorization": f"Bearer {secret}",
                                  "Content-Type": content_type})
    assert resp.status_code == 413
    assert resp.json()["error"]["message"] == (
        f"Request body exceeds the limit of {LIMIT} bytes.")
    assert stack.openai.requests == []
    assert stack.gateway.balance(account_id) == START
