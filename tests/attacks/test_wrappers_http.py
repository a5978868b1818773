"""The HTTP client wrappers (urllib, requests, httpx sync and async) against real loopback
servers: allowed requests work; every hostile URL, redirect, header or proxy variable is refused
as the client's own error type before any byte reaches the server it points at (the ``victim``
server records every connection)."""

from __future__ import annotations

import asyncio
import http.server
import io
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

import capgate
from capgate.wrappers import httpx as gated_httpx
from capgate.wrappers import requests as gated_requests
from capgate.wrappers import urllib as gated_urllib
from tests._net_helpers import LoopbackHTTPServer, audit_lines, make_net_gate, redirect_to
from tests.integration.test_net_fetch import TLSServer, needs_openssl, pki  # noqa: F401  (pki: a fixture)


@dataclass
class Client:
    name: str
    get: Callable[..., tuple[int, bytes]]  # (url, headers=None) -> (status, body)
    error: type[BaseException]  # the client's natural base error
    denied: type[BaseException]
    too_large: type[BaseException]


def _urllib(verify: Any = True, max_bytes: int = 10 << 20) -> Client:
    opener = gated_urllib.opener(verify=verify, max_bytes=max_bytes)

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        import urllib.request

        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()

    return Client("urllib", get, urllib.error.URLError, gated_urllib.RequestDenied, gated_urllib.ResponseTooLarge)


def _requests(verify: Any = True, max_bytes: int = 10 << 20) -> Client:
    session = gated_requests.session(max_bytes=max_bytes)

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        r = session.get(url, headers=headers, timeout=5, verify=verify)
        return r.status_code, r.content

    return Client("requests", get, requests.RequestException, gated_requests.RequestDenied,
                  gated_requests.ResponseTooLarge)


def _httpx(verify: Any = True, max_bytes: int = 10 << 20) -> Client:
    client = httpx.Client(transport=gated_httpx.GateTransport(verify=verify, max_bytes=max_bytes),
                          follow_redirects=True, timeout=5)

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        r = client.get(url, headers=headers)
        return r.status_code, r.content

    return Client("httpx", get, httpx.HTTPError, gated_httpx.RequestDenied, gated_httpx.ResponseTooLarge)


def _httpx_async(verify: Any = True, max_bytes: int = 10 << 20) -> Client:
    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        async def run() -> tuple[int, bytes]:
            transport = gated_httpx.AsyncGateTransport(verify=verify, max_bytes=max_bytes)
            async with httpx.AsyncClient(transport=transport, follow_redirects=True, timeout=5) as client:
                r = await client.get(url, headers=headers)
                return r.status_code, r.content

        return asyncio.run(run())

    return Client("httpx-async", get, httpx.HTTPError, gated_httpx.RequestDenied, gated_httpx.ResponseTooLarge)


CLIENTS = {"urllib": _urllib, "requests": _requests, "httpx": _httpx, "httpx-async": _httpx_async}


@dataclass
class World:
    good: LoopbackHTTPServer
    victim: LoopbackHTTPServer
    gate: capgate.Gate
    audit: io.StringIO


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    good, victim = LoopbackHTTPServer(), LoopbackHTTPServer()
    v = victim.port
    good.routes.update({
        "/to-victim": redirect_to(f"http://127.0.0.1:{v}/"),
        "/to-victim-name": redirect_to(f"http://rebind.test:{v}/"),
        "/to-metadata": redirect_to("http://169.254.169.254/latest/meta-data/"),
        "/to-file": redirect_to("file:///etc/passwd"),
        "/to-ftp": redirect_to(f"ftp://127.0.0.1:{v}/"),
        "/loop": redirect_to("/loop"),
        "/to-page": redirect_to("/page", 307),
        "/big": _big_body,
    })
    resolver = {"api.test": ["127.0.0.1"], "rebind.test": ["127.0.0.1"], "public.test": ["93.184.216.34", "127.0.0.1"]}
    audit = io.StringIO()
    gate = make_net_gate(tmp_path, {
        "enabled": True,
        "allowedDomains": [f"api.test:{good.port}", f"rebind.test:{v}", f"public.test:{v}"],
        "allowedAddresses": [f"127.0.0.1:{good.port}"],
    }, resolver=lambda host, port: resolver.get(host, ["203.0.113.9"]), audit=audit)
    try:
        yield World(good, victim, gate, audit)
    finally:
        good.close()
        victim.close()


def _big_body(handler: http.server.BaseHTTPRequestHandler) -> None:
    body = b"x" * (2 << 20)
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_allowed_requests_work(make: Callable[..., Client], world: World) -> None:
    client = make()
    with world.gate:
        assert client.get(f"http://127.0.0.1:{world.good.port}/page?q=1") == (200, b"hello GET /page?q=1")
        assert client.get(f"http://api.test:{world.good.port}/named") == (200, b"hello GET /named")
        assert client.get(f"http://127.0.0.1:{world.good.port}/to-page") == (200, b"hello GET /page")
    assert world.victim.connections == 0
    hosts = [r["headers"].get("Host") for r in world.good.requests]
    assert hosts[1] == f"api.test:{world.good.port}"
    decisions = [d for d in audit_lines(world.audit) if d.get("event") == "decision"]
    assert len(decisions) == 4 and all(d["decision"] == "allow" for d in decisions)  # one per hop


