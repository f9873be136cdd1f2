"""Answers on one keep-alive connection are framed exactly, whatever their shape: gunicorn's
head and the first body bytes leave in one write (runtime/coalesced_response.py), and an
answer without a body (HEAD, 401 to a preflight) still sends its head and nothing more."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from tests.harness import start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("framing"), {})
    yield gw
    gw.stop()


def read_answer(sock: socket.socket, buf: bytearray, has_body: bool) -> tuple[str, bytes]:
    """One answer off the connection: its status line and body (by Content-Length)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed before a whole head arrived"
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    del buf[:end]
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
