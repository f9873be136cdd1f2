"""Hostile clients against the gateway under gunicorn: credit is checked before a large body
is read, and a body that stalls is cut with a 408 on every route.

Raw sockets send headers (and perhaps part of a body) and then go silent; what the gateway
answers, and when, shows whether it waited for (or read) the body."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.fakes import FakeOpenAI
from tests.harness import openai_client, usage_rows

pytestmark = pytest.mark.integration

IDLE = 1.0   # TOKMODEL_BODY_IDLE_TIMEOUT for this gateway, seconds
BIG = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeOpenAI(api_key="sk-up"))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    env = {"OPENAI_BASE_URL": fakes.base_url, "OPENAI_API_KEY": "sk-up",
           "TOKMODEL_BODY_IDLE_TIMEOUT": str(IDLE)}
    return gateway_factory("guard", env)


class Answer:
    def __init__(self, status: int, head: str, body: bytes, elapsed: float, sent: int,
                 closed: bool) -> None:
        self.status, self.head, self.body = status, head, body
        self.elapsed, self.sent, self.closed = elapsed, sent, closed


def raw_post(gw, path: str, headers: dict[str, str], body: bytes = b"",
             wait: float = 15.0, linger: float = 0.0) -> Answer:
    """POST with the given headers and the start of a body, then silence: the answer, how
    long it took, and (after `linger` seconds more) whether the gateway closed the
    connection."""
    host, port = gw.url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        start = time.monotonic()
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        elapsed = time.monotonic() - start
        head, _, rest = data.partition(b"\r\n\r\n")
        head_text = head.decode("latin-1")
        length = next((int(line.split(":", 1)[1]) for line in head_text.split("\r\n")
                       if line.lower().startswith("content-length:")), 0)
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        closed = False
        if linger:
            sock.settimeout(linger)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
        status = int(head_text.split(" ", 2)[1]) if head_text else 0
        return Answer(status, head_text, rest[:length], elapsed, len(body), closed)


def chat_headers(secret: str, length: int | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)
    return headers


# -- credit before work ------------------------------------------------------------------------

def test_zero_balance_big_body_gets_403_without_the_body_being_read(gw, up):
    account, secret = gw.account(0)
    # headers announcing 12 MB, then silence: only an answer given without the body arrives
    got = raw_post(gw, "/v1/chat/completions", chat_headers(secret, BIG), linger=5)
    assert got.status == 403, got.head
    assert b"Insufficient credits" in got.body
    assert got.elapsed < IDLE  # not a timeout: answered before reading anything
    # the unread body is not waited for indefinitely: the connection closes within the bound
    assert got.closed
    assert up.requests == [] and usage_rows(gw, account) == []


def test_zero_balance_chunked_body_gets_403_without_the_body_being_read(gw, up):
    _, secret = gw.account(0)
    got = raw_post(gw, "/v1/chat/completions", chat_headers(secret, None), b"10\r\n{\"model\":",
                   linger=5)
    assert got.status == 403 and got.elapsed < IDLE and got.closed


def test_zero_balance_big_body_sent_whole_is_refused_in_the_clients_format(gw, up):
    """A client that sends its whole 12 MB body (as SDKs do) gets the usual 403 envelope,
    and the connection is reusable after the drain."""
    _, secret = gw.account(0)
    body = b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"' + \
        b"a" * BIG + b'"}]}'
    with requests.Session() as session:
        start = time.monotonic()
        resp = session.post(f"{gw.base_url}/chat/completions", data=body,
                            headers={"Authorization": f"Bearer {secret}",
                                     "Content-Type": "application/json"}, timeout=30)
        assert time.monotonic() - start < 5
        assert resp.status_code == 403
        assert resp.json()["error"]["message"].startswith("Insufficient credits")
        # Anthropic's format on /v1/messages
        resp = session.post(f"{gw.url}/v1/messages", data=body,
                            headers={"x-api-key": secret, "Content-Type": "application/json"},
                            timeout=30)
        assert resp.status_code == 403
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["message"].startswith("Insufficient credits")


def test_a_refused_body_that_arrives_in_time_is_drained_and_the_connection_kept(gw, up):
    """The answer goes out first; a body the client then sends whole is read and thrown
    away, and the keep-alive connection serves the next request."""
    _, secret = gw.account(0)
    body = b"{" + b" " * 300_000 + b"}"
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 403"), first[:100]
        sock.sendall(body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        second = b""
        while b"HTTP/1.1 200" not in second:
            more = sock.recv(65536)
            assert more, "the connection was closed instead of serving the next request"
            second += more


def test_zero_balance_multipart_upload_is_refused_before_it_is_read(gw, up):
    _, secret = gw.account(0)
    headers = {"Authorization": f"Bearer {secret}",
               "Content-Type": "multipart/form-data; boundary=xyz",
               "Content-Length": str(BIG)}
    got = raw_post(gw, "/v1/audio/transcriptions", headers, b"--xyz\r\n", linger=5)
    assert got.status == 403 and got.elapsed < IDLE and got.closed


def test_small_bodies_of_a_zero_balance_account_are_refused_by_the_hold(gw, up):
    account, secret = gw.account(0)
    client = openai_client(gw, secret)
    with pytest.raises(Exception) as info:
        client.chat.completions.create(model="openai/gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hi"}])
    assert getattr(info.value, "status_code", None) == 403
    assert up.requests == []


def test_an_account_with_credit_sends_big_bodies(gw, up):
    account, secret = gw.account(50_000_000_000)
    text = "word " * 200_000   # 1 MB
    reply = openai_client(gw, secret).chat.completions.create(
        model="openai/gpt-4o-mini", max_tokens=5,
        messages=[{"role": "user", "content": text}])
    assert reply.choices[0].message.content.startswith("echo: word")
    assert len(up.last.raw) > 1_000_000


def test_unknown_key_with_a_big_body_is_refused_unread(gw, up):
    got = raw_post(gw, "/v1/chat/completions", chat_headers("tm-not-a-key", BIG), linger=5)
    assert got.status == 401 and got.elapsed < IDLE and got.closed


# -- idle timeout --------------------------------------------------------------------------

def test_stalled_json_body_gets_408(gw, up):
    account, secret = gw.account(5_000_000_000)
    got = raw_post(gw, "/v1/chat/completions", chat_headers(secret, 500), b'{"model": "op',
                   linger=2)
    assert got.status == 408, got.head
    assert IDLE * 0.9 <= got.elapsed < IDLE + 5
    assert "TOKMODEL_BODY_IDLE_TIMEOUT" in got.body.decode()
    assert got.closed
    assert up.requests == [] and usage_rows(gw, account) == []


def test_stalled_big_json_body_gets_408(gw, up):
    _, secret = gw.account(5_000_000_000)
    got = raw_post(gw, "/v1/chat/completions", chat_headers(secret, BIG), b"{" + b" " * 70000,
                   linger=2)
    assert got.status == 408 and got.closed


def test_stalled_chunked_body_gets_408(gw, up):
    _, secret = gw.account(5_000_000_000)
    got = raw_post(gw, "/v1/chat/completions", chat_headers(secret, None), b"5\r\n{\"mod",
                   linger=2)
    assert got.status == 408 and got.closed


def test_stalled_anthropic_body_gets_408_in_anthropics_format(gw, up):
    _, secret = gw.account(5_000_000_000)
    got = raw_post(gw, "/v1/messages", {"x-api-key": secret, "Content-Length": "300",
                                        "Content-Type": "application/json"}, b'{"mo')
    assert got.status == 408 and b'"type": "error"' in got.body


def test_stalled_multipart_body_gets_408(gw, up):
    _, secret = gw.account(5_000_000_000)
    headers = {"Authorization": f"Bearer {secret}",
               "Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": "5000"}
    got = raw_post(gw, "/v1/audio/transcriptions", headers,
                   b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nope', linger=2)
    assert got.status == 408 and got.closed


def test_stalled_console_login_gets_408(gw, up):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "200"}
    got = raw_post(gw, "/console/login", headers, b"key=tm-", linger=2)
    assert got.status == 408 and got.closed


def test_a_slow_but_steady_body_is_not_cut(gw, up):
    """The timeout is between bytes, not for the whole body."""
    _, secret = gw.account(5_000_000_000)
    body = b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"slow"}]}'
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock.sendall(head)
        pieces = [body[i:i + 20] for i in range(0, len(body), 20)]
        for piece in pieces:   # about 2 idle timeouts in all, each gap well under one
            time.sleep(IDLE * 2 / len(pieces))
            sock.sendall(piece)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
