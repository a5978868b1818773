"""A loopback bind to port 0 in a soft-sandboxed child (urllib3's ``HAS_IPV6`` probe) is not a
denial, and still cannot become a server: the socket is bound deaf (a locked drop-all filter),
so a client in another process never gets a connection and a datagram never arrives.
Real command, real loopback sockets only."""

from __future__ import annotations

import errno
import select
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY, audit_lines, capgate_run, empty_home

PROBE = """
import socket
def has_ipv6(host):  # urllib3.util.connection._has_ipv6, as urllib3 2.x has it
    sock = None
    has = False
    if socket.has_ipv6:
        try:
            sock = socket.socket(socket.AF_INET6)
            sock.bind((host, 0))
            has = True
        except Exception:
            pass
    if sock:
        sock.close()
    return has
print("ipv6-probe", has_ipv6("::1"))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print("ipv4-udp-probe", s.getsockname()[1] > 0)
try:
    socket.socket().bind(("127.0.0.1", 8765))
    print("fixed-port BOUND")
except PermissionError as exc:
    print("fixed-port blocked", exc.rule)
try:
    socket.socket().bind(("0.0.0.0", 0))
    print("any-address BOUND")
except PermissionError as exc:
    print("any-address blocked", exc.rule)
"""


def test_loopback_port_zero_probe_is_not_a_denial(tmp_path: Path) -> None:
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    script = ws / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(script)], home=home, cwd=ws)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    socket_has_ipv6 = socket.has_ipv6
    assert lines["ipv6-probe"] == str(socket_has_ipv6), proc.stdout + proc.stderr
    assert lines["ipv4-udp-probe"] == "True", proc.stdout + proc.stderr
    assert lines["fixed-port"] == "blocked soft.listen"  # the refusal beside it still holds
    assert lines["any-address"] == "blocked soft.listen"
    events = audit_lines(home)
    denied = [e for e in events if e.get("decision") == "deny"]
    assert [e["target"] for e in denied] == ["bind ('127.0.0.1', 8765)", "bind ('0.0.0.0', 0)"], denied
    probes = [e for e in events if e.get("rule") == "soft.bindProbe"]
    assert probes and all(e["decision"] == "allow" for e in probes)
    assert "denied" in proc.stderr and "bind ('::1', 0)" not in proc.stderr.split("denied", 1)[1]


SERVER = """
import socket, sys, time
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen(8)
tcp.settimeout(4)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
udp.settimeout(0.5)
print("ports", tcp.getsockname()[1], udp.getsockname()[1], flush=True)
try:
    conn, peer = tcp.accept()
    print("ACCEPTED", peer, flush=True)
except OSError as exc:
    print("no-connection", type(exc).__name__, flush=True)
try:
    print("RECEIVED", udp.recvfrom(100), flush=True)
except OSError as exc:
    print("no-datagram", type(exc).__name__, flush=True)
for option in (26, 27):  # SO_ATTACH_FILTER (a new, accept-all filter), SO_DETACH_FILTER
    try:
        tcp.setsockopt(socket.SOL_SOCKET, option, b"\\0" * 16)
        print("FILTER-CHANGED", option, flush=True)
    except OSError as exc:
        print("filter-locked", option, exc.errno, flush=True)
"""


def test_a_real_server_attempt_still_fails(tmp_path: Path) -> None:
    """bind(port 0) + listen + accept in the child; a client in this (other) process
    connects and sends a datagram: nothing arrives, and the filter cannot be taken off."""
    home = empty_home(tmp_path)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    script = ws / "server.py"
    script.write_text(textwrap.dedent(SERVER))
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    child = subprocess.Popen([PY, "-m", "capgate", "run", "--backend", "soft", "--workspace", str(ws), "--", PY,
                              str(script)],
                             cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child did not start"
        first = child.stdout.readline().split()
        assert first[0] == "ports", first
        tcp_port, udp_port = int(first[1]), int(first[2])
        connected = False
        client = socket.socket()
        client.settimeout(1.5)
        try:
            client.connect(("127.0.0.1", tcp_port))
            connected = True
        except OSError:
            pass
        finally:
            client.close()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(3):
            sender.sendto(b"hello", ("127.0.0.1", udp_port))
            time.sleep(0.05)
        sender.close()
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not connected, "a client got a connection to the sandboxed child"
    assert "no-connection TimeoutError" in out and "ACCEPTED" not in out, out + err
    assert "no-datagram TimeoutError" in out and "RECEIVED" not in out, out + err
    assert f"filter-locked 26 {errno.EPERM}" in out and f"filter-locked 27 {errno.EPERM}" in out, out + err
    assert "FILTER-CHANGED" not in out, out + err
