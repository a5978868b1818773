"""capgate.net end to end on loopback: fetch (HTTP and HTTPS with a local CA), pinned connect,
one audit line per decision, timeouts, Unix-socket decisions."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import capgate
from capgate import net
from tests._net_helpers import LoopbackHTTPServer, audit_lines, make_net_gate


@pytest.fixture
def server() -> Iterator[LoopbackHTTPServer]:
    s = LoopbackHTTPServer()
    yield s
    s.close()


def test_get_post_head_and_headers(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    def latin(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = "café".encode("latin-1")
        handler.send_response(201)
        handler.send_header("Content-Type", "text/plain; charset=latin-1")
        handler.send_header("X-Multi", "a")
        handler.send_header("X-Multi", "b")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server.routes["/latin"] = latin
    audit = io.StringIO()
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{server.port}"]}, audit=audit)
    with gate:
        r = net.fetch(f"{server.base}/latin")
        assert (r.status, r.text(), r.headers["x-multi"], r.headers.get_all("X-MULTI")) == (
            201, "café", "a, b", ("a", "b"))
        r = net.fetch(f"{server.base}/post", method="POST", data="x=1", headers={"Content-Type": "text/plain"})
        assert r.text() == "hello POST /post"
        assert net.fetch(f"{server.base}/h", method="HEAD").body == b""
    assert server.requests[1]["body"] == b"x=1"
    decisions = [line for line in audit_lines(audit) if line.get("event") == "decision"]
    assert len(decisions) == 3 and all(d["decision"] == "allow" and d["via"] == "net.fetch" for d in decisions)


def test_denied_fetch_logs_exactly_once(tmp_path: Path) -> None:
    audit = io.StringIO()
    with make_net_gate(tmp_path, {"enabled": True}, audit=audit), pytest.raises(capgate.PermissionDenied) as info:
        net.fetch("https://api.example.com/")
    assert info.value.rule == "network.allowedDomains"
    lines = audit_lines(audit)
    assert len(lines) == 1 and lines[0]["decision"] == "deny" and lines[0]["target"] == "api.example.com:443"


def test_connect_is_pinned_and_checked(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"svc.test:{server.port}"],
                                    "allowedAddresses": [f"127.0.0.1:{server.port}"]}, resolver=resolver)
    with gate:
        endpoint = net.check(f"http://SVC.test.:{server.port}/")
        assert (endpoint.host, endpoint.port, endpoint.addresses) == ("svc.test", server.port, ("127.0.0.1",))
        sock = net.connect("svc.test", server.port, timeout=5)
    with sock:
        sock.sendall(b"GET /raw HTTP/1.0\r\nHost: svc.test\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.endswith(b"hello GET /raw")
    assert calls == ["svc.test", "svc.test"]


def test_read_timeout_is_bounded(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    try:
        with make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{port}"]}):
            with pytest.raises(TimeoutError):
                net.fetch(f"http://127.0.0.1:{port}/", timeout=0.3)
    finally:
        silent.close()


def test_fetch_needs_a_verifying_context(tmp_path: Path) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": ["127.0.0.1:1"]}), pytest.raises(ValueError):
        net.fetch("https://127.0.0.1:1/", ssl_context=ctx)


# -- HTTPS with a throwaway CA ------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def _make_ca_and_cert(directory: Path, name: str) -> tuple[Path, Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "srv.key", directory / "srv.csr", directory / "srv.crt"
    ext = directory / "ext.cnf"
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
        "-days", "2", "-subj", "/CN=capgate test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ext.write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca_crt, crt, key


class TLSServer:
    def __init__(self, cert: Path, key: Path) -> None:
        self.sni: list[str | None] = []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = lambda sock, name, c: self.sni.append(name)  # type: ignore[assignment,func-returns-value]
        self.inner = LoopbackHTTPServer()
        self.inner.httpd.socket = ctx.wrap_socket(self.inner.httpd.socket, server_side=True)
        self.port = self.inner.port

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    return _make_ca_and_cert(tmp_path_factory.mktemp("pki"), "pinned.test")


@needs_openssl
def test_https_over_pinned_socket_with_sni_and_verification(pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca, cert, key = pki
    tls = TLSServer(cert, key)
    try:
        gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"pinned.test:{tls.port}"],
                                        "allowedAddresses": [f"127.0.0.1:{tls.port}"]},
                             resolver=lambda host, port: ["127.0.0.1"])
        with gate:
            r = net.fetch(f"https://pinned.test:{tls.port}/secure", cafile=str(ca))
            assert r.text() == "hello GET /secure"
            assert tls.sni == ["pinned.test"]
            # Untrusted CA: verification fails (no silent downgrade).
            with pytest.raises(ssl.SSLCertVerificationError):
                net.fetch(f"https://pinned.test:{tls.port}/again")
    finally:
        tls.close()


@needs_openssl
def test_https_certificate_must_match_the_checked_name(pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca, cert, key = pki
    tls = TLSServer(cert, key)
    try:
        gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"other.test:{tls.port}"],
                                        "allowedAddresses": [f"127.0.0.1:{tls.port}"]},
                             resolver=lambda host, port: ["127.0.0.1"])
        with gate, pytest.raises(ssl.SSLCertVerificationError):
            net.fetch(f"https://other.test:{tls.port}/", cafile=str(ca))
        assert tls.inner.requests == []
    finally:
        tls.close()


# -- Unix sockets ----------------------------------------------------------------------------


def test_unix_sockets_denied_unless_listed(tmp_path: Path) -> None:
    listed = tmp_path / "listed.sock"
    other = tmp_path / "other.sock"
    link = tmp_path / "link.sock"
    for path in (listed, other):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    os.symlink(other, link)
    gate = make_net_gate(tmp_path, {"allowedUnixSockets": [str(listed)]})
    rules = gate.network_rules
    assert rules.decide_unix(str(listed)).allowed
    assert not rules.decide_unix(str(other)).allowed
    assert not rules.decide_unix(str(link)).allowed  # a link to an unlisted socket
    assert not rules.decide_unix("\x00abstract").allowed
    assert not rules.decide_unix("@abstract").allowed
    assert not rules.decide_unix("/var/run/docker.sock").allowed
    assert rules.decide_unix("/var/run/docker.sock").rule == "network.allowedUnixSockets"


def test_threads_inherit_the_gate(server: LoopbackHTTPServer, tmp_path: Path) -> None:
    import contextvars

    results: list[int] = []
    with make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{server.port}"]}):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(lambda: results.append(net.fetch(f"{server.base}/t").status),))
        t.start()
        t.join(10)
    assert results == [200]
