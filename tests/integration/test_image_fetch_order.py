"""Image URLs for a provider that needs image bytes (Gemini) are downloaded only after the
request's credits are held, and at most TOKMODEL_MAX_IMAGES_PER_REQUEST of them: an image
server that records every request shows what the gateway fetched."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest

from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import anthropic_client, charged, openai_client, usage_rows

pytestmark = pytest.mark.integration

KEY = "gemini-upstream-key"
MODEL = "google/gemini-2.0-flash"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
                       "WjR9awAAAABJRU5ErkJggg==")


class _Host(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args) -> None:
        return


@pytest.fixture(scope="module")
def image_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def seen(image_host):
    _Host.seen.clear()
    return _Host.seen


@pytest.fixture(scope="module")
def fakes(start_fakes):
    return start_fakes(FakeGemini(api_key=KEY, models=("gemini-2.0-flash",)))


@pytest.fixture(scope="module")
def gw(fakes, gateway_factory):
    return gateway_factory("gw-image-order", {
        "GOOGLE_BASE_URL": fakes.base_url, "GOOGLE_API_KEY": KEY,
        "TOKMODEL_IMAGE_FETCH_ALLOW_PRIVATE": "1"})


def images(host: str, n: int) -> list[dict]:
    return [{"type": "text", "text": "look"}] + [
        {"type": "image_url", "image_url": {"url": f"{host}/{i}.png"}} for i in range(n)]


def test_seventeen_image_urls_are_a_400_before_any_download(gw, up, image_host, seen):
    account, secret = gw.account(5_000_000_000)
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(gw, secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": images(image_host, 17)}])
    message = info.value.body["message"]
    assert "at most 16" in message and "TOKMODEL_MAX_IMAGES_PER_REQUEST" in message
    assert seen == [] and up.requests == []
    assert charged(gw, account) == 0


def test_sixteen_image_urls_are_downloaded_after_the_hold(gw, up, image_host, seen):
    account, secret = gw.account(5_000_000_000)
    reply = openai_client(gw, secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": images(image_host, 16)}])
    assert sorted(seen) == sorted(f"/{i}.png" for i in range(16))
    parts = up.last.body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png",
                                       "data": base64.b64encode(PNG).decode()}}
    assert len(parts) == 17 and reply.choices[0].message.content.startswith("echo: look")
    assert charged(gw, account) > 0


def test_zero_balance_account_causes_no_image_download(gw, up, image_host, seen):
    account, secret = gw.account(0)
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(gw, secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": images(image_host, 3)}])
    assert seen == [] and up.requests == []
    assert usage_rows(gw, account) == []


def test_balance_below_the_hold_causes_no_image_download(gw, up, image_host, seen):
    """A positive balance that cannot cover the request's hold: still nothing downloaded."""
    account, secret = gw.account(1)
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic_client(gw, secret).messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": f"{image_host}/a.png"}}]}])
    assert seen == [] and up.requests == []
