"""The HTTP wrappers inside ``capgate run``: the soft backend and the namespace backend.

A sandboxed Python child uses ``capgate.wrappers.httpx`` (sync and async), ``.requests`` and
``.urllib`` against an allowed loopback endpoint and against another port. Inside the sandbox
the wrappers dial through ``capgate.net``, i.e. a CONNECT tunnel through the launcher's egress
proxy, which decides the destination again: the allowed requests arrive, the other port is
refused with each client's own error type and is never contacted, and the launcher's audit log
holds the decisions (the proxy's for the allowed tunnels, the child's gate's for the
refusals). Real command, real loopback servers.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._namespace_helpers import require_namespace_backend
from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer
from tests.integration._soft_helpers import PY, audit_lines, capgate_run

pytest.importorskip("httpx")
pytest.importorskip("requests")

CHILD = """
import asyncio, sys
import httpx, requests, urllib.error
from capgate.wrappers import httpx as ghttpx, requests as grequests, urllib as gurllib

ALLOWED, OTHER = sys.argv[1], sys.argv[2]

def attempt(label, fn):
    try:
        print(label, "OK", fn(), flush=True)
    except httpx.HTTPError as exc:
        print(label, "HTTPX", type(exc).__name__, type(exc.__cause__).__name__, flush=True)
    except requests.RequestException as exc:
        print(label, "REQUESTS", type(exc).__name__, type(exc.__cause__).__name__, flush=True)
    except urllib.error.URLError as exc:
        print(label, "URLLIB", type(exc).__name__, type(exc.__cause__).__name__, flush=True)
    except Exception as exc:
        print(label, "OTHER", type(exc).__name__, exc, flush=True)

def with_httpx(base, path):
    with httpx.Client(transport=ghttpx.GateTransport()) as client:
        return client.get(base + path).text

def with_async_httpx(base, path):
    async def go():
        async with httpx.AsyncClient(transport=ghttpx.AsyncGateTransport()) as client:
            return (await client.get(base + path)).text
    return asyncio.run(go())

def with_requests(base, path):
    with grequests.session() as s:
        return s.get(base + path, timeout=10).text

def with_urllib(base, path):
    with gurllib.opener().open(base + path, timeout=10) as response:
        return response.read().decode()

for name, fn in [("httpx", with_httpx), ("async", with_async_httpx), ("requests", with_requests),
                 ("urllib", with_urllib)]:
    attempt(name, lambda: fn(ALLOWED, "/" + name))
    attempt(name + "-other", lambda: fn(OTHER, "/" + name))
"""

EXPECTED = {
    "httpx": "OK hello GET /httpx",
    "async": "OK hello GET /async",
    "requests": "OK hello GET /requests",
    "urllib": "OK hello GET /urllib",
    "httpx-other": "HTTPX RequestDenied PermissionDenied",
    "async-other": "HTTPX RequestDenied PermissionDenied",
    "requests-other": "REQUESTS RequestDenied PermissionDenied",
    "urllib-other": "URLLIB RequestDenied PermissionDenied",
}


@pytest.fixture
def servers() -> Iterator[tuple[LoopbackHTTPServer, RecordingTCPServer]]:
    allowed, other = LoopbackHTTPServer(), RecordingTCPServer()
    yield allowed, other
    allowed.close()
    other.close()


@pytest.mark.parametrize("backend", ["soft", "namespace"])
def test_wrappers_reach_the_allowed_endpoint_through_the_egress_proxy_only(
    backend: str, tmp_path: Path, fake_home: Path, servers: tuple[LoopbackHTTPServer, RecordingTCPServer]
) -> None:
    if backend == "namespace":
        require_namespace_backend()
    allowed, other = servers
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    (ws / "child.py").write_text(textwrap.dedent(CHILD))
    policy = tmp_path / "net-policy.json"
    policy.write_text(json.dumps({"version": 1, "network": {
        "enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]}}))
    result = capgate_run(["run", "--backend", backend, "--policy", str(policy), "--allow-user-expansion",
                          "--workspace", str(ws), "--", PY, str(ws / "child.py"),
                          f"http://127.0.0.1:{allowed.port}", f"http://127.0.0.1:{other.port}"],
                         home=fake_home, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines == EXPECTED, result.stdout + result.stderr
    # The benign requests arrived (each once); the other port was never contacted.
    assert sorted(str(r["path"]) for r in allowed.requests) == ["/async", "/httpx", "/requests", "/urllib"]
    assert other.connections == 0, "a non-listed server was contacted"
    # The launcher's audit log holds the decisions: the proxy let each allowed tunnel through
    # (the child's own gate allowed it first); each refusal was the child's gate, before any
    # tunnel was asked for, naming the rule.
    events = [e for e in audit_lines(fake_home) if e.get("op") == "net.connect"]
    proxy_allowed = [e for e in events if e.get("via") == "proxy" and e.get("decision") == "allow"]
    assert sum(e.get("target") == f"127.0.0.1:{allowed.port}" for e in proxy_allowed) == 4, events
    child_denied = [e for e in events if e.get("source") == "child" and e.get("decision") == "deny"
                    and e.get("target") == f"127.0.0.1:{other.port}"]
    assert len(child_denied) == 4, events
    assert all(e.get("rule") and e.get("reason") for e in child_denied), child_denied
    assert not [e for e in events if e.get("decision") == "allow" and str(e.get("target")).endswith(f":{other.port}")]
