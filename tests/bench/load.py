"""A cheap HTTP/1.1 load generator: raw keep-alive sockets, prebuilt request bytes, minimal
response parsing (status line, headers up to CRLFCRLF, then a Content-Length or chunked body).

Contract
--------
- `build_request(host, port, path, body, headers)` -> the request bytes, built once.
- `HttpConn(addr, socket_factory)` sends one request and reads one response:
  `roundtrip(request) -> Response(status, body)`; a response with `Connection: close` closes
  the socket (the next roundtrip reconnects). Raises OSError/ValueError on a broken answer.
- `sequential(addr, request, n, warmup)` runs requests one after another on one connection
  with blocking stdlib sockets (no event-loop cost on the clock); `concurrent(addr, request,
  concurrency, duration)` runs `concurrency` gevent greenlets, each on its own keep-alive
  connection, until `duration` elapses (with `stream`, a streamed answer counts only with
  its `data: [DONE]`); `streams(addr, request, n, ...)` opens `n` streaming
  requests concurrently and reads each to its end; `timed_mix(addr, mix, duration)` runs the
  requests of `mix` in turn, one at a time, on `conns` blocking keep-alive connections used in
  turn, and returns a `latency.Sample` per request (its start, duration and kind).
- A response counts as OK only with status 200 (and, for streams, `data: [DONE]` in the body);
  everything else is counted by kind in `errors`. Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import socket as std_socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tests.bench.latency import Sample

IO_TIMEOUT = 30.0
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
DONE_MARK = b"data: [DONE]"


def build_request(host: str, port: int, path: str, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             "Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def build_get(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


class Response(NamedTuple):
    status: int
    body: bytes


class HttpConn:
    """One keep-alive client connection (not shared between greenlets)."""

    __slots__ = ("addr", "factory", "sock", "buf")

    def __init__(self, addr: tuple[str, int],
                 factory: Callable[..., Any] = std_socket.create_connection) -> None:
        self.addr = addr
        self.factory = factory
        self.sock: Any = None
        self.buf = b""

    def _connect(self) -> None:
        self.sock = self.factory(self.addr, timeout=IO_TIMEOUT)
        self.sock.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("line too long")
            self._fill()
        out, self.buf = self.buf[:i], self.buf[i + 2:]
        return out

    def send(self, request: bytes) -> None:
        if self.sock is None:
            self._connect()
        self.sock.sendall(request)

    def read_head(self) -> tuple[int, bytes]:
        """Status and lower-cased header block (starting with CRLF) of the next response."""
        while (i := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("header block too long")
            self._fill()
        head, self.buf = self.buf[:i], self.buf[i + 4:]
        if not head.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP response: {head[:40]!r}")
        status = int(head[9:12])
        j = head.find(b"\r\n")
        return status, (head[j:].lower() + b"\r\n" if j >= 0 else b"\r\n")

    def iter_body(self, headers: bytes):
        """The body's pieces as they arrive (chunk by chunk when chunked)."""
        j = headers.find(b"\r\ncontent-length:")
        if j >= 0:
            end = headers.find(b"\r\n", j + 17)
            n = int(headers[j + 17:end])
            if n > MAX_BODY:
                raise ValueError("body too large")
            if n:
                yield self._take(n)
        elif b"\r\ntransfer-encoding: chunked\r\n" in headers:
            total = 0
            while True:
                size = int(self._line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._line():  # trailers, then the empty line
                        pass
                    return
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                data = self._take(size + 2)
                yield data[:-2]
        else:  # read to close
            total = 0
            while True:
                if self.buf:
                    data, self.buf = self.buf, b""
                else:
                    data = self.sock.recv(65536)
                    if not data:
                        break
                total += len(data)
                if total > MAX_BODY:
                    raise ValueError("body too large")
                yield data
            self.close()

    def finish(self, headers: bytes) -> None:
        if b"\r\nconnection: close\r\n" in headers:
            self.close()

    def roundtrip(self, request: bytes) -> Response:
        self.send(request)
        status, headers = self.read_head()
        body = b"".join(self.iter_body(headers))
        self.finish(headers)
        return Response(status, body)


@dataclass
class Result:
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    samples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if len(self.samples) < 5 and detail:
            self.samples.append(f"{kind}: {detail[:300]}")

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _judge(result: Result, resp: Response, stream: bool = False) -> None:
    if resp.status == 200 and (not stream or DONE_MARK in resp.body[-64:]):
        result.ok += 1
    elif resp.status == 200:
        result.error("stream ended without [DONE]", resp.body[-200:].decode(errors="replace"))
    else:
        result.error(f"HTTP {resp.status}", resp.body.decode(errors="replace"))


def sequential(addr: tuple[str, int], request: bytes, n: int, warmup: int,
               max_seconds: float = 60.0) -> Result:
    """n timed requests (after `warmup` untimed ones) on one blocking keep-alive connection."""
    result = Result()
    conn = HttpConn(addr)
    clock = time.perf_counter
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(warmup):
            conn.roundtrip(request)
        started = clock()
        for _ in range(n):
            if time.monotonic() > deadline:
                result.error("time budget exceeded")
                break
            t0 = clock()
            try:
                resp = conn.roundtrip(request)
            except (OSError, ValueError) as exc:
                result.error(type(exc).__name__, str(exc))
                conn.close()
                continue
            result.latencies.append(clock() - t0)
            _judge(result, resp)
        result.elapsed = clock() - started
    finally:
        conn.close()
    return result


def concurrent(addr: tuple[str, int], request: bytes, concurrency: int, duration: float,
               stream: bool = False) -> Result:
    """`concurrency` greenlets hammering one keep-alive connection each for `duration` s
    (`stream`: each answer must end with `data: [DONE]`)."""
    import gevent
    from gevent import socket as gsocket

    result = Result()
    clock = time.perf_counter
    stop_at = clock() + duration

    def worker() -> None:
        conn = HttpConn(addr, gsocket.create_connection)
        latencies = result.latencies
        try:
            while (t0 := clock()) < stop_at:
                try:
                    resp = conn.roundtrip(request)
                except (OSError, ValueError) as exc:
                    result.error(type(exc).__name__, str(exc))
                    conn.close()
                    gevent.sleep(0.01)
                    continue
                latencies.append(clock() - t0)
                _judge(result, resp, stream)
        finally:
            conn.close()

    started = clock()
    greenlets = [gevent.spawn(worker) for _ in range(concurrency)]
    gevent.joinall(greenlets, timeout=duration + IO_TIMEOUT + 5)
    gevent.killall([g for g in greenlets if not g.dead], timeout=5)
    result.elapsed = clock() - started
    return result


@dataclass
class StreamResult(Result):
    events: int = 0
    first_byte: list[float] = field(default_factory=list)
    open_now: int = 0
    open_peak: int = 0


def streams(addr: tuple[str, int], request: bytes, n: int, ramp_seconds: float,
            max_seconds: float, result: StreamResult | None = None) -> StreamResult:
    """Open `n` streaming requests (spread over `ramp_seconds`) and read each to its end;
    a stream is OK when its status is 200 and its body has `data: [DONE]`. Greenlets still
    running after `max_seconds` are killed and counted as unfinished. Pass `result` to watch
    `open_now` from another greenlet while the streams run."""
    import gevent
    from gevent import socket as gsocket

    result = StreamResult() if result is None else result
    clock = time.perf_counter

    def one() -> None:
        conn = HttpConn(addr, gsocket.create_connection)
        t0 = clock()
        try:
            conn.send(request)
            status, headers = conn.read_head()
            result.open_now += 1
            result.open_peak = max(result.open_peak, result.open_now)
            seen_first = False
            tail = b""
            body: list[bytes] = []
            try:
                for piece in conn.iter_body(headers):
                    if not seen_first:
                        result.first_byte.append(clock() - t0)
                        seen_first = True
                    result.events += piece.count(b"data: ")
                    tail = (tail + piece)[-64:]
                    if status != 200 and len(body) < 8:
                        body.append(piece)
            finally:
                result.open_now -= 1
            if status != 200:
                result.error(f"HTTP {status}", b"".join(body).decode(errors="replace"))
            elif DONE_MARK not in tail:
                result.error("stream ended without [DONE]", tail.decode(errors="replace"))
            else:
                result.ok += 1
                result.latencies.append(clock() - t0)
        except (OSError, ValueError) as exc:
            result.error(type(exc).__name__, str(exc))
        finally:
            conn.close()

    started = clock()
    greenlets = []
    batch = max(1, n // 20)
    for i in range(0, n, batch):
        greenlets += [gevent.spawn(one) for _ in range(min(batch, n - i))]
        gevent.sleep(ramp_seconds / 20)
    gevent.joinall(greenlets, timeout=max(0.0, max_seconds - (clock() - started)))
    alive = [g for g in greenlets if not g.dead]
    if alive:
        result.errors["unfinished (killed at the time limit)"] += len(alive)
        gevent.killall(alive, timeout=5)
    result.elapsed = clock() - started
    return result


class Timed(NamedTuple):
    kind: str
    request: bytes
    stream: bool   # OK only with `data: [DONE]` in the body


def timed_mix(addr: tuple[str, int], mix: list[Timed], duration: float, conns: int = 2,
              result: Result | None = None, between: Callable[[], None] | None = None,
              pool: list[HttpConn] | None = None) -> list[Sample]:
    """The requests of `mix` in turn for `duration` s at concurrency 1 on `conns` blocking
    keep-alive connections (used in turn: with several workers, the kernel may hand them to
    different ones), or on the caller's `pool` of connections, which stay open. Failures are
    counted in `result` too; `between()` runs after every request, outside the timings."""
    result = Result() if result is None else result
    clock = time.perf_counter
    owned = pool is None
    pool = [HttpConn(addr) for _ in range(max(1, conns))] if pool is None else pool
    samples: list[Sample] = []
    began = clock()
    stop_at = began + duration
    i = 0
    try:
        while clock() < stop_at:
            item, conn = mix[i % len(mix)], pool[i % len(pool)]
            i += 1
            t0 = clock()
            try:
                resp = conn.roundtrip(item.request)
            except (OSError, ValueError) as exc:
                result.error(type(exc).__name__, str(exc))
                conn.close()
                samples.append(Sample(t0 - began, clock() - t0, item.kind, False))
                continue
            seconds = clock() - t0
            ok = resp.status == 200 and (not item.stream or DONE_MARK in resp.body[-64:])
            if ok:
                result.ok += 1
                result.latencies.append(seconds)
            else:
                result.error(f"{item.kind}: HTTP {resp.status}",
                             resp.body[-300:].decode(errors="replace"))
            samples.append(Sample(t0 - began, seconds, item.kind, ok))
            if between is not None:
                between()
    finally:
        if owned:
            for conn in pool:
                conn.close()
    result.elapsed = clock() - began
    return samples
