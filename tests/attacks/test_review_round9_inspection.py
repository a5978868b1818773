"""Review round 9 against the inspecting relay's fast paths (``_relay_counted``'s in-place
scrubbing, ``BodyScrubber``): real loopback TLS, the real proxy in process, a real upstream."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _inspection_harness import InspectedRun as _Run
from _tls_upstream import SECRET, TEST_HOST, upstream

import capgate
from capgate.audit import AuditLog
from capgate.credentials import resolve_credentials
from capgate.inspection.relay import Inspection
from capgate.policy.sources import Grants
from capgate.proxy import EgressProxy


@pytest.fixture
def run(tmp_path: Path, workspace: Path) -> Iterator[_Run]:
    with upstream(tmp_path) as (ca, server):
        port = server.port
        rules = workspace / "agent-permissions.json"
        rules.write_text(json.dumps({}))
        grants = Grants(credential=(f"TOKEN@{TEST_HOST}:{port}/Authorization",), net=(f"127.0.0.1:{port}",),
                        resolve=(f"{TEST_HOST}:{port}:127.0.0.1",))
        policy = capgate.load_policy(rules, workspace=workspace, grants=grants)
        gate = capgate.Gate(policy, audit=AuditLog(io.StringIO()))
        inspection = Inspection(resolve_credentials(policy, {"TOKEN": SECRET}), policy.network.request_rules,
                                (str(ca.ca_file),))
        with EgressProxy(gate, inspection=inspection) as proxy:
            try:
                yield _Run(proxy, inspection, server)
            finally:
                server.release.set()


def _quoted(answer: bytes, pad: str) -> bytes:
    return answer.split(b"bad authorization: ", 1)[1].split(b"\n", 1)[0][len(pad):]


@pytest.mark.parametrize("route, status", [("/short-echo-late", b"401"), ("/short-echo-late-ok", b"200")])
def test_a_piece_in_a_body_read_after_the_head_is_scrubbed(run: _Run, route: str, status: bytes) -> None:
    """Finding 1: a ``Content-Length`` body the relay reads on its own (not held with the head)
    is scrubbed in its buffer and handed to the piece scrubber as a ``memoryview``, where
    ``needle in view`` compares single bytes and never matches: a server quoting 20 characters
    of the credential header gave 20 (or, padded, 10) real characters back. Pieces of it must
    be scrubbed whichever way the body was read."""
    leaked = set()
    for pad in ("", "x" * 5):
        answer = run.get(TEST_HOST, route, f"Authorization: {pad}{run.placeholder}\r\n")
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        leaked.add(_quoted(answer, pad))
    assert not any(piece and piece in SECRET.encode() for piece in leaked), leaked


def test_control_the_same_quote_held_with_the_head_is_scrubbed(run: _Run) -> None:
    """Control: the quote written in one piece with the head (held by h11) was already scrubbed."""
    answer = run.get(TEST_HOST, "/short-echo", f"Authorization: {run.placeholder}\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    quoted = answer.split(b"bad authorization: ", 1)[1]
    assert quoted and quoted not in SECRET.encode(), quoted


def test_a_response_header_name_does_not_carry_the_value(run: _Run) -> None:
    """Finding 4: the relay scrubbed response header *values*, the status line and bodies, not
    header *names*: a server naming a header after the credential it was sent (a token, as
    API keys are) gave it back, lower-cased by the parser (so a whole-value match also missed
    it). No name may carry the value or a piece of it, in either case."""
    answer = run.get(TEST_HOST, "/name-echo", f"Authorization: {run.placeholder}\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    secret = SECRET.lower().encode()
    assert not any(secret[i:i + 15] in head for i in range(len(secret) - 14)), head


def test_control_a_response_header_name_is_passed(run: _Run) -> None:
    """Control: other names pass as they are (lower-cased by the parser)."""
    answer = run.get(TEST_HOST, "/name-echo", "Authorization: nothing-secret\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"\r\nx-seen-nothing-secret: 1\r\n" in answer, answer[:300]
