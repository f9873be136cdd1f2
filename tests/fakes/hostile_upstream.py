"""A hostile fake upstream: OpenAI (chat, Responses, embeddings) and Anthropic (Messages) on
one server, whose failures say too much.

Contract
--------
``HostileUpstream`` is an HTTP/1.1 server on 127.0.0.1 (daemon threads). ``base_url`` is the
OpenAI base (``.../v1``), ``origin`` the Anthropic one. Every POST is recorded in ``requests``
(path, headers, JSON body). ``mode`` decides the answer:

- ``"error"``: ``status`` (default 400) with the provider's own error envelope whose message
  is ``leak`` (by default the ``LEAK`` text below plus the configured key the request carried,
  read from its auth header, as an upstream quoting the key it received would);
- ``"stream_error"``: a 200 event stream in the path's format that produces one word, then
  the provider's error event carrying the same text (Responses: an ``error`` event, or with
  ``failed=True`` a ``response.failed`` whose ``error.message`` carries it);
- ``"ok"`` with ``failed=True`` on Responses: a whole 200 Response whose status is
  ``failed`` and whose ``error.message`` carries it;
- ``"stall"``: a 200 event stream that produces one word, then sends nothing for ``stall``
  seconds before ending the body;
- ``"ok"``: a minimal well-formed answer (not streamed).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

ORG = "org-Vx3kQ9aLm2Pz7RtY8wBn4CdE"
PROJECT = "proj_Ab12Cd34Ef56Gh78Ij90"
KEY_FRAGMENT = "sk-ab***************yz"
EMAIL = "billing-owner@operator-corp.example.com"
LEAK = (f"You exceeded your current quota for organization {ORG} in project {PROJECT} "
        f"(key {KEY_FRAGMENT}); the account owner {EMAIL} was notified")
LEAKED = (ORG, PROJECT, "sk-ab", EMAIL, "operator-corp")


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data) + "\n\n").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's interface
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        fake.requests.append((self.path, dict(self.headers), body))
        key = (self.headers.get("x-api-key")
               or self.headers.get("Authorization", "").removeprefix("Bearer "))
        leak = fake.leak if fake.leak is not None else f"{LEAK}; key received: {key}"
        anthropic = self.path.endswith("/messages")
        if fake.mode == "error":
            if anthropic:
                payload = {"type": "error",
                           "error": {"type": "invalid_request_error", "message": leak}}
            else:
                payload = {"error": {"message": leak, "type": "invalid_request_error",
                                     "param": None, "code": "quota"}}
            return self._whole(fake.status, json.dumps(payload).encode())
        if fake.mode == "ok" or not body.get("stream"):
            answer = self._ok(body)
            if fake.failed and self.path.endswith("/responses"):
                answer = {"id": "resp_1", "object": "response", "status": "failed",
                          "model": body.get("model"), "output": [],
                          "error": {"code": "server_error", "message": leak},
                          "usage": {"input_tokens": 5, "output_tokens": 0,
                                    "total_tokens": 5}}
            return self._whole(200, json.dumps(answer).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        model = body.get("model", "m")
        if anthropic:
            start = [_sse({"type": "message_start", "message": {
                        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                        "content": [], "stop_reason": None, "stop_sequence": None,
                        "usage": {"input_tokens": 5, "output_tokens": 1}}}, "message_start"),
                     _sse({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}},
                          "content_block_start"),
                     _sse({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": "Hello "}},
                          "content_block_delta")]
            failure = _sse({"type": "error", "error": {"type": "api_error", "message": leak}},
                           "error")
        elif self.path.endswith("/responses"):
            response = {"id": "resp_1", "object": "response", "status": "in_progress",
                        "model": model, "output": [], "usage": None, "error": None}
            start = [_sse({"type": "response.created", "response": response},
                          "response.created"),
                     _sse({"type": "response.output_text.delta", "item_id": "msg_1",
                           "output_index": 0, "content_index": 0, "delta": "Hello "},
                          "response.output_text.delta")]
            if fake.failed:
                failed = dict(response, status="failed",
                              error={"code": "server_error", "message": leak},
                              usage={"input_tokens": 5, "output_tokens": 1,
                                     "total_tokens": 6})
                failure = _sse({"type": "response.failed", "response": failed},
                               "response.failed")
            else:
                failure = _sse({"type": "error", "code": "server_error", "message": leak,
                                "param": None}, "error")
        else:
            start = [_sse({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                           "model": model, "choices": [{"index": 0, "delta": {
                               "role": "assistant", "content": "Hello "},
                               "finish_reason": None}]})]
            failure = _sse({"error": {"message": leak, "type": "server_error"}})
        try:
            for piece in start:
                self._chunk(piece)
            if fake.mode == "stall":
                if fake.stall_mid_chunk:    # a chunk's size line and half its data, then
                    self.wfile.write(f"{len(failure):x}\r\n".encode()  # nothing
                                     + failure[:len(failure) // 2])
                    self.wfile.flush()
                time.sleep(fake.stall)
            else:
                self._chunk(failure)
            self._chunk(b"")
        except OSError:
            pass   # the gateway gave up on the stall: that is the point
        self.close_connection = True

    def _ok(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.path.endswith("/embeddings"):
            return {"object": "list", "model": body.get("model"),
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}}
        return {"id": "c1", "object": "chat.completion", "created": 1,
                "model": body.get("model"), "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}

    def _whole(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: HostileUpstream


class HostileUpstream:
    def __init__(self) -> None:
        self.mode = "error"
        self.status = 400
        self.leak: str | None = None
        self.failed = False
        self.stall = 5.0
        self.stall_mid_chunk = False
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self._server: _Server | None = None

    def start(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        self.mode, self.status, self.leak, self.failed = "error", 400, None, False
        self.stall_mid_chunk = False
        self.requests.clear()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"
