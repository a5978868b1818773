"""URL tricks against real loopback servers: user info, fragments, backslashes, redirects to
unlisted places (the second server is never contacted), proxy variables (never used),
header injection and body caps."""

from __future__ import annotations

import http.server
from pathlib import Path

import pytest

import capgate
from capgate import net
from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer, audit_lines, make_net_gate, redirect_to


@pytest.fixture
def good() -> LoopbackHTTPServer:
    server = LoopbackHTTPServer()
    yield server  # type: ignore[misc]
    server.close()


@pytest.fixture
def other() -> LoopbackHTTPServer:
    server = LoopbackHTTPServer()
    yield server  # type: ignore[misc]
    server.close()


def listed(tmp_path: Path, *ports: int, **extra: object) -> capgate.Gate:
    network: dict[str, object] = {"enabled": True, "allowedAddresses": [f"127.0.0.1:{p}" for p in ports], **extra}
    return make_net_gate(tmp_path, network)


def test_benign_fetch_reaches_listed_server(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    with listed(tmp_path, good.port):
        response = net.fetch(f"{good.base}/ok?x=1#frag")
    assert response.status == 200 and response.text() == "hello GET /ok?x=1"


@pytest.mark.parametrize("template", [
    "http://127.0.0.1:{good}@127.0.0.1:{other}/",
    "http://127.0.0.1:{other}#@127.0.0.1:{good}/",
    "http://127.0.0.1:{other}?@127.0.0.1:{good}/",
    "http://127.0.0.1:{other}\\@127.0.0.1:{good}/",
    "http://127.0.0.1:{good}\\@127.0.0.1:{other}/",
    "http://127.0.0.1:{other}/\\127.0.0.1:{good}",
    "http://127.0.0.1:{other}/127.0.0.1:{good}",
    "http://127.0.0.1:{good}:{other}/",
    "http://[::ffff:127.0.0.1]:{other}/",
    "http://127.1:{other}/",
])
def test_tricks_never_reach_the_unlisted_server(
    template: str, good: LoopbackHTTPServer, other: LoopbackHTTPServer, tmp_path: Path
) -> None:
    url = template.format(good=good.port, other=other.port)
    with listed(tmp_path, good.port), pytest.raises(capgate.PermissionDenied):
        net.fetch(url, timeout=2)
    assert other.connections == 0


def test_redirect_to_unlisted_port_denied_second_server_untouched(
    good: LoopbackHTTPServer, other: LoopbackHTTPServer, tmp_path: Path
) -> None:
    good.routes["/go"] = redirect_to(f"{other.base}/stolen")
    with listed(tmp_path, good.port), pytest.raises(capgate.PermissionDenied) as info:
        net.fetch(f"{good.base}/go", timeout=2)
    assert str(other.port) in info.value.target
    assert other.connections == 0 and good.requests[0]["path"] == "/go"


@pytest.mark.parametrize("location", [
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:{good}/", "http://2130706433:{other}/",
    "file:///etc/passwd", "gopher://127.0.0.1:{good}/", "http://127.0.0.1:{good}\\@evil.example/",
    "//127.0.0.1:{other}/x", "http://localhost:{good}/",
])
def test_redirect_hops_are_checked(
    location: str, good: LoopbackHTTPServer, other: LoopbackHTTPServer, tmp_path: Path
) -> None:
    good.routes["/go"] = redirect_to(location.format(good=good.port, other=other.port))
    with listed(tmp_path, good.port), pytest.raises(capgate.PermissionDenied):
        net.fetch(f"{good.base}/go", timeout=2)
    assert other.connections == 0
    assert [r["path"] for r in good.requests] == ["/go"]


def test_redirects_within_policy_are_followed_and_logged_per_hop(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    good.routes["/a"] = redirect_to("/b", 301)
    good.routes["/b"] = redirect_to(f"{good.base}/c", 307)
    gate = listed(tmp_path, good.port)
    with gate:
        response = net.fetch(f"{good.base}/a")
    assert response.text() == "hello GET /c"
    assert response.history == (f"{good.base}/a", f"{good.base}/b")
    assert len([line for line in audit_lines(gate.audit._stream) if line.get("event") == "decision"]) == 3  # type: ignore[arg-type]


def test_redirect_loop_is_bounded(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    good.routes["/loop"] = redirect_to("/loop")
    with listed(tmp_path, good.port), pytest.raises(net.TooManyRedirects):
        net.fetch(f"{good.base}/loop", max_redirects=3)
    assert len(good.requests) == 4


def test_303_turns_post_into_get_and_drops_the_body(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    good.routes["/submit"] = redirect_to("/done", 303)
    with listed(tmp_path, good.port):
        response = net.fetch(f"{good.base}/submit", method="POST", data=b"secret=1")
    assert response.text() == "hello GET /done"
    assert good.requests[1]["body"] == b""


def test_credentials_dropped_on_cross_origin_redirect(
    good: LoopbackHTTPServer, other: LoopbackHTTPServer, tmp_path: Path
) -> None:
    good.routes["/go"] = redirect_to(f"{other.base}/landing")
    with listed(tmp_path, good.port, other.port):
        net.fetch(f"{good.base}/go", headers={"Authorization": "Bearer tok", "Cookie": "s=1", "X-Keep": "1"})
    assert good.requests[0]["headers"]["Authorization"] == "Bearer tok"
    landed = other.requests[0]["headers"]
    assert "Authorization" not in landed and "Cookie" not in landed and landed["X-Keep"] == "1"


@pytest.mark.parametrize("name", ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"])
def test_proxy_variables_are_never_used(
    name: str, good: LoopbackHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingTCPServer()
    try:
        monkeypatch.setenv(name, f"http://127.0.0.1:{recorder.port}")
        monkeypatch.setenv("NO_PROXY", "")
        with listed(tmp_path, good.port):
            assert net.fetch(f"{good.base}/direct").text() == "hello GET /direct"
            with pytest.raises(capgate.PermissionDenied):
                net.fetch("http://api.example.com/")
        assert recorder.connections == 0
    finally:
        recorder.close()


def test_host_header_cannot_be_overridden(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    with listed(tmp_path, good.port):
        with pytest.raises(ValueError):
            net.fetch(f"{good.base}/", headers={"Host": "evil.example"})
        with pytest.raises(ValueError):
            net.fetch(f"{good.base}/", headers={"X-A": "1\r\nHost: evil.example"})
        net.fetch(f"{good.base}/h")
    assert [r["headers"]["Host"] for r in good.requests] == [f"127.0.0.1:{good.port}"]


def test_body_is_capped(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    def big(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(64):
            handler.wfile.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    good.routes["/big"] = big
    with listed(tmp_path, good.port):
        with pytest.raises(net.ResponseTooLarge):
            net.fetch(f"{good.base}/big", max_bytes=100_000)
        assert len(net.fetch(f"{good.base}/big", max_bytes=2_000_000).body) == 64 * 0x4000


def test_only_http_schemes_fetch(good: LoopbackHTTPServer, tmp_path: Path) -> None:
    with listed(tmp_path, good.port):
        for url in (f"127.0.0.1:{good.port}", f"ftp://127.0.0.1:{good.port}/", "file:///etc/passwd"):
            with pytest.raises(capgate.PermissionDenied):
                net.fetch(url)
    assert good.connections == 0
