"""Adversarial review, round 5: the soft sandbox's kernel layer against a native child.

Each test asserts the secure behaviour, so it fails while the hole exists. As in
``test_soft_kernel_layer.py`` and ``test_review_round3.py``, a non-Python launched command
(``perl -e`` without modules: raw ``socket``/``connect``/``open`` system calls) stands for
native agent code, which the audit hooks do not see and the kernel layer (Landlock) is claimed
to confine. Everything runs through the real ``capgate run --backend soft`` with a fake HOME in
``tmp_path``; sockets are loopback or Unix sockets in ``tmp_path``, every wait is bounded, and
every server is closed.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from capgate._sys import landlock
from tests.integration._soft_helpers import capgate_run, empty_home, source_workspace, write_policy

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock"),
    pytest.mark.skipif(shutil.which("perl") is None, reason="needs perl as the native stand-in"),
]
PERL = shutil.which("perl") or "/usr/bin/perl"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return source_workspace(tmp_path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return empty_home(tmp_path)


class _Recorder:
    """A one-shot server (TCP or Unix) that records what the first client sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.got: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.got.append(conn.recv(4096))
                except OSError:
                    self.got.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.xfail(strict=True, reason=(
    "known limit: Landlock (ABI 7) does not check connect() to a named Unix socket; the hooks "
    "refuse it for Python, a native child can reach sockets it can name (README)"))
