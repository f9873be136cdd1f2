"""An upstream answer holding a lone surrogate (a model's character split in two) reaches the
client as the JSON escape it arrived as, whole or streamed, in every client format: never a
500 after the charge (as it was for /v1/messages and for chat on Claude models)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from falcon import testing

from generated import registry
from runtime.app import create_app
from runtime.catalogue import load_catalogue
from runtime.settings import Settings
from runtime.store import open_store
from runtime.upstream import Upstream

TEXT = "half \ud83d"
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
           "content": [{"type": "text", "text": TEXT}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}}


def _events() -> bytes:
    events = [("message_start", {"type": "message_start", "message": {
                   **MESSAGE, "content": [], "stop_reason": None,
                   "usage": {"input_tokens": 3, "output_tokens": 1}}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": TEXT}}),
              ("content_block_stop", {"type": "content_block_stop", "index": 0}),
              ("message_delta", {"type": "message_delta", "delta": {
                   "stop_reason": "end_turn", "stop_sequence": None},
                   "usage": {"output_tokens": 2}}),
              ("message_stop", {"type": "message_stop"})]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    for name, data in events)


class _Claude(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's interface
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stream = body.get("stream") is True
        data = _events() if stream else json.dumps(MESSAGE).encode()   # escapes: \ud83d
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Claude)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('out') / 'db'}")
    store = open_store(settings.database_url)
    catalogue = load_catalogue(env={
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "ANTHROPIC_API_KEY": "ant-upstream-key"})
    store.create_account("acme", 10**9)
    _, secret = store.create_key("acme", "t")
    yield testing.TestClient(create_app(settings, registry, store, Upstream(), catalogue)), secret
    store.close()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions", "/v1/responses"])
@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogate_in_an_answer_is_passed_on_escaped(app, path, stream):
    client, secret = app
    body = {"model": "anthropic/claude-haiku-4-5", "max_tokens": 16, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}
    if path == "/v1/responses":
        body = {"model": "anthropic/claude-haiku-4-5", "stream": stream, "input": "hi"}
    result = client.simulate_post(path, json=body,
                                  headers={"Authorization": f"Bearer {secret}"})
    assert result.status_code == 200, result.text
    result.content.decode("utf-8")                  # valid UTF-8 throughout
    assert b"half \\ud83d" in result.content
    assert b"event: error" not in result.content
    assert b'data: {"error"' not in result.content
