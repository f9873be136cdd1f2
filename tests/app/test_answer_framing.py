"""Answers on one keep-alive connection are framed exactly, whatever their shape: gunicorn's
head and the first body bytes leave in one write (runtime/coalesced_response.py), a stream's
chunks are framed as gunicorn frames them, and an answer without a body (HEAD, 401 to a
preflight) still sends its head and nothing more."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.fakes import FakeOpenAI
from tests.harness import start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    fake = FakeOpenAI(api_key="sk-up").start()
    gw = start_gateway(tmp_path_factory.mktemp("framing"),
                       {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-up"})
    yield gw
    gw.stop()
    fake.stop()


def read_head(sock: socket.socket, buf: bytearray) -> str:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed before a whole head arrived"
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    del buf[:end]
    return head


def read_answer(sock: socket.socket, buf: bytearray, has_body: bool) -> tuple[str, bytes]:
    """One answer off the connection: its status line and body (by Content-Length)."""
    head = read_head(sock, buf)
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if not has_body:
        return head.split("\r\n")[0], b""
    while len(buf) < length:
        data = sock.recv(65536)
        assert data, "connection closed before the whole body arrived"
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return head.split("\r\n")[0], body


def test_pipelined_answers_with_and_without_bodies_stay_framed(gateway) -> None:
    url = urlsplit(gateway.url)
    requests = [("GET", "/readyz", True), ("HEAD", "/readyz", False),
                ("GET", "/v1/models", True), ("HEAD", "/v1/models", False),
                ("GET", "/readyz", True)]
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.settimeout(10)
        for method, path, _ in requests:
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
        buf = bytearray()
        answers = [read_answer(sock, buf, has_body) for _, _, has_body in requests]
        assert not buf, f"bytes beyond the last answer: {bytes(buf)!r}"
    statuses = [status.split(" ")[1] for status, _ in answers]
    assert statuses == ["200", "405", "401", "405", "200"]
    assert b"ready" in answers[0][1] and answers[0][1] == answers[4][1]
    assert b"Invalid or missing API key" in answers[2][1]
    assert answers[1][1] == answers[3][1] == b""


def read_chunked(sock: socket.socket, buf: bytearray) -> list[bytes]:
    """A chunked body off the connection, chunk by chunk, up to its last (empty) chunk."""
    chunks = []
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line_end = buf.index(b"\r\n")
        size = int(bytes(buf[:line_end]), 16)
        while len(buf) < line_end + 2 + size + 2:
            data = sock.recv(65536)
            assert data, "connection closed inside a chunk"
            buf += data
        chunk = bytes(buf[line_end + 2:line_end + 2 + size])
        assert buf[line_end + 2 + size:line_end + 4 + size] == b"\r\n"
        del buf[:line_end + 4 + size]
        if not size:
            return chunks
        chunks.append(chunk)


def test_a_stream_and_the_answer_after_it_stay_framed(gateway) -> None:
    _, secret = gateway.account()
    url = urlsplit(gateway.url)
    messages = [{"role": "user", "content": "one two three"}]
    bodies = [json.dumps({"model": "openai/gpt-4o-mini", "messages": messages,
                          "stream": stream}).encode() for stream in (True, False)]
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.settimeout(10)
        buf = bytearray()
        for body in bodies:
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
                         f"Authorization: Bearer {secret}\r\nContent-Type: application/json"
                         f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            if body is bodies[0]:
                head = read_head(sock, buf)
                assert head.startswith("HTTP/1.1 200") and "chunked" in head.lower()
                events = b"".join(read_chunked(sock, buf)).decode()
                assert events.rstrip().endswith("data: [DONE]")
                deltas = [json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                          for e in events.split("\n\n")
                          if e.startswith("data: {") and json.loads(e[6:])["choices"]]
                assert "".join(deltas) == "echo: one two three"
            else:
                status, answer = read_answer(sock, buf, True)
                assert status.startswith("HTTP/1.1 200")
                reply = json.loads(answer)["choices"][0]["message"]["content"]
                assert reply == "echo: one two three"
        assert not buf