def test_native_child_cannot_connect_to_a_unix_socket_outside_the_sandbox(ws: Path, home: Path,
                                                                          tmp_path: Path) -> None:
    """Network off, no ``allowedUnixSockets``: a native child still connects to a pathname Unix
    socket outside every read and write root (stand-in for ``$SSH_AUTH_SOCK``, the D-Bus session
    bus, ``docker.sock``) and talks to it. Landlock handles neither ``connect`` on a pathname
    socket nor the path walk to it; only abstract sockets are scoped."""
    path = str(tmp_path / "agent-sock" / "agent.1")
    os.makedirs(os.path.dirname(path), mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    server = _Recorder(listener)
    code = (f'socket(S,1,1,0) or die "socket: $!"; connect(S, pack("S Z108", 1, "{path}")) or die "connect: $!";'
            ' syswrite(S, "UNIX-ESCAPE"); print "connected\\n";')
    try:
        proc = capgate_run(["run", "--backend", "soft", "--", PERL, "-e", code], home=home, cwd=ws)
    finally:
        time.sleep(0.3)
        server.close()
    assert b"UNIX-ESCAPE" not in b"".join(server.got), (
        "a native child connected to a Unix socket outside the sandbox with the network off: "
        + proc.stdout[-200:] + proc.stderr[-300:])


@pytest.mark.xfail(strict=True, reason=(
    "known limit: /proc is a read root of the kernel layer and the launcher's initial "
    "environment stays readable there (the spawner now starts with an empty one); keep secrets "
    "out of the launching shell's environment (README)"))
def test_native_child_cannot_read_the_launchers_environment(ws: Path, home: Path) -> None:
    """The child gets a clean environment so that the user's tokens stay out of it; but
    ``/proc`` is a read root, and both the spawner (the child's parent, inside its Landlock
    domain) and the launcher (its grandparent) carry the user's full environment:
    ``/proc/<pid>/environ`` of either hands it over."""
    canary = "R5-LAUNCHER-ENV-CANARY-93a1"
    code = r'''
        my $s = getppid(); my @pids = ($s);
        for (1..4) { open(my $h, "<", "/proc/$pids[-1]/stat") or last; my @f = split / /, <$h>;
                     last if $f[3] <= 1; push @pids, $f[3]; }
        for my $p (@pids) { if (open(my $h, "<", "/proc/$p/environ")) { local $/; my $d = <$h>;
                            $d =~ s/\0/\n/g; print $d; } }
    '''
    proc = capgate_run(["run", "--backend", "soft", "--", PERL, "-e", code], home=home, cwd=ws,
                       env_extra={"R5_API_TOKEN": canary})
    assert canary not in proc.stdout, (
        "a native child read the launcher's (unsanitized) environment through /proc/<pid>/environ")


@pytest.mark.xfail(strict=True, reason=(
    "known limit: Landlock limits TCP connects by port, not address: the proxy's port number is "
    "reachable on other addresses (README)"))
def test_native_child_cannot_bypass_the_proxy_on_the_proxys_port(ws: Path, home: Path) -> None:
    """Network on, one allowed address: the kernel layer is said to let TCP reach the egress
    proxy alone, but Landlock's net rule is a *port*, not an address: the child connects
    straight to any host listening on the proxy's port number (here 127.0.0.2:<proxy port>,
    not an allowed address), skipping the proxy and its decisions."""
    allowed = socket.socket()
    allowed.bind(("127.0.0.1", 0))
    allowed_port = allowed.getsockname()[1]
    policy = write_policy(ws, {"network": {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed_port}"]}})
    output = ws / "output"
    output.mkdir()
    port_file, ready_file = output / "port", output / "ready"
    code = r'''
        $|=1; my ($port) = $ENV{HTTP_PROXY} =~ /:(\d+)/ or die "no proxy";
        open(my $o, ">", "output/port.tmp") or die "port: $!"; print $o $port; close $o;
        rename("output/port.tmp", "output/port");
        for (1..100) { last if -e "output/ready"; select(undef, undef, undef, 0.1); }
        socket(S, 2, 1, 0) or die "socket: $!";
        if (connect(S, pack("S n C4 x8", 2, $port, 127, 0, 0, 2))) { syswrite(S, "PROXY-BYPASS"); print "connected\n"; }
        else { print "refused: $!\n"; }
    '''
    servers: list[_Recorder] = []

    def helper() -> None:  # outside the sandbox: listen on 127.0.0.2 at the proxy's port number
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not port_file.exists():
            time.sleep(0.05)
        if not port_file.exists():
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.2", int(port_file.read_text())))
        except OSError:
            sock.close()
            return
        servers.append(_Recorder(sock))
        ready_file.write_text("1")

    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    try:
        proc = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--",
                           PERL, "-e", code], home=home, cwd=ws, timeout=60)
        thread.join(5)
        time.sleep(0.3)
    finally:
        for server in servers:
            server.close()
        allowed.close()
    assert servers, "setup: the helper could not listen on 127.0.0.2 at the proxy's port: " + proc.stdout
    got = b"".join(b"".join(s.got) for s in servers)
    assert b"PROXY-BYPASS" not in got, (
        "a native child reached a non-allowed address directly on the proxy's port number: " + proc.stdout)


# ---------------------------------------------------------------------------------------------
# proc.run, allowShell false: the find -exec grammar
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("find") is None or shutil.which("sort") is None, reason="needs GNU find and sort")
def test_find_exec_plus_cannot_smuggle_denied_arguments(make_gate, workspace: Path,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """capgate ends a ``find -exec`` command at any ``+``; GNU find ends it at ``+`` only right
    after ``{}`` (otherwise ``+`` is an ordinary argument) and else at ``;``. So everything after
    a bare ``+`` reaches the inner program unchecked: ``process.deniedArguments`` and the
    built-in argument rules (``capgate.argrules``, git's rules) are skipped for it. Here the
    user denied ``sort -o``; ``find … -exec sort + -o FILE … ;`` runs it anyway. (The same
    smuggles ``tar -I …``; on this system tar hands that to ``/bin/sh`` and Landlock refuses it,
    but any option of an allowed program that execs directly is open.)"""
    from capgate import proc
    from capgate.errors import PermissionDenied

    (workspace / "+").write_text("b\na\n")  # what sort reads for the '+' operand
    out = tmp_path / "outside" / "sorted.txt"
    out.parent.mkdir()
    policy = {"process": {"allowedCommands": ["find", "sort"], "allowShell": False,
                          "deniedArguments": {"sort": ["-o*", "--output*"]}}}
    with make_gate(policy):
        with pytest.raises(PermissionDenied):  # the rule holds for the plain spelling
            proc.run(["find", ".", "-maxdepth", "0", "-exec", "sort", "-o", str(out), "+", ";"], timeout=15)
        try:
            proc.run(["find", ".", "-maxdepth", "0", "-exec", "sort", "+", "-o", str(out), ";"], timeout=15)
        except PermissionDenied:
            pass
    assert not out.exists(), "find -exec sort + -o … ran sort with an argument deniedArguments refuses"
