"""Review round 8, the inspecting proxy (real loopback TLS, the proxy in process): what the
request rules judged must be what the upstream is sent, and what the upstream answers must
come back scrubbed in every part of the response, the status line included."""

from __future__ import annotations

import io
import json
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
from _inspection_harness import InspectedRun as _Run
from _tls_upstream import OTHER_HOST, SECRET, TEST_HOST, Upstream, upstream


@pytest.fixture
def run(tmp_path: Path, workspace: Path) -> Iterator[_Run]:
    with upstream(tmp_path) as (ca, server):
        port = server.port
        rules = workspace / "agent-permissions.json"
        rules.write_text(json.dumps({"network": {"requestRules": [
            {"host": f"{OTHER_HOST}:{port}", "methods": ["GET"], "paths": ["/repos/acme/*"]}]}}))
        grants = Grants(credential=(f"TOKEN@{TEST_HOST}:{port}/Authorization",), net=(f"127.0.0.1:{port}",
                        f"{OTHER_HOST}:{port}"), resolve=(f"{TEST_HOST}:{port}:127.0.0.1",
                                                          f"{OTHER_HOST}:{port}:127.0.0.1"))
        policy = capgate.load_policy(rules, workspace=workspace, grants=grants)
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO()))
        inspection = Inspection(resolve_credentials(policy, {"TOKEN": SECRET}), policy.network.request_rules,
                                (str(ca.ca_file),))
        with EgressProxy(gate, inspection=inspection) as proxy:
            try:
                yield _Run(proxy, inspection, server)
            finally:
                server.release.set()


def _targets(server: Upstream) -> list[Any]:
    return [r["target"] for r in server.requests]


@pytest.mark.parametrize("target", [
    "/repos/acme/..;/other/issues",        # Tomcat, Spring, Jetty: `..;` is `..` with a path parameter
    "/repos/acme/.;/../other/issues",
    "/repos/acme/x#/../../other/issues",   # a fragment is never sent; checked without it, sent with it
])
def test_request_rules_judge_what_is_sent(run: _Run, target: str) -> None:
    answer = run.get(OTHER_HOST, target)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert _targets(run.server) == []
    # control: a plain path the rule allows goes through
    ok = run.get(OTHER_HOST, "/repos/acme/issues;page=2")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    assert _targets(run.server) == ["/repos/acme/issues;page=2"]


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "x-http-method", "X-Method-Override"])
def test_a_method_override_header_does_not_pass_a_methods_rule(run: _Run, header: str) -> None:
    """``GET`` with ``X-HTTP-Method-Override: DELETE`` is a DELETE to servers that honour it:
    refused where a rule limits methods; the control: the same GET without it goes through."""
    answer = run.get(OTHER_HOST, "/repos/acme/tool", f"{header}: DELETE\r\n")
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert b"method override" in answer
    assert _targets(run.server) == []
    ok = run.get(OTHER_HOST, "/repos/acme/tool")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    assert _targets(run.server) == ["/repos/acme/tool"]


def test_status_line_is_scrubbed(run: _Run) -> None:
    answer = run.get(TEST_HOST, "/reason-echo", f"Authorization: Bearer {run.placeholder}\r\n")
    head = answer.split(b"\r\n", 1)[0]
    assert SECRET.encode() not in answer, head
    assert head.startswith(b"HTTP/1.1 401 ") and run.placeholder.encode() in head
    # control: the upstream did receive the real value
    assert [v for n, v in run.server.requests[-1]["headers"] if n.lower() == "authorization"] == \
        [f"Bearer {SECRET}"]


def test_malformed_upstream_answer_is_not_echoed_back(run: _Run) -> None:
    """h11's error for a malformed response quotes the offending line; the proxy sent that text
    to the child as its own 400 — upstream bytes, the credential included, unscrubbed."""
    answer = run.get(TEST_HOST, "/bad-header-echo", f"Authorization: Bearer {run.placeholder}\r\n")
    assert SECRET.encode() not in answer, answer[:300]
    assert answer.startswith(b"HTTP/1.1 502"), answer[:300]
    # control: the upstream did receive the real value, and a good answer still passes
    assert [v for n, v in run.server.requests[-1]["headers"] if n.lower() == "authorization"] == \
        [f"Bearer {SECRET}"]
    assert run.get(TEST_HOST, "/echo", f"Authorization: Bearer {run.placeholder}\r\n").startswith(b"HTTP/1.1 200")


