"""A fast fake OpenAI upstream for the benchmark (not the strict test fake: that one is a
thread per connection and validates everything, which would make it the bottleneck).

Contract
--------
`make_app(chunks, delay)` is a WSGI app:
- `POST /v1/chat/completions` with a JSON object body that has a non-empty `messages` list:
  200 with a canned chat completion (with `usage`), or, with `"stream": true`, an SSE body of
  `data: {...}\\n\\n` events: a role chunk at once, then `chunks` content chunks each
  `delay` seconds apart (gevent.sleep), a finish chunk, a usage chunk with `choices: []` when
  `stream_options.include_usage` is true, and `data: [DONE]`. A bad body is a 400.
- `GET /v1/models`: a one-model list. Anything else: 404. Every answer is an OpenAI shape.
No authentication is checked; nothing is logged per request.

`python -m tests.bench.upstream --port P [--workers N] [--chunks C] [--delay S]` serves it
with gevent.pywsgi on 127.0.0.1: the listening socket is bound once and N processes (forked
after binding) accept on it. Each process exits when its parent dies (PR_SET_PDEATHSIG) and
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MODEL = "gpt-4o-mini"
CREATED = 1_700_000_000
REPLY = "Hello! How can I help you today?"
USAGE = {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18,
         "prompt_tokens_details": {"cached_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0}}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def completion_bytes() -> bytes:
    return _dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": REPLY, "refusal": None}}],
        "usage": USAGE, "system_fingerprint": "fp_bench", "service_tier": "default",
    })


def _chunk(delta: dict[str, Any], finish: str | None = None, choices: bool = True,
           usage: dict[str, Any] | None = None) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
        "model": MODEL, "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices else [],
        "usage": usage,
    }
    return b"data: " + _dumps(obj) + b"\n\n"


ROLE_CHUNK = _chunk({"role": "assistant", "content": ""})
TEXT_CHUNK = _chunk({"content": "tok "})
FINISH_CHUNK = _chunk({}, finish="stop")
USAGE_CHUNK = _chunk({}, choices=False, usage=USAGE)
DONE = b"data: [DONE]\n\n"
MODELS = _dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]})


def _error(start_response: StartResponse, status: str, message: str) -> list[bytes]:
    body = _dumps({"error": {"message": message, "type": "invalid_request_error",
                             "param": None, "code": None}})
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


DIRECTIVE = "bench:"


def directives(body: dict[str, Any]) -> dict[str, str]:
    """`bench:chunks=20;delay=0` in the last message's text -> {"chunks": "20", "delay": "0"}."""
    last = body["messages"][-1]
    content = last.get("content") if isinstance(last, dict) else None
    if not isinstance(content, str) or not content.startswith(DIRECTIVE):
        return {}
    found = {}
    for item in content[len(DIRECTIVE):].split(";"):
        name, _, value = item.partition("=")
        if name.strip():
            found[name.strip()] = value.strip()
    return found


def make_app(chunks: int = 15, delay: float = 1.0) -> Callable[..., Iterable[bytes]]:
    import gevent

    completion = completion_bytes()
    json_headers = [("Content-Type", "application/json"),
                    ("Content-Length", str(len(completion)))]
    models_headers = [("Content-Type", "application/json"),
                      ("Content-Length", str(len(MODELS)))]
    sse_headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]

    def stream(include_usage: bool, chunks: int, delay: float) -> Iterator[bytes]:
        yield ROLE_CHUNK
        for _ in range(chunks):
            if delay > 0:
                gevent.sleep(delay)
            yield TEXT_CHUNK
        yield FINISH_CHUNK + (USAGE_CHUNK if include_usage else b"") + DONE

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path == "/v1/chat/completions" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length > 0 else b""
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(start_response, "400 Bad Request", "body is not JSON")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
                    or not body["messages"]:
                return _error(start_response, "400 Bad Request", "messages is required")
            steer = directives(body)
            try:
                n = int(steer.get("chunks", chunks))
                pause = float(steer.get("delay", delay))
                fail = int(steer["fail"]) if "fail" in steer else 0
            except ValueError:
                return _error(start_response, "400 Bad Request", "bad bench: directive")
            if fail:
                return _error(start_response, f"{fail} Bench Failure", "failure on demand")
            if body.get("stream") is True:
                options = body.get("stream_options")
                include = isinstance(options, dict) and options.get("include_usage") is True
                start_response("200 OK", sse_headers)
                return stream(include, n, pause)
            start_response("200 OK", json_headers)
            return [completion]
        if path == "/v1/models" and method == "GET":
            start_response("200 OK", models_headers)
            return [MODELS]
        return _error(start_response, "404 Not Found", f"Invalid URL ({method} {path})")

    return app


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent goes away (no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(port: int, workers: int, chunks: int, delay: float) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    children: list[int] = []
    for _ in range(max(1, workers) - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            die_with_parent()
            break
        children.append(pid)

    from gevent import pywsgi
    from gevent import socket as gsocket

    # the listener was bound before the fork; hand its descriptor to gevent's socket type
    fd = listener.detach()
    listener = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=fd)

    def stop(signum: int, _frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    class Server(pywsgi.WSGIServer):
        def handle(self, sock: Any, address: Any) -> None:
            # pywsgi may write headers and body separately: without NODELAY the second
            # write waits for the client's delayed ACK (~40 ms)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    server = Server(listener, make_app(chunks, delay), log=None, error_log=sys.stderr)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=15)
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args(argv)
    die_with_parent()
    started = time.monotonic()
    try:
        serve(args.port, args.workers, args.chunks, args.delay)
    except KeyboardInterrupt:
        pass
    print(f"upstream stopped after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
