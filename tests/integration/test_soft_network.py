"""Network from a soft-sandboxed child: only through the launcher's egress proxy.

Real command, real loopback servers. With the network enabled and one loopback address
listed, a plain ``urllib`` child reaches it through the proxy (the launcher sets the proxy
variables); a non-listed server is answered 403 by the proxy and never contacted; a direct
``socket.connect`` that skips the proxy is denied. ``capgate.net.fetch`` inside the sandbox
tunnels through the same proxy.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer
from tests.integration._soft_helpers import PY, audit_lines, capgate_run


@pytest.fixture
def servers() -> Iterator[tuple[LoopbackHTTPServer, RecordingTCPServer]]:
    allowed, other = LoopbackHTTPServer(), RecordingTCPServer()
    yield allowed, other
    allowed.close()
    other.close()


def _run_child(tmp_path: Path, home: Path, code: str, allowed_port: int | None) -> tuple[str, str, int]:
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True, exist_ok=True)
    (ws / "child.py").write_text(textwrap.dedent(code))
    network: dict[str, object] = {"enabled": allowed_port is not None}
    if allowed_port is not None:
        network["allowedAddresses"] = [f"127.0.0.1:{allowed_port}"]
    (ws / "agent-permissions.json").write_text(json.dumps({"version": 1, "network": network}))
    result = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--workspace", str(ws), "--",
                          PY, str(ws / "child.py")], home=home, cwd=tmp_path, timeout=60)
    return result.stdout, result.stderr, result.returncode


CHILD = """
import socket, urllib.error, urllib.request
def attempt(label, fn):
    try:
        print(label, "OK", fn())
    except urllib.error.HTTPError as exc:
        print(label, "HTTP", exc.code)
    except PermissionError as exc:
        print(label, "DENIED", exc)
    except OSError as exc:
        print(label, "OSERROR", exc)
attempt("allowed", lambda: urllib.request.urlopen("http://127.0.0.1:{allowed}/via-proxy", timeout=10).read().decode())
attempt("other", lambda: urllib.request.urlopen("http://127.0.0.1:{other}/", timeout=10).read())
attempt("direct", lambda: socket.create_connection(("127.0.0.1", {allowed}), timeout=5).close())
from capgate import net
attempt("gated", lambda: net.fetch("http://127.0.0.1:{allowed}/via-net-fetch", timeout=10).text())
attempt("gated-other", lambda: net.fetch("http://127.0.0.1:{other}/", timeout=10).status)
"""


def test_child_network_goes_through_the_egress_proxy(tmp_path: Path, fake_home: Path,
                                                     servers: tuple[LoopbackHTTPServer, RecordingTCPServer]) -> None:
    allowed, other = servers
    out, err, code = _run_child(tmp_path, fake_home, CHILD.format(allowed=allowed.port, other=other.port),
                                allowed.port)
    assert code == 0, out + err
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert lines["allowed"] == "OK hello GET /via-proxy", out + err
    assert lines["other"] == "HTTP 403", out + err
    assert lines["direct"].startswith("DENIED"), out + err
    assert lines["gated"] == "OK hello GET /via-net-fetch", out + err
    assert lines["gated-other"].startswith("DENIED"), out + err
    assert other.connections == 0, "a non-listed server was contacted"
    assert [r["path"] for r in allowed.requests] == ["/via-proxy", "/via-net-fetch"]
    events = audit_lines(fake_home)
    proxy_denials = [e for e in events if e.get("via") == "proxy" and e.get("decision") == "deny"]
    assert proxy_denials, "the proxy's denial is not in the launcher's audit log"


def test_network_off_means_no_proxy_and_every_connect_denied(
    tmp_path: Path, fake_home: Path, servers: tuple[LoopbackHTTPServer, RecordingTCPServer]
) -> None:
    allowed, other = servers
    out, err, code = _run_child(tmp_path, fake_home, CHILD.format(allowed=allowed.port, other=other.port), None)
    assert code == 0, out + err
    for line in out.splitlines():
        assert " OK " not in f" {line} ", out
    assert allowed.connections == 0 and other.connections == 0
