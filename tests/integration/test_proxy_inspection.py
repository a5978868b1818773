"""The inspecting egress proxy in process (issue 19): HTTP plumbing on an inspected host —
keep-alive to the client and the upstream, chunked uploads, server-sent events streamed (not
buffered), Upgrade refused — and the end-the-run switch for a misused placeholder."""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate.audit import AuditLog
from capgate.credentials import resolve_credentials
from capgate.inspection.relay import Inspection
from capgate.policy.sources import Grants
from capgate.proxy import EgressProxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _tls_upstream import OTHER_HOST, SECRET, TEST_HOST, Upstream, upstream


class _Run:
    def __init__(self, proxy: EgressProxy, inspection: Inspection, server: Upstream, audit: io.StringIO,
                 misuse: list[str]) -> None:
        self.proxy, self.inspection, self.server, self.audit, self.misuse = proxy, inspection, server, audit, misuse
        self.placeholder = inspection.credentials.items[0].placeholder.decode()
        self.clients: list[http.client.HTTPSConnection] = []  # (closed at teardown: no thread left waiting)

    def client(self, host: str = TEST_HOST, timeout: float = 10) -> http.client.HTTPSConnection:
        assert isinstance(self.proxy.address, tuple)
        ctx = ssl.create_default_context(cadata=self.inspection.ca.pem.decode())
        conn = http.client.HTTPSConnection(*self.proxy.address, context=ctx, timeout=timeout)
        conn.set_tunnel(host, self.server.port)
        self.clients.append(conn)
        return conn

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.getvalue().splitlines()]


@pytest.fixture
def run(tmp_path: Path, workspace: Path) -> Iterator[_Run]:
    with upstream(tmp_path) as (ca, server):
        port = server.port
        rules = workspace / "agent-permissions.json"
        rules.write_text(json.dumps({"network": {"requestRules": [{"host": f"{OTHER_HOST}:{port}"}]}}))
        grants = Grants(credential=(f"TOKEN@{TEST_HOST}:{port}/Authorization",), net=(f"127.0.0.1:{port}",
                        f"{OTHER_HOST}:{port}"), resolve=(f"{TEST_HOST}:{port}:127.0.0.1",
                                                          f"{OTHER_HOST}:{port}:127.0.0.1"))
        policy = capgate.load_policy(rules, workspace=workspace, grants=grants)
        audit = io.StringIO()
        gate = capgate.Gate(policy, audit=AuditLog(audit))
        misuse: list[str] = []
        inspection = Inspection(resolve_credentials(policy, {"TOKEN": SECRET}), policy.network.request_rules,
                                (str(ca.ca_file),), misuse.append)
        with EgressProxy(gate, inspection=inspection) as proxy:
            state = _Run(proxy, inspection, server, audit, misuse)
            try:
                yield state
            finally:
                server.release.set()
                for conn in state.clients:
                    conn.close()


def test_keep_alive_one_client_connection_one_upstream_connection(run: _Run) -> None:
    conn = run.client()
    for _ in range(3):
        conn.request("GET", "/echo", headers={"Authorization": f"Bearer {run.placeholder}"})
        resp = conn.getresponse()
        assert resp.status == 200 and run.placeholder in resp.read().decode()
    conn.close()
    assert run.server.connections == 1
    assert [v for r in run.server.requests for n, v in r["headers"] if n.lower() == "authorization"] == \
        [f"Bearer {SECRET}"] * 3


