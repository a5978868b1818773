"""``capgate proxy`` (the egress proxy on its own, for a proxy pod) and a launcher's proxy
chained to it (``CAPGATE_UPSTREAM_PROXY``): real loopback servers, real sockets."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from capgate.errors import BackendUnavailable
from capgate.proxy import EgressProxy
from tests._net_helpers import LoopbackHTTPServer, audit_lines, make_net_gate


@pytest.fixture
def servers() -> Iterator[tuple[LoopbackHTTPServer, LoopbackHTTPServer]]:
    a, b = LoopbackHTTPServer(), LoopbackHTTPServer()
    yield a, b
    a.close()
    b.close()


def _opener(url: str) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": url, "https": url}))


def _decisions(stream: io.StringIO) -> list[tuple[str, bool]]:
    return [(str(line["target"]), line["decision"] == "allow") for line in audit_lines(stream)
            if line.get("event") == "decision"]


def test_a_chained_proxy_sends_allowed_traffic_through_the_upstream_which_decides_again(
        servers: tuple[LoopbackHTTPServer, LoopbackHTTPServer], tmp_path: Path) -> None:
    allowed, other = servers
    up_audit, down_audit = io.StringIO(), io.StringIO()
    (tmp_path / "up").mkdir()
    (tmp_path / "down").mkdir()
    # The cluster's proxy allows only `allowed`; the pod's own proxy (wider on purpose) both.
    up_gate = make_net_gate(tmp_path / "up", {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]},
                            audit=up_audit)
    down_gate = make_net_gate(tmp_path / "down", {"enabled": True, "allowedAddresses": [
        f"127.0.0.1:{allowed.port}", f"127.0.0.1:{other.port}"]}, audit=down_audit)
    with EgressProxy(up_gate) as upstream:
        assert isinstance(upstream.address, tuple)
        with EgressProxy(down_gate, upstream=upstream.address) as pod_proxy:
            assert _opener(pod_proxy.url).open(f"{allowed.base}/ok", timeout=5).read() == b"hello GET /ok"
            with pytest.raises(urllib.error.HTTPError) as info:
                _opener(pod_proxy.url).open(f"{other.base}/no", timeout=5)
            assert info.value.code == 502
    assert other.requests == []  # the upstream's denial held: nothing reached the server
    assert (f"127.0.0.1:{allowed.port}", True) in _decisions(up_audit)  # it went through the upstream
    assert (f"127.0.0.1:{other.port}", False) in _decisions(up_audit)
    assert (f"127.0.0.1:{other.port}", True) in _decisions(down_audit)


def test_unchained_control_reaches_both(servers: tuple[LoopbackHTTPServer, LoopbackHTTPServer],
                                        tmp_path: Path) -> None:
    allowed, other = servers
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [
        f"127.0.0.1:{allowed.port}", f"127.0.0.1:{other.port}"]})
    with EgressProxy(gate) as proxy:
        assert _opener(proxy.url).open(f"{other.base}/yes", timeout=5).read() == b"hello GET /yes"


def test_the_pod_proxy_listens_beyond_loopback_only_when_told(tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": False})
    with pytest.raises(ValueError, match="loopback only"):
        EgressProxy(gate, "0.0.0.0", 0)
    EgressProxy(gate, "0.0.0.0", 0, listen_any=True)  # constructed, never started: no bind beyond loopback
    with pytest.raises(ValueError, match="IP address"):
        EgressProxy(gate, "proxy.example", 0, listen_any=True)


def test_upstream_setting_is_parsed_strictly() -> None:
    from capgate.backends.soft import upstream_proxy

    assert upstream_proxy({}) is None
    assert upstream_proxy({"CAPGATE_UPSTREAM_PROXY": "capgate-run-proxy:3128"}) == ("capgate-run-proxy", 3128)
    assert upstream_proxy({"CAPGATE_UPSTREAM_PROXY": "[fd00::5]:3128"}) == ("fd00::5", 3128)
    for bad in ("capgate-run-proxy", "host:0", "host:99999", ":3128", "h ost:1"):
        with pytest.raises(BackendUnavailable):
            upstream_proxy({"CAPGATE_UPSTREAM_PROXY": bad})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_capgate_proxy_command_serves_the_policy_until_sigterm(
        servers: tuple[LoopbackHTTPServer, LoopbackHTTPServer], tmp_path: Path) -> None:
    allowed, other = servers
    ws = tmp_path / "ws"
    ws.mkdir()
    port = _free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capgate", "proxy", "--workspace", str(ws), "--allow-net",
         f"127.0.0.1:{allowed.port}", "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]  # the audit line, then the banner (any order)
        assert any(f"capgate: egress proxy listening on http://127.0.0.1:{port}" in line for line in lines)
        url = f"http://127.0.0.1:{port}"
        assert _opener(url).open(f"{allowed.base}/p", timeout=5).read() == b"hello GET /p"
        with pytest.raises(urllib.error.HTTPError) as info:
            _opener(url).open(f"{other.base}/q", timeout=5)
        assert info.value.code == 403
        assert other.requests == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_capgate_proxy_refuses_a_name_to_listen_on(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "capgate", "proxy", "--workspace", str(tmp_path),
                             "--listen", "localhost:3128"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "c")})
    assert result.returncode == 2
    assert "numeric address" in result.stderr


def test_capgate_run_sends_the_childs_traffic_through_the_upstream_proxy(
        servers: tuple[LoopbackHTTPServer, LoopbackHTTPServer], tmp_path: Path, fake_home: Path) -> None:
    """The run's pod in ``--egress proxy`` mode: the launcher reads CAPGATE_UPSTREAM_PROXY and
    its own proxy chains to the cluster's, which decides again (here: denies ``other``)."""
    from tests.integration._soft_helpers import PY, capgate_run

    allowed, other = servers
    up_audit = io.StringIO()
    (tmp_path / "up").mkdir()
    up_gate = make_net_gate(tmp_path / "up", {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]},
                            audit=up_audit)
    ws = tmp_path / "ws"
    ws.mkdir()
    script = ("import capgate.net as n, sys\n"
              "for url in sys.argv[1:]:\n"
              "    try:\n"
              "        print(url, n.fetch(url, timeout=10).status)\n"
              "    except Exception as exc:\n"
              "        print(url, 'failed', type(exc).__name__)\n")
    with EgressProxy(up_gate) as upstream:
        assert isinstance(upstream.address, tuple)
        result = capgate_run(["run", "--workspace", str(ws), "--allow-net", f"127.0.0.1:{allowed.port}",
                              "--allow-net", f"127.0.0.1:{other.port}", "--", PY, "-c", script,
                              f"{allowed.base}/a", f"{other.base}/b"],
                             home=fake_home, cwd=ws,
                             env_extra={"CAPGATE_UPSTREAM_PROXY": f"127.0.0.1:{upstream.address[1]}"})
    assert f"{allowed.base}/a 200" in result.stdout, result.stdout + result.stderr
    assert f"{other.base}/b failed" in result.stdout, result.stdout + result.stderr
    assert other.requests == []
    assert (f"127.0.0.1:{allowed.port}", True) in _decisions(up_audit)
    assert (f"127.0.0.1:{other.port}", False) in _decisions(up_audit)
