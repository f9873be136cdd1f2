"""Image fetches for Gemini (runtime/image_fetch.py): internal addresses refused in every IPv6
disguise, one resolution whose checked address is the one connected to (DNS rebinding), and
redirects checked the same way. A real HTTP server on 127.0.0.1 serves the image."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runtime import image_fetch
from runtime.errors import BadRequest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class _Images(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's interface
        _Images.seen.append((self.path, self.headers.get("Host")))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def limits(monkeypatch):
    """Address rules on (the default), 1 MB limit."""
    monkeypatch.setattr(image_fetch, "_limits", lambda: (1 << 20, False))
    _Images.seen.clear()


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "::1", "fe80::1", "fd00::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",          # IPv4-mapped
    "::127.0.0.1", "::10.0.0.1",                             # IPv4-compatible
    "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1",   # NAT64 /96
    "64:ff9b:1::7f00:1", "64:ff9b:1:7f00:0:1::",            # local-use NAT64, both layouts
    "2002:7f00:1::", "2002:a00:1::1",                        # 6to4
    "2001:0:4136:e378:8000:63bf:80ff:fffe",                  # Teredo, client 127.0.0.1
])
def test_internal_addresses_in_every_disguise_are_refused(address):
    assert image_fetch.is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    "::ffff:93.184.215.14", "64:ff9b::93.184.215.14", "2002:5db8:d70e::1",
])
def test_public_addresses_and_their_embeddings_pass(address):
    assert not image_fetch.is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", [
    "[64:ff9b::7f00:1]", "[::ffff:127.0.0.1]", "[::127.0.0.1]", "[2002:7f00:1::]",
    "127.0.0.1", "localhost",
])
def test_urls_on_embedded_internal_addresses_are_refused_before_connecting(
        limits, server, host):
    with pytest.raises(BadRequest, match="internal addresses") as err:
        image_fetch.fetch_image(f"http://{host}:{server}/cat.png", "messages[0].content[1]")
    assert err.value.param == "messages[0].content[1]"
    assert _Images.seen == []


def test_one_resolution_and_the_connection_goes_to_the_checked_address(
        limits, server, monkeypatch):
    """A rebinding resolver: the checked answer first, an internal one on every later call.
    The name does not resolve at all outside the fake, so any lookup urllib3 made itself
    would fail: the fetch succeeds only by connecting to the address that was checked."""
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.255.255.1"]

    monkeypatch.setattr(image_fetch, "_resolve", rebinding)
    # 127.0.0.1 stands for a public address here; everything else keeps the rules
    checked = image_fetch.is_internal
    monkeypatch.setattr(image_fetch, "is_internal",
                        lambda a: str(a) != "127.0.0.1" and checked(a))
    mime, data = image_fetch.fetch_image(f"http://rebind.invalid:{server}/cat.png", "image")
    assert (mime, data) == ("image/png", PNG)
    assert calls == ["rebind.invalid"]
    assert _Images.seen == [("/cat.png", f"rebind.invalid:{server}")]


def test_an_international_name_is_resolved_and_sent_in_its_ascii_form(
        limits, server, monkeypatch):
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(image_fetch, "_resolve", resolver)
    checked = image_fetch.is_internal
    monkeypatch.setattr(image_fetch, "is_internal",
                        lambda a: str(a) != "127.0.0.1" and checked(a))
    url = f"http://user:secret@b\u00fccher-\u4e66.invalid:{server}/c.png"
    assert image_fetch.fetch_image(url, "image")[1] == PNG
    assert calls == ["xn--bcher--3ya3669m.invalid"]
    assert _Images.seen == [("/c.png", f"xn--bcher--3ya3669m.invalid:{server}")]


def test_redirects_are_resolved_and_checked_again(limits, server, monkeypatch):
    answers = {"pics.invalid": ["127.0.0.1"], "inside.invalid": ["10.0.0.7"]}
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[host]

    monkeypatch.setattr(image_fetch, "_resolve", resolver)
    checked = image_fetch.is_internal
    monkeypatch.setattr(image_fetch, "is_internal",
                        lambda a: str(a) != "127.0.0.1" and checked(a))
    # a redirect to another allowed name is followed ...
    url = f"http://pics.invalid:{server}/redirect?to=http://pics.invalid:{server}/b.png"
    assert image_fetch.fetch_image(url, "image")[1] == PNG
    # ... one to a name that resolves inside is refused, and never connected to
    url = f"http://pics.invalid:{server}/redirect?to=http://inside.invalid:{server}/b.png"
    with pytest.raises(BadRequest, match="internal addresses"):
        image_fetch.fetch_image(url, "image")
    assert calls == ["pics.invalid", "pics.invalid", "pics.invalid", "inside.invalid"]
    assert [path for path, _ in _Images.seen] == [
        f"/redirect?to=http://pics.invalid:{server}/b.png", "/b.png",
        f"/redirect?to=http://inside.invalid:{server}/b.png"]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS image server on 127.0.0.1 whose self-signed certificate names
    images.invalid only (made with the openssl command; skipped without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=images.invalid", "-addext",
                    "subjectAltName=DNS:images.invalid", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], str(cert)
    httpd.shutdown()
    httpd.server_close()


def test_https_goes_to_the_checked_address_with_the_name_for_sni_and_certificate(
        limits, tls_server, monkeypatch):
    port, cert = tls_server
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(image_fetch, "_resolve", resolver)
    monkeypatch.setattr(image_fetch.certifi, "where", lambda: cert)
    checked = image_fetch.is_internal
    monkeypatch.setattr(image_fetch, "is_internal",
                        lambda a: str(a) != "127.0.0.1" and checked(a))
    assert image_fetch.fetch_image(f"https://images.invalid:{port}/c.png", "image")[1] == PNG
    assert _Images.seen == [("/c.png", f"images.invalid:{port}")]
    # the same address under a name the certificate does not carry is refused
    with pytest.raises(BadRequest, match="could not be downloaded"):
        image_fetch.fetch_image(f"https://other.invalid:{port}/c.png", "image")
    assert calls == ["images.invalid", "other.invalid"]