def test_request_with_both_lengths_is_not_smuggled_past_the_rules(run: _Run) -> None:
    """Transfer-Encoding and Content-Length both: h11 frames by the first, but both were sent on,
    and a server that frames by Content-Length (the test upstream does) reads the chunked body
    as a second request the rules never saw (RFC 9112 6.3: an intermediary MUST drop the
    Content-Length before forwarding such a message)."""
    port = run.server.port
    hidden = (f"DELETE /repos/other/everything HTTP/1.1\r\nHost: {OTHER_HOST}:{port}\r\n"
              "Content-Length: 7\r\n\r\n").encode()
    head = (f"GET /repos/acme/x HTTP/1.1\r\nHost: {OTHER_HOST}:{port}\r\nContent-Length: 4\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    run.raw(OTHER_HOST, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden))
    assert [r["method"] for r in run.server.requests if r["method"] == "DELETE"] == [], run.server.requests
    # control: a chunked request alone is relayed whole
    body = b"hello"
    ok = run.raw(OTHER_HOST, (f"GET /repos/acme/y HTTP/1.1\r\nHost: {OTHER_HOST}:{port}\r\n"
                              "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
                 + b"5\r\nhello\r\n0\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    assert run.server.requests[-1]["target"] == "/repos/acme/y" and run.server.requests[-1]["body"] == body.decode()


def test_no_piece_of_the_value_comes_back(run: _Run) -> None:
    """A server quoting a cut piece of the credential header (its first 20 characters) gives
    no piece of the value back, whatever the child pads it with (pieces are scrubbed too)."""
    leaked = set()
    for pad in ("", "x" * 10):  # (the quote is the header's first 20 characters: 20, then 10 of the value)
        answer = run.get(TEST_HOST, "/short-echo", f"Authorization: {pad}{run.placeholder}\r\n")
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        leaked.add(answer.split(b"bad authorization: ", 1)[1][len(pad):])
    # control: the whole value is scrubbed where it is quoted whole
    assert SECRET.encode() not in run.get(TEST_HOST, "/echo", f"Authorization: {run.placeholder}\r\n")
    assert not any(piece and piece in SECRET.encode() for piece in leaked), leaked


def test_an_inspected_host_is_reached_through_the_upstream_proxy_when_chained(tmp_path: Path,
                                                                             workspace: Path) -> None:
    """A pod's proxy chained to the cluster's (``CAPGATE_UPSTREAM_PROXY``) has no other way
    out: an inspected connection goes through the upstream proxy too (a CONNECT there), and
    the credential is still injected. The control: the upstream proxy saw that CONNECT."""
    with upstream(tmp_path) as (ca, server):
        port = server.port
        grants = Grants(credential=(f"TOKEN@{TEST_HOST}:{port}/Authorization",), net=(f"127.0.0.1:{port}",),
                        resolve=(f"{TEST_HOST}:{port}:127.0.0.1",))
        policy = capgate.load_policy(None, workspace=workspace, grants=grants)
        outer_log = io.StringIO()
        outer = capgate.Gate(policy, audit=AuditLog(outer_log))
        inner = capgate.Gate(policy, audit=AuditLog(io.StringIO()))
        inspection = Inspection(resolve_credentials(policy, {"TOKEN": SECRET}), policy.network.request_rules,
                                (str(ca.ca_file),))
        with EgressProxy(outer) as cluster:
            assert isinstance(cluster.address, tuple)
            with EgressProxy(inner, inspection=inspection, upstream=cluster.address) as pod:
                placeholder = inspection.credentials.items[0].placeholder.decode()
                try:
                    answer = _Run(pod, inspection, server).get(TEST_HOST, "/echo",
                                                               f"Authorization: Bearer {placeholder}\r\n")
                finally:
                    server.release.set()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert SECRET.encode() not in answer
        seen = [v for r in server.requests for n, v in r["headers"] if n.lower() == "authorization"]
        assert seen == [f"Bearer {SECRET}"]
        assert f"{TEST_HOST}:{port}" in outer_log.getvalue()  # (it went through the cluster proxy)
