"""The egress proxy end to end: urllib and curl through it (allow and deny), CONNECT tunnels
(TLS included), strict parsing, and the bounds that keep one bad client from stalling others."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from capgate.proxy import EgressProxy
from tests._net_helpers import LoopbackHTTPServer, audit_lines, make_net_gate

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl not installed")


@pytest.fixture
def allowed() -> Iterator[LoopbackHTTPServer]:
    s = LoopbackHTTPServer()
    yield s
    s.close()


@pytest.fixture
def unlisted() -> Iterator[LoopbackHTTPServer]:
    s = LoopbackHTTPServer()
    yield s
    s.close()


@pytest.fixture
def audit() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def proxy(allowed: LoopbackHTTPServer, audit: io.StringIO, tmp_path: Path) -> Iterator[EgressProxy]:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"],
                                    "allowedDomains": ["rebind.test:443"]},
                         resolver=lambda host, port: ["127.0.0.1"], audit=audit)
    with EgressProxy(gate, max_connections=4, header_timeout=1.0, idle_timeout=5.0) as p:
        yield p


def opener(proxy: EgressProxy) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url, "https": proxy.url}))


def raw(proxy: EgressProxy, data: bytes, *, timeout: float = 5.0) -> bytes:
    assert isinstance(proxy.address, tuple)
    with socket.create_connection(proxy.address, timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def decisions(audit: io.StringIO) -> list[dict[str, object]]:
    return [line for line in audit_lines(audit) if line.get("event") == "decision"]


def test_urllib_allowed_and_denied(proxy: EgressProxy, allowed: LoopbackHTTPServer, unlisted: LoopbackHTTPServer,
                                   audit: io.StringIO) -> None:
    assert opener(proxy).open(f"{allowed.base}/via", timeout=5).read() == b"hello GET /via"
    with pytest.raises(urllib.error.HTTPError) as info:
        opener(proxy).open(f"{unlisted.base}/no", timeout=5)
    assert info.value.code == 403
    assert b"not allowed" in info.value.read() or "allowedAddresses" in info.value.headers["X-Capgate-Rule"]
    assert unlisted.connections == 0
    lines = decisions(audit)
    assert [(d["decision"], d["via"]) for d in lines] == [("allow", "proxy"), ("deny", "proxy")]


@needs_curl
@pytest.mark.parametrize("tunnel", [False, True])
def test_curl_allowed_and_denied(proxy: EgressProxy, allowed: LoopbackHTTPServer, unlisted: LoopbackHTTPServer,
                                 tunnel: bool) -> None:
    flags = ["-p"] if tunnel else []
    ok = subprocess.run([CURL, "-sS", "-x", proxy.url, *flags, f"{allowed.base}/c"],  # type: ignore[list-item]
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout == "hello GET /c"
    bad = subprocess.run([CURL, "-sS", "-x", proxy.url, *flags, "-o", "/dev/null", "-w", "%{http_code}",  # type: ignore[list-item]
                          f"{unlisted.base}/c"], capture_output=True, text=True, timeout=30)
    assert ("403" in bad.stdout) or ("403" in bad.stderr)
    assert unlisted.connections == 0


@needs_curl
def test_curl_uses_proxy_variables_and_gets_403_for_rebinding(proxy: EgressProxy) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HTTPS_PROXY": proxy.url, "https_proxy": proxy.url}
    done = subprocess.run([CURL, "-sS", "https://rebind.test/"], env=env, capture_output=True,  # type: ignore[list-item]
                          text=True, timeout=30)
    assert done.returncode != 0 and "403" in done.stderr


@needs_curl
def test_https_through_connect_tunnel(tmp_path: Path, audit: io.StringIO) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    from tests.integration.test_net_fetch import TLSServer, _make_ca_and_cert

    ca, cert, key = _make_ca_and_cert(tmp_path, "tunnel.test")
    tls = TLSServer(cert, key)
    try:
        gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"tunnel.test:{tls.port}"],
                                        "allowedAddresses": [f"127.0.0.1:{tls.port}"]},
                             resolver=lambda host, port: ["127.0.0.1"], audit=audit)
        with EgressProxy(gate) as p:
            done = subprocess.run([CURL, "-sS", "--cacert", str(ca), "-x", p.url,  # type: ignore[list-item]
                                   f"https://tunnel.test:{tls.port}/tls"], capture_output=True, text=True, timeout=30)
        assert done.stdout == "hello GET /tls", done.stderr
        assert tls.sni == ["tunnel.test"]
    finally:
        tls.close()


def test_host_header_rewritten_and_proxy_headers_dropped(proxy: EgressProxy, allowed: LoopbackHTTPServer) -> None:
    reply = raw(proxy, (f"GET {allowed.base}/h HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic eA==\r\n"
                        "X-Keep: 1\r\nConnection: X-Drop\r\nX-Drop: 1\r\n\r\n").encode())
    assert reply.startswith(b"HTTP/1.") and reply.endswith(b"hello GET /h")
    headers = allowed.requests[0]["headers"]
    assert headers["Host"] == f"127.0.0.1:{allowed.port}"
    assert "Proxy-Authorization" not in headers and "X-Drop" not in headers and headers["X-Keep"] == "1"


def test_one_request_per_connection_no_smuggling(proxy: EgressProxy, allowed: LoopbackHTTPServer,
                                                 unlisted: LoopbackHTTPServer) -> None:
    first = f"GET {allowed.base}/one HTTP/1.1\r\nHost: x\r\n\r\n"
    second = f"GET {unlisted.base}/two HTTP/1.1\r\nHost: x\r\n\r\n"
    raw(proxy, (first + second).encode())
    assert [r["path"] for r in allowed.requests] == ["/one"]
    assert unlisted.connections == 0


def test_request_bodies_forwarded(proxy: EgressProxy, allowed: LoopbackHTTPServer) -> None:
    raw(proxy, f"POST {allowed.base}/cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode())
    raw(proxy, (f"POST {allowed.base}/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").encode())
    assert [r["body"] for r in allowed.requests] == [b"hello", b"abcde"]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", b"400"),
    (b"GET http://127.0.0.1:{port}/ HTTP/1.1\nHost: x\n\n", b"408"),  # bare LF never ends the head
    (b"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", b"400"),
    (b"POST http://127.0.0.1:{port}/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", b"400"),
    (b"POST http://127.0.0.1:{port}/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"400"),
    (b"GET http://user@127.0.0.1:{port}/ HTTP/1.1\r\n\r\n", b"400"),
    (b"GET http://127.0.0.1:{port}/ HTTP/2.0\r\n\r\n", b"400"),
    (b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", b"400"),
    (b"get http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n", b"400"),
    (b"GET http://127.0.0.1:{port}/\xff HTTP/1.1\r\n\r\n", b"400"),
    (b"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n", b"431"),
])
def test_malformed_requests_refused(proxy: EgressProxy, allowed: LoopbackHTTPServer, request_bytes: bytes,
                                    status: bytes) -> None:
    reply = raw(proxy, request_bytes.replace(b"{port}", str(allowed.port).encode()))
    assert reply.split(b" ")[1] == status, reply[:200]
    assert allowed.requests == []


def test_slow_client_does_not_stall_others(proxy: EgressProxy, allowed: LoopbackHTTPServer) -> None:
    assert isinstance(proxy.address, tuple)
    slow = socket.create_connection(proxy.address)
    slow.sendall(b"GET http://127.0.0.1")  # and then nothing
    try:
        assert opener(proxy).open(f"{allowed.base}/fast", timeout=5).read() == b"hello GET /fast"
        slow.settimeout(5)
        assert slow.recv(100).startswith(b"HTTP/1.1 408")  # the header deadline closed it
    finally:
        slow.close()


def test_connection_cap(proxy: EgressProxy, allowed: LoopbackHTTPServer) -> None:
    assert isinstance(proxy.address, tuple)
    idle = [socket.create_connection(proxy.address) for _ in range(4)]
    try:
        time.sleep(0.3)  # let the proxy accept them
        reply = raw(proxy, f"GET {allowed.base}/x HTTP/1.1\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 503")
    finally:
        for s in idle:
            s.close()
    # Slots come back once those clients are gone.
    for _ in range(50):
        reply = raw(proxy, f"GET {allowed.base}/back HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        if reply.endswith(b"hello GET /back"):
            break
        time.sleep(0.1)
    assert reply.endswith(b"hello GET /back")


def test_unix_socket_listener(allowed: LoopbackHTTPServer, tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]})
    path = str(tmp_path / "proxy.sock")
    with EgressProxy(gate, unix_path=path) as p:
        assert p.url == "unix:" + path and (os.stat(path).st_mode & 0o077) == 0
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(f"GET {allowed.base}/unix HTTP/1.1\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    assert data.endswith(b"hello GET /unix")
    assert not os.path.exists(path)


def test_proxy_binds_loopback_only(tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True})
    for host in ("0.0.0.0", "::", "192.0.2.1", "localhost"):
        with pytest.raises(ValueError):
            EgressProxy(gate, host=host)


def test_offline_policy_proxy_denies_everything(allowed: LoopbackHTTPServer, tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": False, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]})
    with EgressProxy(gate) as p:
        reply = raw(p, f"GET {allowed.base}/ HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and b"network.enabled" in reply
    assert allowed.connections == 0
