"""Hostile upstreams against the gateway under gunicorn: a 200 answer far larger than the
(lowered) answer cap, and a stream with one event larger than the (lowered) event cap, fail
as 502 in the client's format, are charged the estimate from the bytes received, and do not
grow the worker's memory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import anthropic
import openai
import pytest

from tests.harness import openai_client, usage_rows
from tests.pricing_oracle import chat_cost_nano
from tests.upstream.raw_server import Peer, RawServer

pytestmark = pytest.mark.integration

ANSWER_CAP = 1024 * 1024
EVENT_CAP = 256 * 1024
HUGE = 300 * 1024 * 1024
MODEL = "openai/gpt-4o-mini"
PROMPT = "tell me everything you know"   # 27 characters of prompt text
# The whole request counts (runtime/billing/prompt_estimate.py): the message's keys and role
# ("role", "user", "content") as well as its text.
PROMPT_CHARS = len("role") + len("user") + len("content") + len(PROMPT)
READ = 65536


def estimate(chars: int) -> int:
    return math.ceil(chars / 4)   # the gateway's estimate of tokens from characters


class Hostile:
    """A raw HTTP/1.1 upstream: POST .../chat/completions answers by `mode`:
    'big' a 200 JSON answer declaring and sending HUGE bytes, 'big-chunked' the same without
    a length, 'event' an SSE stream with one normal chunk and then an event of HUGE bytes.
    `sent` counts what it managed to write before the gateway hung up."""

    def __init__(self) -> None:
        self.mode = "big"
        self.sent = 0
        self.server = RawServer(self._answer)
        self.port = self.server.port

    def _answer(self, peer: Peer) -> None:
        if peer.read_request() is None:
            return
        conn = peer.sock
        self.sent = 0
        filler = b"x" * READ
        try:
            if self.mode == "big":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(HUGE).encode() + b"\r\n\r\n"
                             b'{"choices":[{"message":{"content":"')
                while self.sent < HUGE:
                    conn.sendall(filler)
                    self.sent += len(filler)
            elif self.mode == "big-chunked":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n" % len(filler) + filler + b"\r\n"
                while self.sent < HUGE:
                    conn.sendall(chunk)
                    self.sent += len(filler)
            else:
                first = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                         "model": "gpt-4o-mini", "choices": [
                             {"index": 0, "delta": {"role": "assistant",
                                                    "content": "Hello there"},
                              "finish_reason": None}]}
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                event = b"data: " + json.dumps(first).encode() + b"\n\n"
                conn.sendall(b"%x\r\n" % len(event) + event + b"\r\n")
                chunk = b"%x\r\n" % len(filler) + filler + b"\r\n"
                conn.sendall(b"%x\r\n" % 6 + b"data: " + b"\r\n")
                while self.sent < HUGE:
                    conn.sendall(chunk)
                    self.sent += len(filler)
        except OSError:
            pass

    def stop(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def hostile():
    server = Hostile()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(hostile, gateway_factory):
    return gateway_factory("caps", {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{hostile.port}/v1", "OPENAI_API_KEY": "sk-up",
        "TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES": str(ANSWER_CAP),
        "TOKMODEL_MAX_STREAM_EVENT_BYTES": str(EVENT_CAP)})


def worker_rss_kib(gw) -> int:
    """Resident memory of the gateway's (single) worker process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != gw.process.pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError, IndexError):
            continue
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmRSS:")))
    raise AssertionError("no worker process found")


def expected_charge(received: int) -> int:
    return chat_cost_nano(MODEL, estimate(PROMPT_CHARS), estimate(received))


@pytest.mark.parametrize("mode", ["big", "big-chunked"])
def test_oversized_answer_is_a_502_charged_from_the_bytes_received(gw, hostile, mode):
    hostile.mode = mode
    account, secret = gw.account(5_000_000_000)
    before = worker_rss_kib(gw)
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(gw, secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}])
    assert info.value.status_code == 502
    message = info.value.body["message"]
    assert str(ANSWER_CAP) in message and "TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES" in message
    assert hostile.sent < HUGE // 4   # the gateway hung up long before the end
    # the worker held about the cap, not the answer
    assert worker_rss_kib(gw) - before < 64 * 1024
    (row,) = usage_rows(gw, account)
    assert row.status == 502
    assert (row.prompt_tokens, row.completion_tokens) == (estimate(PROMPT_CHARS),
                                                          estimate(ANSWER_CAP + 1))
    assert row.cost_nano == expected_charge(ANSWER_CAP + 1) > 0
    assert gw.balance(account) == 5_000_000_000 - row.cost_nano


def test_oversized_answer_on_messages_is_a_502_in_anthropics_format(gw, hostile):
    hostile.mode = "big"
    account, secret = gw.account(5_000_000_000)
    client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0, timeout=30)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=100,
                               messages=[{"role": "user", "content": PROMPT}])
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"
    assert "TOKMODEL_MAX_UPSTREAM_ANSWER_BYTES" in info.value.body["error"]["message"]
    (row,) = usage_rows(gw, account)
    assert row.cost_nano == expected_charge(ANSWER_CAP + 1)


def test_oversized_stream_event_ends_the_stream_with_an_error_and_a_charge(gw, hostile):
    hostile.mode = "event"
    account, secret = gw.account(5_000_000_000)
    before = worker_rss_kib(gw)
    stream = openai_client(gw, secret).chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": PROMPT}])
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert got == ["Hello there"]
    assert "TOKMODEL_MAX_STREAM_EVENT_BYTES" in str(info.value.message)
    assert worker_rss_kib(gw) - before < 64 * 1024
    assert hostile.sent < HUGE // 4
    (row,) = usage_rows(gw, account)
    assert row.status == 502
    # produced: the text before, and the over-cap event's bytes (the cap, up to one read
    # more: the event is cut at the first read that takes it past the cap)
    produced = row.completion_tokens * 4
    assert estimate(len("Hello there") + EVENT_CAP + 1) <= row.completion_tokens
    assert produced <= len("Hello there") + EVENT_CAP + 2 * READ + 4
    assert row.prompt_tokens == estimate(PROMPT_CHARS)
    assert row.cost_nano == chat_cost_nano(MODEL, row.prompt_tokens,
                                             row.completion_tokens) > 0

