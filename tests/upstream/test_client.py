"""The upstream HTTP/1.1 client against real servers on 127.0.0.1: what goes on the wire,
keep-alive reuse and when a connection is not reused, framings, decoding, cuts, stalls,
refusals, timeouts, and streaming without buffering."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import pytest

from runtime.errors import UpstreamError
from runtime.upstream import AnswerTooLarge, Timeout, Upstream, broken_off, read_body
from tests.upstream.raw_server import Peer, RawServer, Request, keep_alive


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[Peer], None], **kwargs) -> RawServer:
        server = RawServer(handler, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    client = Upstream(connect_timeout=2, read_timeout=5)
    yield client
    client.close()


def get(upstream: Upstream, url: str, **kwargs) -> bytes:
    return read_body(upstream.send("GET", url, headers={}, **kwargs))


def idle(upstream: Upstream, server: RawServer) -> int:
    pool = upstream._pools.get(server.origin)
    return len(pool._idle) if pool is not None else 0


# -- the request on the wire -------------------------------------------------------------


def test_the_request_carries_host_length_and_the_callers_headers_unchanged(serve, upstream):
    server = serve(keep_alive())
    resp = upstream.send("POST", server.origin + "/v1/chat?x=1", body=b'{"a":1}',
                         headers={"Content-Type": "application/json", "X-Odd-Case": "v"},
                         params={"q": "a b"})
    assert read_body(resp) == b"ok"
    request = server.requests[0]
    assert request.line == b"POST /v1/chat?x=1&q=a+b HTTP/1.1"
    lines = request.head.split(b"\r\n")[1:]
    # what urllib3 sent (its own User-Agent replaced by ours), then the caller's
    assert lines[:3] == [f"Host: 127.0.0.1:{server.port}".encode(),
                         b"Accept-Encoding: identity", b"Content-Length: 7"]
    assert lines[3].startswith(b"User-Agent: tokmodel")
    assert lines[4:] == [b"Content-Type: application/json", b"X-Odd-Case: v"]
    assert request.body == b'{"a":1}'


def test_the_callers_host_length_and_encoding_win(serve, upstream):
    server = serve(keep_alive())
    read_body(upstream.send("POST", server.origin + "/", body=b"xy", headers={
        "host": "example.test", "content-length": "2", "Accept-Encoding": "gzip",
        "User-Agent": "mine"}))
    head = server.requests[0].head.split(b"\r\n")
    assert head[1:] == [b"host: example.test", b"content-length: 2",
                        b"Accept-Encoding: gzip", b"User-Agent: mine"]


def test_an_iterable_body_goes_after_the_head_with_its_length_or_chunked(serve, upstream):
    server = serve(keep_alive())

    class Sized:
        def __len__(self) -> int:
            return 6

        def __iter__(self) -> Iterator[bytes]:
            yield from (b"ab", b"", b"cd", b"ef")

    read_body(upstream.send("POST", server.origin + "/", headers={}, body=Sized()))
    read_body(upstream.send("POST", server.origin + "/", headers={},
                            body=(c for c in (b"gh", b"ij"))))
    read_body(upstream.send("POST", server.origin + "/", headers={}))
    sized, unsized, empty = server.requests
    assert (sized.header("Content-Length"), sized.body) == ("6", b"abcdef")
    assert (unsized.header("Transfer-Encoding"), unsized.body) == ("chunked", b"ghij")
    assert empty.header("Content-Length") == "0"    # a POST without a body, as urllib3 did
    assert server.connections == 1


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(serve, upstream):
    server = serve(keep_alive())
    with pytest.raises(ValueError):
        upstream.send("GET", server.origin + "/", headers={"X-A": "v\r\nX-Injected: 1"})
    with pytest.raises(ValueError):
        upstream.send("GET", server.origin + "/a b", headers={})
    assert server.requests == []


# -- keep-alive ----------------------------------------------------------------------------


def test_sequential_calls_share_one_connection(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.answer(req.line)))
    bodies = [get(upstream, f"{server.origin}/{n}") for n in range(5)]
    assert bodies == [f"GET /{n} HTTP/1.1".encode() for n in range(5)]
    assert server.connections == 1


def test_an_idle_connection_the_server_closed_is_not_reused(serve, upstream):
    def one_answer_then_close(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.answer()
        peer.close()

    server = serve(one_answer_then_close)
    assert get(upstream, server.origin + "/") == b"ok"
    time.sleep(0.1)     # the server's FIN arrives
    assert get(upstream, server.origin + "/") == b"ok"
    assert server.connections == 2 and len(server.requests) == 2


def answer_one_drop_next(peer: Peer) -> None:
    """Answers the first request, then reads the next and closes without an answer."""
    if peer.read_request() is not None:
        peer.answer()
    peer.read_request()
    peer.close()


def test_a_request_the_server_drops_unanswered_on_a_reused_connection_is_sent_again(
        serve, upstream):
    # the race an idle check cannot see: the server closes as the request arrives
    server = serve(answer_one_drop_next)
    assert get(upstream, server.origin + "/") == b"ok"
    assert get(upstream, server.origin + "/") == b"ok"
    assert server.connections == 2 and len(server.requests) == 3


def test_a_request_is_never_sent_again_once_answer_bytes_arrived(serve, upstream):
    def answer_one_cut_next(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.answer()
        if peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-")
        peer.close()

    server = serve(answer_one_cut_next)
    assert get(upstream, server.origin + "/") == b"ok"
    with pytest.raises(UpstreamError) as info:
        get(upstream, server.origin + "/")
    assert info.value.status == 502
    assert server.connections == 1 and len(server.requests) == 2


def test_a_fresh_connection_closed_without_an_answer_is_a_502_not_retried(serve, upstream):
    def drop(peer: Peer) -> None:
        peer.read_request()
        peer.close()

    server = serve(drop)
    with pytest.raises(UpstreamError) as info:
        get(upstream, server.origin + "/")
    assert info.value.status == 502 and "could not be reached" in info.value.message
    assert server.connections == 1


def test_an_iterator_body_is_not_sent_again(serve, upstream):
    server = serve(answer_one_drop_next)
    get(upstream, server.origin + "/")
    with pytest.raises(UpstreamError):
        read_body(upstream.send("POST", server.origin + "/", headers={},
                                body=iter([b"once"])))
    assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nok",      # the body ends with the connection
])
def test_an_answer_that_ends_the_connection_is_read_and_the_connection_not_kept(
        serve, upstream, answer):
    def once(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(answer)
        peer.close()

    server = serve(once)
    assert get(upstream, server.origin + "/") == b"ok"
    assert idle(upstream, server) == 0
    assert get(upstream, server.origin + "/") == b"ok"
    assert server.connections == 2


def test_http_1_0_with_keep_alive_is_reused(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")))
    assert [get(upstream, server.origin + "/") for _ in range(2)] == [b"ok", b"ok"]
    assert server.connections == 1


def test_an_answer_not_read_to_its_end_closes_its_connection(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.answer(b"x" * 200_000)))
    resp = upstream.send("GET", server.origin + "/", headers={})
    next(resp.iter_content())
    resp.close()
    assert idle(upstream, server) == 0
    assert get(upstream, server.origin + "/") == b"x" * 200_000
    assert server.connections == 2 and idle(upstream, server) == 1


def test_the_pool_keeps_at_most_its_size_and_never_blocks(serve):
    bodies = threading.Event()

    def head_then_body(peer: Peer, request: Request) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        bodies.wait(5)
        peer.send(b"ok")

    upstream = Upstream(2, 5, pool_size=1)
    server = serve(keep_alive(head_then_body))
    try:
        # three answers open at once: three connections, none waits for another
        open_ = [upstream.send("GET", server.origin + "/", headers={}) for _ in range(3)]
        assert server.connections == 3
        bodies.set()
        assert [read_body(resp) for resp in open_] == [b"ok"] * 3
        assert idle(upstream, server) == 1
    finally:
        upstream.close()


def test_bytes_after_the_answer_make_the_connection_unusable(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")))
    assert get(upstream, server.origin + "/") == b"ok"
    assert get(upstream, server.origin + "/") == b"ok"
    assert server.connections == 2


# -- framings and codings -----------------------------------------------------------------


def test_a_chunked_answer_is_read_whole_and_the_connection_kept(serve, upstream):
    def chunked(peer: Peer, request: Request) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"hello ", b"chunked ", b"world"):
            peer.send(b"%x\r\n%b\r\n" % (len(piece), piece))
            time.sleep(0.01)
        peer.send(b"0\r\nX-Trailer: t\r\n\r\n")

    server = serve(keep_alive(chunked))
    assert get(upstream, server.origin + "/") == b"hello chunked world"
    assert get(upstream, server.origin + "/") == b"hello chunked world"
    assert server.connections == 1


def test_headers_are_case_insensitive_and_repeated_ones_joined(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 3 \r\nX-Multi: a\r\nx-multi: b\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")))
    resp = upstream.send("GET", server.origin + "/", headers={})
    assert resp.status_code == 429
    assert resp.headers.get("retry-after") == "3" and resp.headers["RETRY-AFTER"] == "3"
    assert resp.headers.get("X-Multi") == "a, b"
    assert "content-type" in resp.headers and resp.headers.get("Missing") is None
    assert read_body(resp) == b"{}"


def test_informational_answers_before_the_real_one_are_skipped(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")))
    resp = upstream.send("GET", server.origin + "/", headers={})
    assert resp.status_code == 201 and "link" not in resp.headers
    assert read_body(resp) == b"done"
    assert get(upstream, server.origin + "/") == b"done"
    assert server.connections == 1


def test_no_content_and_head_answers_have_no_body(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(
        b"HTTP/1.1 204 No Content\r\n\r\n" if req.line.startswith(b"GET")
        else b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")))
    assert get(upstream, server.origin + "/") == b""
    assert read_body(upstream.send("HEAD", server.origin + "/", headers={})) == b""
    assert get(upstream, server.origin + "/") == b""


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", lambda data: gzip.compress(data[:5000]) + gzip.compress(data[5000:])),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),   # raw deflate, as some send it
])
def test_gzip_and_deflate_answers_are_decoded(serve, upstream, coding, encode):
    plain = b"".join(b"line %d of the answer\n" % n for n in range(2000))
    server = serve(keep_alive(lambda peer, req: peer.answer(
        encode(plain), headers={"Content-Encoding": coding})))
    assert get(upstream, server.origin + "/") == plain
    resp = upstream.send("GET", server.origin + "/", headers={})
    assert b"".join(resp.iter_content()) == plain
    assert server.connections == 1


def test_an_unknown_coding_is_passed_through_and_a_bad_gzip_is_a_502(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.answer(
        b"not gzip", headers={"Content-Encoding": "br" if req.line.endswith(
            b"/br HTTP/1.1") else "gzip"})))
    assert get(upstream, server.origin + "/br") == b"not gzip"
    with pytest.raises(UpstreamError) as info:
        get(upstream, server.origin + "/gz")
    assert info.value.status == 502


def test_over_the_cap_reading_stops_and_the_connection_is_closed(serve):
    upstream = Upstream(2, 5, max_answer_bytes=1000)
    server = serve(keep_alive(lambda peer, req: peer.answer(b"z" * 300_000)))
    try:
        with pytest.raises(AnswerTooLarge) as info:
            get(upstream, server.origin + "/")
        assert info.value.received == 1001 and info.value.status == 502
        assert idle(upstream, server) == 0
    finally:
        upstream.close()


# -- cuts, stalls, refusals, timeouts -------------------------------------------------------


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 50,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n",
])
def test_an_answer_cut_mid_body_is_broken_off(serve, upstream, answer):
    def cut(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(answer)
            time.sleep(0.05)
        peer.close()

    server = serve(cut)
    resp = upstream.send("GET", server.origin + "/", headers={})
    assert resp.status_code == 200
    with pytest.raises(UpstreamError) as info:
        read_body(resp)
    assert info.value.status == 502 and "broke off" in info.value.message
    assert idle(upstream, server) == 0


def test_an_answer_that_is_not_http_is_a_502(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(b"SSH-2.0-OpenSSH\r\n\r\n")))
    with pytest.raises(UpstreamError) as info:
        get(upstream, server.origin + "/")
    assert info.value.status == 502


def test_a_stalled_server_is_a_504_under_the_read_timeout(serve, upstream):
    release = threading.Event()
    server = serve(lambda peer: (peer.read_request(), release.wait(10)))
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        upstream.send("GET", server.origin + "/", headers={},
                      timeout=Timeout(connect=2, read=0.3))
    release.set()
    assert info.value.status == 504 and info.value.type == "upstream_timeout"
    assert 0.25 < time.monotonic() - started < 3


def test_a_body_stalled_past_the_idle_timeout_is_a_504(serve, upstream):
    release = threading.Event()

    def stall(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            release.wait(10)

    server = serve(stall)
    resp = upstream.send("GET", server.origin + "/", headers={})
    resp.set_read_timeout(0.2)
    with pytest.raises(UpstreamError) as info:
        read_body(resp)
    release.set()
    assert info.value.status == 504 and "finish" in info.value.message


def test_a_refused_connection_is_a_502():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    upstream = Upstream(2, 5)
    with pytest.raises(UpstreamError) as info:
        upstream.send("GET", f"http://127.0.0.1:{port}/", headers={})
    assert info.value.status == 502 and "could not be reached" in info.value.message


def test_a_connect_that_does_not_complete_is_a_504_under_the_connect_timeout():
    # a listener that never accepts, its backlog full: further SYNs go unanswered
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    upstream = Upstream(connect_timeout=0.3, read_timeout=30)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamError) as info:
            upstream.send("GET", f"http://127.0.0.1:{port}/", headers={})
        assert info.value.status == 504 and info.value.type == "upstream_timeout"
        assert time.monotonic() - started < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_broken_off_tells_a_timeout_from_a_cut():
    assert broken_off(TimeoutError("timed out")).status == 504
    assert broken_off(ConnectionResetError("reset")).status == 502


# -- streaming -----------------------------------------------------------------------------


def test_iter_content_gives_each_event_as_it_is_sent(serve, upstream):
    received = [threading.Event() for _ in range(3)]

    def stream(peer: Peer) -> None:
        if peer.read_request() is None:
            return
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for n, seen in enumerate(received):
            event = b"data: {\"n\": %d}\n\n" % n
            peer.send(b"%x\r\n%b\r\n" % (len(event), event))
            # the next event only once the client has this one: a client that waited to
            # fill a buffer would time out here
            assert seen.wait(5)
        peer.send(b"0\r\n\r\n")

    server = serve(stream)
    resp = upstream.send("GET", server.origin + "/", headers={},
                         timeout=Timeout(connect=2, read=3))
    got = []
    for n, chunk in enumerate(resp.iter_content()):
        got.append(chunk)
        assert chunk == b"data: {\"n\": %d}\n\n" % n
        received[n].set()
    assert len(got) == 3


def test_iter_content_honours_chunk_size(serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.answer(b"y" * 10_000)))
    resp = upstream.send("GET", server.origin + "/", headers={})
    pieces = list(resp.iter_content(4096))
    assert b"".join(pieces) == b"y" * 10_000 and max(map(len, pieces)) <= 4096


def test_an_idle_connection_is_checked_with_one_peek(serve, upstream):
    stray = threading.Event()
    close = threading.Event()

    def script(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.answer()
        if stray.wait(5):
            peer.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")   # unasked: not reusable
        close.wait(5)
        peer.close()

    server = serve(script)
    get(upstream, server.origin + "/")
    conn = upstream._pools[server.origin]._idle[0]
    assert not conn.dropped() and not conn.dropped()     # peeking consumes nothing
    stray.set()
    time.sleep(0.1)
    assert conn.dropped()
    close.set()
    time.sleep(0.1)
    assert conn.dropped()


def test_transfer_encoding_wins_over_a_content_length_and_the_connection_is_dropped(
        serve, upstream):
    server = serve(keep_alive(lambda peer, req: peer.send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n")))
    assert get(upstream, server.origin + "/") == b"hello"
    assert get(upstream, server.origin + "/") == b"hello"
    assert server.connections == 2


def test_a_bytearray_body_is_sent_as_bytes(serve, upstream):
    server = serve(keep_alive())
    read_body(upstream.send("PUT", server.origin + "/", headers={}, body=bytearray(b"raw")))
    assert server.requests[0].body == b"raw"
    assert server.requests[0].header("Content-Length") == "3"


@pytest.mark.parametrize("size", [200_000, 3_000_000])
def test_large_bodies_arrive_whole(serve, upstream, size):
    server = serve(keep_alive(lambda peer, req: peer.answer(b"%d" % len(req.body))))
    body = bytes(range(256)) * (size // 256)
    resp = upstream.send("POST", server.origin + "/", headers={}, body=body)
    assert read_body(resp) == b"%d" % len(body)
    assert server.requests[0].body == body


def test_an_answer_sent_before_the_request_was_read_whole_is_returned(serve, upstream):
    def refuse_upload(peer: Peer) -> None:
        peer.sock.recv(1000)
        peer.send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
        time.sleep(0.2)
        peer.sock.close()           # with the upload unread: a reset

    server = serve(refuse_upload)
    resp = upstream.send("POST", server.origin + "/", headers={}, body=b"x" * 20_000_000)
    assert resp.status_code == 413 and read_body(resp) == b"big"
    assert idle(upstream, server) == 0
