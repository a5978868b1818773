"""DNS rebinding and hostile resolvers: every answer is judged, the connection is pinned to
what was judged, and a second lookup never happens between check and use."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import capgate
from capgate import net
from capgate.resolver import ResolveError, SystemResolver
from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer, make_net_gate


class SequenceResolver:
    """Answers from a script, one entry per call (the last one repeats); counts calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return list(answer)


@pytest.fixture
def listener() -> RecordingTCPServer:
    server = RecordingTCPServer()
    yield server  # type: ignore[misc]
    server.close()


@pytest.fixture
def http_server() -> LoopbackHTTPServer:
    server = LoopbackHTTPServer()
    yield server  # type: ignore[misc]
    server.close()


def test_allowed_name_resolving_to_loopback_is_denied(listener: RecordingTCPServer, tmp_path: Path) -> None:
    resolver = SequenceResolver(["127.0.0.1"])
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"api.example.com:{listener.port}"]},
                         resolver=resolver)
    with gate, pytest.raises(capgate.PermissionDenied) as info:
        net.connect("api.example.com", listener.port, timeout=2)
    assert "127.0.0.1" in info.value.reason and "loopback" in info.value.reason
    assert info.value.rule == "network.allowedAddresses"
    assert listener.connections == 0


def test_rebinding_fetch_denied_and_server_never_contacted(http_server: LoopbackHTTPServer, tmp_path: Path) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"api.example.com:{http_server.port}"]},
                         resolver=SequenceResolver(["127.0.0.1"]))
    with gate, pytest.raises(capgate.PermissionDenied):
        net.fetch(f"http://api.example.com:{http_server.port}/secret", timeout=2)
    assert http_server.connections == 0 and http_server.requests == []


@pytest.mark.parametrize("answer", [
    ["::ffff:127.0.0.1"], ["::1"], ["10.0.0.5"], ["169.254.169.254"], ["64:ff9b::7f00:1"], ["2002:7f00:1::"],
    ["0.0.0.0"], ["100.64.0.1"], ["93.184.216.34", "127.0.0.1"], ["fd00::1"], ["fe80::1"],
])
def test_special_answers_denied_without_dialing(
    answer: list[str], listener: RecordingTCPServer, tmp_path: Path
) -> None:
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"api.example.com:{listener.port}"]},
                         resolver=SequenceResolver(answer))
    with gate, pytest.raises(capgate.PermissionDenied):
        net.connect("api.example.com", listener.port, timeout=2)
    assert listener.connections == 0


def test_connection_is_pinned_to_the_checked_answer(http_server: LoopbackHTTPServer, tmp_path: Path) -> None:
    # First answer: the listed loopback server. Any later lookup would say 10.0.0.5; there must be none.
    resolver = SequenceResolver(["127.0.0.1"], ["10.0.0.5"])
    gate = make_net_gate(
        tmp_path,
        {"enabled": True, "allowedDomains": [f"svc.internal:{http_server.port}"],
         "allowedAddresses": [f"127.0.0.1:{http_server.port}"]},
        resolver=resolver,
    )
    with gate:
        response = net.fetch(f"http://svc.internal:{http_server.port}/pinned", timeout=5)
    assert response.status == 200 and response.text() == "hello GET /pinned"
    assert resolver.calls == 1
    assert http_server.requests[0]["headers"]["Host"] == f"svc.internal:{http_server.port}"


def test_check_then_connect_rechecks_the_new_answer(listener: RecordingTCPServer, tmp_path: Path) -> None:
    # check() sees a public address (nothing is dialed); connect() decides again and sees loopback.
    resolver = SequenceResolver(["93.184.216.34"], ["127.0.0.1"])
    gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": [f"api.example.com:{listener.port}"]},
                         resolver=resolver)
    with gate:
        endpoint = net.check(f"api.example.com:{listener.port}")
        assert endpoint.addresses == ("93.184.216.34",)
        with pytest.raises(capgate.PermissionDenied):
            net.connect("api.example.com", listener.port, timeout=2)
    assert listener.connections == 0
    assert resolver.calls == 2


def test_system_resolver_localhost_denied_unless_listed(listener: RecordingTCPServer, tmp_path: Path) -> None:
    network = {"enabled": True, "allowedDomains": [f"localhost:{listener.port}"]}
    with make_net_gate(tmp_path, network), pytest.raises(capgate.PermissionDenied) as info:
        net.connect("localhost", listener.port, timeout=2)
    assert info.value.rule == "network.allowedAddresses"
    assert listener.connections == 0
    # Benign control: list loopback (both families) and the same name connects, to 127.0.0.1.
    network["allowedAddresses"] = [f"127.0.0.1:{listener.port}", f"[::1]:{listener.port}"]
    with make_net_gate(tmp_path, network, name="p2.json"):
        sock = net.connect("localhost", listener.port, timeout=2)
    assert sock.getpeername()[0] == "127.0.0.1"
    sock.close()


def test_resolver_errors_are_denials(tmp_path: Path) -> None:
    def broken(host: str, port: int) -> list[str]:
        raise RuntimeError("resolver exploded")

    def not_a_list(host: str, port: int) -> list[str]:
        return None  # type: ignore[return-value]

    for resolver in (broken, not_a_list, SequenceResolver([]), SequenceResolver(["localhost"]),
                     SequenceResolver(["127.1"]), SequenceResolver(["fe80::1%lo"])):
        gate = make_net_gate(tmp_path, {"enabled": True, "allowedDomains": ["api.example.com"]}, resolver=resolver)
        decision = gate.check("net.connect", "api.example.com:443")
        assert not decision.allowed
        assert decision.rule in ("network.resolve", "network.error"), decision


def test_system_resolver_has_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: object, **kwargs: object) -> list[object]:
        time.sleep(2)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    # Without the deadline the slow lookup would return [] (no error) after two seconds.
    with pytest.raises(ResolveError, match="longer than"):
        SystemResolver(timeout=0.2)("slow.example", 443)


def test_resolved_address_listed_with_other_port_is_denied(listener: RecordingTCPServer, tmp_path: Path) -> None:
    gate = make_net_gate(
        tmp_path,
        {"enabled": True, "allowedDomains": [f"svc.internal:{listener.port}"], "allowedAddresses": ["127.0.0.1:1"]},
        resolver=SequenceResolver(["127.0.0.1"]),
    )
    with gate, pytest.raises(capgate.PermissionDenied):
        net.connect("svc.internal", listener.port, timeout=2)
    assert listener.connections == 0
