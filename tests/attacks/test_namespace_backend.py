"""The namespace backend against a native child (issue 11): every row the soft backend leaves
to the kernel layer alone is closed by the view.

A compiled C probe (``tests/probes/native_probe.c``: no audit hooks can see it) tries, in one
run, what a prompt-injected agent's native helper would: read a deny-listed file inside the
workspace, read and write through hard links planted to files outside, connect to host Unix
sockets (outside the workspace, and inside it but not listed), find the launcher's
environment in ``/proc``, ``chmod`` a file outside the write roots, plant ``output/.bashrc``
and ``output/.git/hooks/x``, read the real HOME's key, reach a host loopback port. Everything
is judged from the host side: the files, modes and listeners themselves. The same probe under
the soft backend shows the holes (so the probe can tell), and benign actions work in both.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._namespace_helpers import build_probe, require_namespace_backend
from tests.conftest import SECRET
from tests.integration._soft_helpers import PY, audit_lines, capgate_run

LAUNCHER_MARK = "capgate-launcher-environ-mark-5d1c"


class _Listener:
    """A host socket that records whether anyone connected."""

    def __init__(self, family: int, address: str | tuple[str, int]) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, object]]:
    require_namespace_backend()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / "notes.txt").write_text("a home file that must not change\n")
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    (ws / ".env").write_text(SECRET)
    (ws / "output" / ".git" / "hooks").mkdir(parents=True)
    os.link(home / ".ssh" / "id_rsa", ws / "src" / "planted")  # a hard link to a secret, in a read root
    os.link(home / "notes.txt", ws / "output" / "planted")  # and one in a write root
    (ws / "tools").mkdir()
    probe = build_probe(ws / "tools")
    host_sock = _Listener(socket.AF_UNIX, str(tmp_path / "host.sock"))
    ws_sock = _Listener(socket.AF_UNIX, str(ws / "dev.sock"))
    tcp = _Listener(socket.AF_INET, ("127.0.0.1", 0))
    yield {"home": home, "ws": ws, "probe": probe, "host_sock": host_sock, "ws_sock": ws_sock, "tcp": tcp,
           "tmp": tmp_path}
    for listener in (host_sock, ws_sock, tcp):
        listener.close()


def _actions(world: dict[str, object]) -> list[str]:
    ws, home, tmp = Path(str(world["ws"])), Path(str(world["home"])), Path(str(world["tmp"]))
    tcp = world["tcp"]
    assert isinstance(tcp, _Listener)
    return [
        "read", str(ws / "src" / "app.py"),  # control
        "write", str(ws / "output" / "ok.txt"), "benign",  # control
        "read", str(ws / ".env"),
        "read", str(ws / "src" / "planted"),
        "append", str(ws / "output" / "planted"), "PWNED",
        "unix", str(tmp / "host.sock"),
        "unix", str(ws / "dev.sock"),
        "environ", LAUNCHER_MARK,
        "chmod", str(ws / "src" / "app.py"), "777",
        "create", str(ws / "output" / ".bashrc"),
        "create", str(ws / "output" / ".git" / "hooks" / "pre-commit"),
        "read", str(home / ".ssh" / "id_rsa"),
        "tcp", str(tcp.port),
    ]


def _run(world: dict[str, object], backend: str) -> tuple[list[str], object]:
    ws, home = Path(str(world["ws"])), Path(str(world["home"]))
    result = capgate_run(["run", "--backend", backend, "--workspace", str(ws), "--", str(world["probe"]),
                          *_actions(world)], home=home, cwd=Path(str(world["tmp"])),
                         env_extra={"CAPGATE_TEST_MARK": LAUNCHER_MARK}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), result


def test_a_native_child_meets_every_refusal_in_the_namespace_view(world: dict[str, object]) -> None:
    ws, home = Path(str(world["ws"])), Path(str(world["home"]))
    mode_before = stat.S_IMODE(os.stat(ws / "src" / "app.py").st_mode)
    lines, _result = _run(world, "namespace")
    assert len(lines) == 13, lines
    (control_read, control_write, env, planted_read, planted_write, host_sock, ws_sock, environ, chmod,
     bashrc, hook, key, tcp_line) = lines
    # benign controls
    assert control_read == "read OK 12 [print('hi') ]"
    assert control_write == "write OK 6" and (ws / "output" / "ok.txt").read_text() == "benign"
    # a deny-listed file inside the workspace: an empty read-only file in the view
    assert env == "read OK 0 []"
    # hard links planted before the run: hidden, and the other names untouched
    assert planted_read == "read OK 0 []"
    assert planted_write.startswith("append ERR")
    assert (home / "notes.txt").read_text() == "a home file that must not change\n"
    assert (home / ".ssh" / "id_rsa").read_text() == SECRET
    # host Unix sockets: absent outside, covered inside; the listeners saw nothing
    assert host_sock == "unix ERR ENOENT"
    assert ws_sock.startswith("unix ERR")
    assert world["host_sock"].connections == 0 and world["ws_sock"].connections == 0  # type: ignore[attr-defined]
    # the launcher's /proc entries are not in the view's pid namespace
    assert environ.startswith("environ OK") and environ.endswith("found=0"), environ
    # metadata outside the write roots: a read-only mount
    assert chmod == "chmod ERR EROFS"
    assert stat.S_IMODE(os.stat(ws / "src" / "app.py").st_mode) == mode_before
    # mandatory write-deny: existing .git/hooks is read-only; a new .bashrc is reported at exit
    assert hook == "create ERR EROFS"
    assert not (ws / "output" / ".git" / "hooks" / "pre-commit").exists()
    assert bashrc == "create OK"
    denials = [e for e in audit_lines(home) if e.get("decision") == "deny"]
    assert any(e["op"] == "fs.write" and str(e["target"]).endswith("output/.bashrc") for e in denials), denials
    # the real HOME is not in the view; no route to the host's loopback
    assert key.startswith("read ERR")
    assert tcp_line.startswith("tcp ERR")
    assert world["tcp"].connections == 0  # type: ignore[attr-defined]


def test_the_probe_can_tell_the_soft_backend_leaves_these_to_landlock(world: dict[str, object]) -> None:
    """The same probe under the soft backend: the rows the view closes are open there (the
    documented limits of Landlock), so the namespace test above is not passing by accident."""
    lines, _result = _run(world, "soft")
    assert len(lines) == 13, lines
    env, planted_read, ws_sock, environ, chmod = lines[2], lines[3], lines[6], lines[7], lines[8]
    assert env.startswith("read OK") and "capgate-test-secret" in env
    assert planted_read.startswith("read OK") and "capgate-test-secret" in planted_read
    assert ws_sock == "unix OK"
    assert environ.endswith("found=0") is False, environ
    assert chmod == "chmod OK"
    # What neither hooks nor Landlock can refuse is at least reported: the soft backend's exit
    # report names the output/.bashrc the native child made.
    assert lines[9] == "create OK"
    home = Path(str(world["home"]))
    denials = [e for e in audit_lines(home) if e.get("decision") == "deny"]
    assert any(str(e["target"]).endswith("output/.bashrc") for e in denials), denials


def test_a_python_child_keeps_the_gate_inside_the_view(world: dict[str, object]) -> None:
    """The hooks still decide (and report) a Python child's actions inside the view, and the
    embedded API works there; the view adds the native layer below them."""
    ws, home = Path(str(world["ws"])), Path(str(world["home"]))
    (ws / "agent.py").write_text(
        "import os\n"
        "from capgate import fs\n"
        "def t(label, f):\n"
        "    try:\n"
        "        print(label, 'OK', repr(f())[:40])\n"
        "    except PermissionError as exc:\n"
        "        print(label, 'DENIED', getattr(exc, 'rule', type(exc).__name__))\n"
        "t('app', lambda: open('src/app.py').read())\n"
        "t('env', lambda: open('.env').read())\n"
        "t('fs-write', lambda: fs.write_text('output/from-fs.txt', 'via capgate.fs'))\n"
        "t('planted', lambda: open('src/planted').read())\n"
    )
    result = capgate_run(["run", "--backend", "namespace", "--workspace", str(ws), "--", PY, str(ws / "agent.py")],
                         home=home, cwd=Path(str(world["tmp"])), timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "app OK \"print('hi')\\n\""
    assert lines[1] == "env DENIED filesystem.denyRead[11]" or lines[1].startswith("env DENIED filesystem.denyRead")
    assert lines[2].startswith("fs-write OK") and (ws / "output" / "from-fs.txt").read_text() == "via capgate.fs"
    assert lines[3] == "planted OK ''"  # hidden by the view: an empty file
    events = audit_lines(home)
    assert events[0]["event"] == "run.start" and events[0]["backend"] == "namespace"
    assert any(e.get("source") == "child" and e.get("decision") == "deny" and str(e["target"]).endswith(".env")
               for e in events)


def test_the_network_is_the_egress_proxy_only(world: dict[str, object]) -> None:
    """With the network on, the view's only way out is the launcher's proxy (its Unix socket,
    offered inside on loopback): plain urllib, curl and capgate.net reach the allowed
    endpoint; another port is refused by the proxy; a direct connect reaches nothing."""
    import json

    from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer

    ws, home = Path(str(world["ws"])), Path(str(world["home"]))
    allowed, other = LoopbackHTTPServer(), RecordingTCPServer()
    try:
        policy = ws.parent / "net-policy.json"
        policy.write_text(json.dumps({"network": {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]},
                                      "process": {"allowedCommands": ["curl"]}}))
        (ws / "net.py").write_text(
            "import socket, subprocess, urllib.request\n"
            "from capgate import net\n"
            "def t(label, f):\n"
            "    try:\n"
            "        print(label, 'OK', f())\n"
            "    except Exception as exc:\n"
            "        print(label, 'ERR', type(exc).__name__)\n"
            f"t('urllib', lambda: urllib.request.urlopen('http://127.0.0.1:{allowed.port}/u', timeout=10).status)\n"
            f"t('other', lambda: urllib.request.urlopen('http://127.0.0.1:{other.port}/', timeout=10).status)\n"
            f"t('direct', lambda: socket.create_connection(('127.0.0.1', {allowed.port}), timeout=5).close())\n"
            f"t('net', lambda: net.fetch('http://127.0.0.1:{allowed.port}/n', timeout=10).status)\n"
            f"t('curl', lambda: subprocess.run(['curl', '-sS', '-o', '/dev/null', '-w', '%{{http_code}}',"
            f" 'http://127.0.0.1:{allowed.port}/c'], capture_output=True, timeout=20).stdout.decode())\n"
        )
        result = capgate_run(["run", "--backend", "namespace", "--policy", str(policy), "--allow-user-expansion",
                              "--workspace", str(ws), "--", PY, str(ws / "net.py")],
                             home=home, cwd=Path(str(world["tmp"])), timeout=90)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines == ["urllib OK 200", "other ERR HTTPError", "direct ERR PermissionDenied", "net OK 200",
                         "curl OK 200"], result.stdout + result.stderr
        assert sorted(str(r["path"]) for r in allowed.requests) == ["/c", "/n", "/u"]
        assert other.connections == 0
    finally:
        allowed.close()
        other.close()
