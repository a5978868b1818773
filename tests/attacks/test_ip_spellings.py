"""Every host/URL spelling of the shared corpus gets its expected decision, and IP literal
spellings of 127.0.0.1 reach a real loopback server only when the address is listed."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest

import capgate
from capgate import net
from capgate.testing import run_attack_corpus
from tests._net_helpers import RecordingTCPServer, audit_lines, corpus_gate, make_net_gate, net_corpus

CORPUS = net_corpus()["inputs"]


def test_corpus_is_large_and_has_controls() -> None:
    assert len(CORPUS) >= 80
    assert sum(1 for e in CORPUS if e["expect"] == "allow") >= 10
    assert len({e["family"] for e in CORPUS}) >= 12


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i}-{e['family']}" for i, e in enumerate(CORPUS)])
def test_corpus_decision(entry: dict[str, str], tmp_path: Path) -> None:
    audit = io.StringIO()
    gate = corpus_gate(tmp_path, audit)
    decision = gate.check("net.connect", entry["input"])
    assert decision.allowed is (entry["expect"] == "allow"), (entry, decision)
    if "rule" in entry:
        assert decision.rule.startswith(tuple(entry["rule"].split("|"))), (entry, decision)
    lines = audit_lines(audit)
    assert len(lines) == 1 and lines[0]["decision"] == ("allow" if decision.allowed else "deny")


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i}-{e['family']}" for i, e in enumerate(CORPUS)])
def test_corpus_through_net_check(entry: dict[str, str], tmp_path: Path) -> None:
    gate = corpus_gate(tmp_path)
    with gate:
        if entry["expect"] == "allow":
            endpoint = net.check(entry["input"])
            assert endpoint.addresses and endpoint.port > 0
        else:
            with pytest.raises(capgate.PermissionDenied) as info:
                net.check(entry["input"])
            assert info.value.op == "net.connect"
    assert gate.audit.denied == (0 if entry["expect"] == "allow" else 1)


def test_offline_mode_denies_even_the_controls(tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": False, "allowedDomains": ["api.example.com"],
                                    "allowedAddresses": ["198.51.100.7"]})
    for entry in CORPUS:
        decision = gate.check("net.connect", entry["input"])
        assert not decision.allowed
        assert decision.rule in ("network.enabled", "gate.error")


def test_default_policy_is_offline(tmp_path: Path) -> None:
    gate = capgate.Gate(capgate.load_policy(None, workspace=tmp_path), audit=None)
    assert gate.check("net.connect", "https://api.example.com/").rule == "network.enabled"


def test_attack_corpus_runner_finds_nothing_with_net_check(tmp_path: Path) -> None:
    gate = corpus_gate(tmp_path)
    assert run_attack_corpus(net.check, kinds=["net"], gate=gate) == []


def test_attack_corpus_runner_catches_an_ungated_tool(tmp_path: Path) -> None:
    gate = corpus_gate(tmp_path)
    findings = run_attack_corpus(lambda target: f"would connect to {target}", kinds=["net"], gate=gate)
    assert len(findings) == sum(1 for e in CORPUS if e["expect"] == "deny")


LOOPBACK_SPELLINGS = [
    "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0X7F.1", "0177.0.0.1",
    "0177.1", "017700000001", "127.000.000.001", "127.0x0.0.1", "127.0.0.1.", "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]", "::ffff:7f00:1", "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
]


@pytest.fixture
def listener() -> RecordingTCPServer:
    server = RecordingTCPServer()
    yield server  # type: ignore[misc]
    server.close()


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_loopback_spelling_denied_and_server_never_contacted(
    spelling: str, listener: RecordingTCPServer, tmp_path: Path
) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": ["api.example.com"],
                                    "allowedPorts": [443, listener.port]})
    with gate, pytest.raises(capgate.PermissionDenied) as info:
        net.connect(spelling, listener.port, timeout=2)
    assert info.value.rule == "network.allowedAddresses"
    assert listener.connections == 0


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_loopback_spelling_reaches_127_0_0_1_when_listed(
    spelling: str, listener: RecordingTCPServer, tmp_path: Path
) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{listener.port}"]})
    with gate:
        sock = net.connect(spelling, listener.port, timeout=2)
    try:
        assert sock.getpeername()[0] in ("127.0.0.1", "::ffff:127.0.0.1")
        sock.sendall(b"ping")
    finally:
        sock.close()
    # The one accepted connection is this one (the server counts it after accept).
    for _ in range(50):
        if listener.connections:
            break
        time.sleep(0.02)
    assert listener.connections == 1


def test_listed_address_other_port_denied(listener: RecordingTCPServer, tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{listener.port}"]})
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    try:
        with gate, pytest.raises(capgate.PermissionDenied):
            net.connect("127.0.0.1", other.getsockname()[1], timeout=2)
        other.settimeout(0.2)
        with pytest.raises(OSError):
            other.accept()  # nobody connected
    finally:
        other.close()