def test_chunked_upload_is_relayed(run: _Run) -> None:
    conn = run.client()
    conn.request("POST", "/upload", body=iter([b"a" * 1000, b"b" * 3000]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 200
    assert run.server.requests[-1]["body"] == "a" * 1000 + "b" * 3000


def test_server_sent_events_are_streamed_not_buffered(run: _Run) -> None:
    conn = run.client(timeout=4)  # (a proxy that waited for the end would time this read out)
    conn.request("GET", "/wait", headers={"Authorization": f"Bearer {run.placeholder}"})
    resp = conn.getresponse()
    first = resp.readline()
    assert first == b"data: one\n" and not run.server.release.is_set()
    run.server.release.set()
    assert resp.read() == b"data: two\n"


def test_upgrade_is_refused_on_an_inspected_host(run: _Run) -> None:
    conn = run.client()
    conn.request("GET", "/echo", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    resp = conn.getresponse()
    assert resp.status == 403 and resp.getheader("X-Capgate-Rule") == "proxy.upgrade"
    assert b"WebSocket" in resp.read()
    assert run.server.requests == []
    control = run.client()  # control: the same request without Upgrade goes through
    control.request("GET", "/echo")
    assert control.getresponse().status == 200


def test_misused_placeholder_calls_the_end_of_run_switch(run: _Run) -> None:
    conn = run.client(OTHER_HOST)
    conn.request("POST", "/echo", body=f"token={run.placeholder}".encode())
    resp = conn.getresponse()
    assert resp.status == 403 and resp.getheader("X-Capgate-Rule") == "net.credential"
    assert len(run.misuse) == 1 and OTHER_HOST in run.misuse[0]
    denials = [e for e in run.audit_lines() if e.get("op") == "net.credential"]
    assert denials and denials[0]["decision"] == "deny" and SECRET not in run.audit.getvalue()


def test_plain_connect_without_rules_is_not_inspected(run: _Run, tmp_path: Path) -> None:
    """Benign control in process: 127.0.0.1 (no credential, no rules) gets a byte tunnel, so the
    run CA does not verify it and the upstream's own certificate does."""
    assert isinstance(run.proxy.address, tuple)
    s = socket.create_connection(run.proxy.address, timeout=10)
    s.sendall(f"CONNECT 127.0.0.1:{run.server.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cadata=run.inspection.ca.pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(s, server_hostname=TEST_HOST)


_BLOCK = 256 * 1024  # (the relay's read size: a secret must be caught across its boundaries too)


def _fetch(conn: http.client.HTTPSConnection, run: _Run, target: str) -> bytes:
    conn.request("GET", target, headers={"Authorization": f"Bearer {run.placeholder}"})
    resp = conn.getresponse()
    assert resp.status == 200
    return resp.read()


def _expected(size: int, offsets: list[int], placeholder: str) -> bytes:
    body = bytearray(b"x" * size)
    for off in offsets:
        body[off:off + len(placeholder)] = placeholder.encode()
    return bytes(body)


def test_secret_split_across_large_read_blocks_is_scrubbed(run: _Run) -> None:
    """A Content-Length body relayed in large slices: the secret at the start, across a TLS
    record, across the relay's read blocks and at the very end is still replaced; the
    connection then serves another request on the same upstream connection."""
    size = 3 * _BLOCK + 1000
    offsets = [0, 16384 - 7, _BLOCK - 10, 2 * _BLOCK - len(SECRET) + 1, size - len(SECRET)]
    assert len(run.placeholder) == len(SECRET)  # (so Content-Length stays)
    conn = run.client()
    path = f"/secret/{size}/{','.join(map(str, offsets))}"
    got = _fetch(conn, run, path)
    assert SECRET.encode() not in got and got == _expected(size, offsets, run.placeholder)
    # Paced: the relay's reads end where the upstream's 64 KiB writes do, with the value across.
    paced = [65536 - 7, 2 * 65536 - len(SECRET) + 1, 3 * 65536 - 1]
    got = _fetch(conn, run, f"/secret/{4 * 65536}/{','.join(map(str, paced))}?pace=1")
    assert SECRET.encode() not in got and got == _expected(4 * 65536, paced, run.placeholder)
    benign = _fetch(conn, run, f"/secret/{size}/")  # (control: no secret, the body as sent)
    assert benign == b"x" * size
    assert run.server.connections == 1
    assert len(run.server.requests) == 3


def test_secret_split_across_chunks_of_a_large_chunked_body_is_scrubbed(run: _Run) -> None:
    size, piece = 2 * _BLOCK + 333, 100_003
    offsets = [piece - 9, 2 * piece - 1, _BLOCK - 3]
    got = _fetch(run.client(), run, f"/secret/{size}/{','.join(map(str, offsets))}?chunked={piece}")
    assert SECRET.encode() not in got and got == _expected(size, offsets, run.placeholder)


def test_secret_in_a_large_gzip_body_is_scrubbed_after_decoding(run: _Run) -> None:
    size = 3 * _BLOCK
    offsets = [_BLOCK - 4, 2 * _BLOCK - 20]
    got = _fetch(run.client(), run, f"/secret/{size}/{','.join(map(str, offsets))}?gzip=1")
    assert SECRET.encode() not in got and got == _expected(size, offsets, run.placeholder)


@pytest.mark.parametrize("option", ["close", "extra"])
def test_upstream_connection_is_not_reused_after_close_or_stray_bytes(run: _Run, option: str) -> None:
    """An upstream that says ``Connection: close``, or sends bytes past a Content-Length body,
    does not get the next request on that connection (stray bytes would be read as its answer);
    the client's connection goes on, over a new upstream connection."""
    conn = run.client()
    first = _fetch(conn, run, f"/secret/70000/100?{option}=1")
    assert first == _expected(70000, [100], run.placeholder)
    second = _fetch(conn, run, "/secret/10/")
    assert second == b"x" * 10
    assert run.server.connections == 2


def test_a_new_upstream_connection_resumes_the_verified_tls_session(run: _Run) -> None:
    """A second client connection to the host gets its upstream TLS by resuming the session the
    first one verified (no second full handshake); the first one was a full handshake."""
    for _ in range(2):
        conn = run.client()
        assert _fetch(conn, run, "/secret/10/") == b"x" * 10
        conn.close()
    assert run.server.connections == 2
    assert [r["resumed"] for r in run.server.requests] == [False, True]