def _hostile_urls(w: World) -> dict[str, str]:
    g, v = w.good.port, w.victim.port
    return {
        "other-port": f"http://127.0.0.1:{v}/",
        "decimal-ip": f"http://2130706433:{v}/",
        "hex-ip": f"http://0x7f.0.0.1:{v}/",
        "short-ip": f"http://127.1:{v}/",
        "mapped-v6": f"http://[::ffff:127.0.0.1]:{v}/",
        "v6-loopback": f"http://[::1]:{v}/",
        "localhost": f"http://localhost:{v}/",
        "rebinding-name": f"http://rebind.test:{v}/",
        "mixed-answers": f"http://public.test:{v}/",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "redirect-other-port": f"http://127.0.0.1:{g}/to-victim",
        "redirect-rebinding": f"http://127.0.0.1:{g}/to-victim-name",
        "redirect-metadata": f"http://127.0.0.1:{g}/to-metadata",
        "redirect-file": f"http://127.0.0.1:{g}/to-file",
        "redirect-ftp": f"http://127.0.0.1:{g}/to-ftp",
        "userinfo-confusion": f"http://127.0.0.1:{g}@127.0.0.1:{v}/",
        "userinfo": f"http://user:pw@127.0.0.1:{g}/",
        "backslash": f"http://127.0.0.1:{v}\\@127.0.0.1:{g}/",
        "file": "file:///etc/passwd",
        "ftp": f"ftp://127.0.0.1:{v}/",
    }


HOSTILE_IDS = [
    "other-port", "decimal-ip", "hex-ip", "short-ip", "mapped-v6", "v6-loopback", "localhost", "rebinding-name",
    "mixed-answers", "metadata", "redirect-other-port", "redirect-rebinding", "redirect-metadata", "redirect-file",
    "redirect-ftp", "userinfo-confusion", "userinfo", "backslash", "file", "ftp",
]
# Refused by the client's own URL parser before the transport sees them (still never sent).
CLIENT_SIDE = {("httpx", "backslash"), ("httpx-async", "backslash"), ("requests", "backslash"),
               ("urllib", "redirect-file")}


@pytest.mark.parametrize("case", HOSTILE_IDS)
@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_hostile_request_refused_before_any_byte(make: Callable[..., Client], case: str, world: World) -> None:
    client = make()
    url = _hostile_urls(world)[case]
    with world.gate, pytest.raises(Exception) as info:
        client.get(url)
    assert world.victim.connections == 0 and world.victim.requests == []
    if (client.name, case) in CLIENT_SIDE and not isinstance(info.value, client.denied):
        assert isinstance(info.value, (client.error, ValueError)), repr(info.value)
    else:
        assert isinstance(info.value, client.denied), repr(info.value)
        assert isinstance(info.value, client.error)
        assert isinstance(info.value.__cause__, capgate.PermissionDenied)
        assert info.value.__cause__.rule.startswith("network.")


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_redirect_loop_is_the_clients_error(make: Callable[..., Client], world: World) -> None:
    client = make()
    with world.gate, pytest.raises(client.error):
        client.get(f"http://127.0.0.1:{world.good.port}/loop")
    assert world.victim.connections == 0


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_host_header_naming_another_host_is_refused(make: Callable[..., Client], world: World) -> None:
    client = make()
    with world.gate:
        with pytest.raises(client.denied):
            client.get(f"http://127.0.0.1:{world.good.port}/h", headers={"Host": f"rebind.test:{world.victim.port}"})
        assert world.good.requests == []
        # benign: the same host spelled differently is fine
        same = {"Host": f"127.0.0.1:{world.good.port}"}
        assert client.get(f"http://127.0.0.1:{world.good.port}/h", headers=same)[0] == 200


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_proxy_variables_are_ignored(
    make: Callable[..., Client], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{world.victim.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    client = make()
    with world.gate:
        assert client.get(f"http://api.test:{world.good.port}/via") == (200, b"hello GET /via")
    assert world.victim.connections == 0


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_response_body_is_capped(make: Callable[..., Client], world: World) -> None:
    with world.gate:
        with pytest.raises(make(max_bytes=1 << 20).too_large):
            make(max_bytes=1 << 20).get(f"http://127.0.0.1:{world.good.port}/big")
        assert len(make(max_bytes=4 << 20).get(f"http://127.0.0.1:{world.good.port}/big")[1]) == 2 << 20


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_verify_false_is_refused(make: Callable[..., Client]) -> None:
    with pytest.raises((ValueError, requests.exceptions.SSLError)):
        make(verify=False).get("https://127.0.0.1:1/")


def test_harness_sees_a_leak_without_the_wrapper(world: World) -> None:
    # The control for the whole file: a plain client does reach the victim through a redirect.
    with httpx.Client(follow_redirects=True, trust_env=False) as plain:
        plain.get(f"http://127.0.0.1:{world.good.port}/to-victim")
    assert world.victim.connections == 1


@needs_openssl
@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
def test_tls_pinned_with_sni_and_certificate_of_the_checked_name(
    make: Callable[..., Client], pki: tuple[Path, Path, Path], tmp_path: Path  # noqa: F811
) -> None:
    ca, cert, key = pki
    tls = TLSServer(cert, key)
    try:
        gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"pinned.test:{tls.port}",
                                                                            f"other.test:{tls.port}"],
                                        "allowedAddresses": [f"127.0.0.1:{tls.port}"]},
                             resolver=lambda host, port: ["127.0.0.1"])
        client = make(verify=str(ca))
        with gate:
            assert client.get(f"https://pinned.test:{tls.port}/secure") == (200, b"hello GET /secure")
            assert tls.sni[-1] == "pinned.test"
            served = len(tls.inner.requests)
            with pytest.raises(client.error):  # the certificate is for pinned.test, not other.test
                client.get(f"https://other.test:{tls.port}/")
            with pytest.raises(client.error):  # the system store does not trust the test CA
                make().get(f"https://pinned.test:{tls.port}/untrusted")
        assert len(tls.inner.requests) == served
    finally:
        tls.close()
