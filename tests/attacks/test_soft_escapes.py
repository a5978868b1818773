"""Hostile plain-Python children (no capgate import) under the real ``capgate run``.

Each attack must be blocked *and* have no effect: the secret never printed, the loopback
server never contacted, no file created, no command run (a marker file it would write stays
absent). A benign control in the same run proves the child was not simply broken.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY, audit_lines, capgate_run

SECRET = "capgate-soft-test-secret-5b1e"


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    (ws / "src.py").write_text("print('source')\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    return {"home": home, "ws": ws, "outside": outside, "tmp": tmp_path}


def _child(world: dict[str, Path], body: str) -> tuple[int, str, str]:
    script = world["ws"] / "agent.py"
    script.write_text(textwrap.dedent(body))
    proc = capgate_run(["run", "--workspace", str(world["ws"]), "--", PY, str(script)],
                       home=world["home"], cwd=world["ws"])
    return proc.returncode, proc.stdout, proc.stderr


def test_secret_in_fake_home_is_never_read(world: dict[str, Path]) -> None:
    _rc, out, err = _child(world, f"""
        key = {str(world['home'] / '.ssh' / 'id_rsa')!r}
        for p in [key, "~/.ssh/id_rsa", "/proc/self/root" + key]:
            import os
            try:
                print("LEAK", open(os.path.expanduser(p)).read())
            except PermissionError as e:
                print("blocked", p)
        print("benign", open("src.py").read().strip())
    """)
    assert SECRET not in out + err
    assert out.count("blocked") == 3
    assert "benign print('source')" in out


def test_dir_fd_relative_open_cannot_reach_the_secret(world: dict[str, Path]) -> None:
    _rc, out, err = _child(world, f"""
        import os
        try:
            d = os.open({str(world['home'])!r}, os.O_RDONLY)
            print("LEAK", os.read(os.open(".ssh/id_rsa", os.O_RDONLY, dir_fd=d), 100))
        except PermissionError:
            print("blocked")
        os.chdir("output")
        w = os.open({str(world['ws'])!r}, os.O_RDONLY)  # an allowed directory descriptor
        try:
            os.open("x.txt", os.O_WRONLY | os.O_CREAT, dir_fd=w)  # ws/x.txt: not writable
            print("CREATED")
        except PermissionError:
            print("blocked")
    """)
    assert SECRET not in out + err
    assert out.split() == ["blocked", "blocked"], out + err
    assert not (world["ws"] / "x.txt").exists()


def test_write_outside_output_creates_nothing(world: dict[str, Path]) -> None:
    target = world["outside"] / "evil.txt"
    _rc, out, err = _child(world, f"""
        import os, shutil
        for action in (lambda: open({str(target)!r}, "w").write("x"),
                       lambda: open("src.py", "a").write("#"),
                       lambda: os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY),
                       lambda: os.rename("src.py", "output/src.py"),
                       lambda: os.symlink({str(world['home'] / '.ssh' / 'id_rsa')!r}, "output/key"),
                       lambda: os.mkdir({str(world['outside'] / 'd')!r}),
                       lambda: os.remove("src.py"),
                       lambda: shutil.rmtree({str(world['outside'])!r}),
                       lambda: open("output/.bashrc", "w")):
            try:
                action(); print("DONE")
            except PermissionError:
                print("blocked")
        open("output/report.md", "w").write("ok")
        print("benign")
    """)
    assert "DONE" not in out, out + err
    assert out.count("blocked") == 9
    assert not target.exists() and not (world["outside"] / "d").exists()
    assert (world["ws"] / "src.py").read_text() == "print('source')\n"
    assert not (world["ws"] / "output" / "key").exists() and not (world["ws"] / "output" / ".bashrc").exists()
    assert (world["ws"] / "output" / "report.md").read_text() == "ok"


def test_loopback_server_is_never_contacted(world: dict[str, Path]) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    contacted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                contacted.append(conn)
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        _rc, out, err = _child(world, f"""
            import socket, urllib.request
            tries = [lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2),
                     lambda: socket.create_connection(("localhost", {port}), timeout=2),
                     lambda: socket.create_connection(("2130706433", {port}), timeout=2),
                     lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port})),
                     lambda: urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=2),
                     lambda: socket.getaddrinfo("example.com", 443),
                     # (a loopback bind to port 0 is a capability probe, answered EADDRNOTAVAIL with
                     # nothing bound: test_soft_bind_probe.py; serving on a chosen port stays refused)
                     lambda: socket.socket().bind(("127.0.0.1", {port} + 1)),
                     lambda: socket.socket(socket.AF_UNIX).connect("/run/docker.sock")]
            for t in tries:
                try:
                    t(); print("CONNECTED")
                except OSError as exc:  # urllib wraps the denial in URLError
                    print("blocked" if "denied" in str(exc) else "OTHER " + repr(exc))
        """)
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert "CONNECTED" not in out, out + err
    assert out.count("blocked") == 8, out + err
    assert contacted == []


@pytest.mark.parametrize("attack", [
    "import subprocess; subprocess.run(['sh', '-c', 'echo pwned > MARK'])",
    "import subprocess; subprocess.run('echo pwned > MARK', shell=True)",
    "import os; os.system('echo pwned > MARK')",
    "import os; os.posix_spawn('/bin/sh', ['sh', '-c', 'echo pwned > MARK'], dict(os.environ))",
    "import os; os.posix_spawnp('sh', ['sh', '-c', 'echo pwned > MARK'], dict(os.environ))",
    "import os; os.execv('/bin/sh', ['sh', '-c', 'echo pwned > MARK'])",
    "import os, sys; os.execve(sys.executable, [sys.executable, '-c', 'open(\"MARK\",\"w\")'], {})",
    "import subprocess; subprocess.run(['/usr/bin/env', 'touch', 'MARK'])",
    ("import _posixsubprocess, os; _posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'echo pwned > MARK'], "
     "(b'/bin/sh',), True, (), None, None, -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, "
     "None, -1, None, False)"),
    ("import importlib, _posixsubprocess, sys; del sys.modules['_posixsubprocess']; "
     "import _posixsubprocess as p; print(p)"),
    "import ctypes; ctypes.CDLL('libc.so.6').system(b'echo pwned > MARK')",
    "import ctypes; ctypes.CDLL(None).system(b'echo pwned > MARK')",
    "import ctypes; fd = ctypes.CDLL(None).open(b'SECRETPATH', 0); print('LEAK', fd)",
    "import ctypes, ctypes.util; ctypes.cdll.LoadLibrary(ctypes.util.find_library('c') or 'libc.so.6')",
])
def test_process_and_native_escapes_are_blocked(world: dict[str, Path], attack: str) -> None:
    attack = attack.replace("SECRETPATH", str(world["home"] / ".ssh" / "id_rsa"))
    _rc, out, err = _child(world, f"""
        import os
        os.chdir("output")
        try:
            {attack}
            print("NOT BLOCKED")
        except (PermissionError, ImportError) as exc:
            print("blocked", type(exc).__name__)
    """)
    assert "NOT BLOCKED" not in out and "LEAK" not in out, out + err
    assert out.startswith("blocked"), out + err
    assert "pwned" not in out
    assert not (world["ws"] / "output" / "MARK").exists()
    denials = [line for line in audit_lines(world["home"]) if line.get("decision") == "deny"]
    assert denials and all(line.get("source") == "child" for line in denials)
