"""HTTPS upstreams: verified against the system's CA store as urllib3 verified them
(SSL_CERT_FILE honoured) or a given context, hostname checked, connections kept alive.
The certificates are made for the test with the openssl command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import UpstreamError
from runtime.upstream import Upstream, read_body
from tests.upstream.raw_server import Peer, RawServer, keep_alive

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA, and a server certificate it signed for 127.0.0.1 only."""
    where = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=TokModel test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=where)
    (where / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n"
                                   "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
             cwd=where)
    return where


@pytest.fixture
def server(certs) -> Iterator[RawServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    server = RawServer(keep_alive(lambda peer, req: peer.answer(b"secure " + req.line)),
                       tls=context)
    yield server
    server.close()


def test_a_given_context_verifies_the_server_and_connections_are_reused(certs, server):
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    upstream = Upstream(2, 5, tls=context)
    try:
        for n in range(3):
            resp = upstream.send("GET", f"{server.origin}/{n}", headers={})
            assert read_body(resp) == f"secure GET /{n} HTTP/1.1".encode()
        assert server.connections == 1
        assert server.requests[0].header("Host") == f"127.0.0.1:{server.port}"
    finally:
        upstream.close()


def test_the_default_verification_uses_the_system_store_and_ssl_cert_file(
        certs, server, monkeypatch):
    # as urllib3 did: the default CA store, which an operator points with SSL_CERT_FILE
    monkeypatch.setenv("SSL_CERT_FILE", str(certs / "ca.pem"))
    upstream = Upstream(2, 5)
    try:
        assert read_body(upstream.send("GET", server.origin + "/", headers={})) == (
            b"secure GET / HTTP/1.1")
    finally:
        upstream.close()


def test_an_unknown_issuer_is_refused_before_anything_is_sent(server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    upstream = Upstream(2, 5)
    try:
        with pytest.raises(UpstreamError) as info:
            upstream.send("GET", server.origin + "/", headers={})
        assert info.value.status == 502
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        assert server.requests == []
    finally:
        upstream.close()


def test_a_name_the_certificate_does_not_cover_is_refused(certs, server):
    upstream = Upstream(2, 5, tls=ssl.create_default_context(cafile=str(certs / "ca.pem")))
    try:
        with pytest.raises(UpstreamError) as info:
            upstream.send("GET", f"https://localhost:{server.port}/", headers={})
        assert info.value.status == 502 and server.requests == []
    finally:
        upstream.close()


def test_an_idle_tls_connection_the_server_closed_is_replaced(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")

    def one_answer_then_close(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.answer()
        peer.sock.settimeout(1)         # (unwrap waits for the client's close_notify)
        peer.sock.unwrap()              # close_notify, then FIN

    server = RawServer(one_answer_then_close, tls=context)
    upstream = Upstream(2, 5, tls=ssl.create_default_context(cafile=str(certs / "ca.pem")))
    try:
        assert read_body(upstream.send("GET", server.origin + "/", headers={})) == b"ok"
        time.sleep(0.1)
        assert read_body(upstream.send("GET", server.origin + "/", headers={})) == b"ok"
        assert server.connections == 2
    finally:
        upstream.close()
        server.close()
