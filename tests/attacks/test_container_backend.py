"""The container backend (issue 12), for podman and for Docker, judged from the host side.

The seed's acceptance list by a native child (``tests/probes/native_probe.c``: no hooks can
see it) and by a Python child: secrets unreadable, no writes outside the write roots, the
network only through the egress proxy to allowed endpoints, shells and unlisted tools
refused; the limits (fork bomb, memory, wall time, file size) contained; the second layer on
its own (a deny-glob file the mounts could not hide, because it appeared during the run, is
refused by the gate inside and reaches the launcher's audit log); benign controls beside
each. After every test the runtime holds no container, volume or network it did not hold
before (the cache volume aside).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._container_helpers import (
    CACHE_VOLUME,
    RUNTIMES,
    build_test_image,
    leftovers,
    others_live_runs,
    require_runtime,
    run_owners,
)
from tests._namespace_helpers import build_probe
from tests.attacks.test_namespace_backend import LAUNCHER_MARK, _Listener
from tests.conftest import SECRET
from tests.integration._soft_helpers import audit_lines, capgate_run

pytestmark = pytest.mark.container


@pytest.fixture(scope="session", params=RUNTIMES)
def image(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    runtime = str(request.param)
    for name in build_test_image(runtime):
        yield runtime, name


@pytest.fixture
def clean(image: tuple[str, str]) -> Iterator[None]:
    """Nothing left behind: the runtime's containers, volumes and networks are the same after
    the test as before (the named cache volume is the one thing a run may create)."""
    exe = require_runtime(image[0])
    shared = os.environ.get("CI", "").lower() != "true"  # (a shared machine: only this session's image)
    before = leftovers(exe, image[1] if shared else None)
    yield
    after = leftovers(exe, image[1] if shared else None)
    if shared:
        # A shared machine: other suites' runs come and go. What this test left is what is new
        # and not theirs (a run whose launcher still lives; this test's launchers have ended).
        others = others_live_runs(exe)
        left = sorted(n for n in set(after[0]) - set(before[0]) if "capgate" in n and n not in others)
        assert not left, f"containers left behind: {left}"
        assert not {v for v in set(after[1]) - set(before[1]) if "capgate" in v and v != CACHE_VOLUME}
        assert not {n for n in set(after[2]) - set(before[2]) if "capgate" in n}
        return
    assert after[0] == before[0], f"containers left behind: {sorted(set(after[0]) - set(before[0]))}"
    assert [v for v in after[1] if v != CACHE_VOLUME] == [v for v in before[1] if v != CACHE_VOLUME]
    assert after[2] == before[2]


@pytest.fixture
def world(tmp_path: Path, image: tuple[str, str], clean: None) -> Iterator[dict[str, object]]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / "notes.txt").write_text("a home file that must not change\n")
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    (ws / ".env").write_text(SECRET)
    (ws / "output" / ".git" / "hooks").mkdir(parents=True)
    os.link(home / ".ssh" / "id_rsa", ws / "src" / "planted")
    os.link(home / "notes.txt", ws / "output" / "planted")
    (ws / "tools").mkdir()
    probe = build_probe(ws / "tools")
    host_sock = _Listener(__import__("socket").AF_UNIX, str(tmp_path / "host.sock"))
    ws_sock = _Listener(__import__("socket").AF_UNIX, str(ws / "dev.sock"))
    tcp = _Listener(__import__("socket").AF_INET, ("127.0.0.1", 0))
    yield {"home": home, "ws": ws, "probe": probe, "host_sock": host_sock, "ws_sock": ws_sock, "tcp": tcp,
           "tmp": tmp_path, "runtime": image[0], "image": image[1]}
    for listener in (host_sock, ws_sock, tcp):
        listener.close()


def _run(world: dict[str, object], *args: str, policy: dict[str, object] | None = None, timeout: float = 90,
         backend: str = "container") -> subprocess.CompletedProcess[str]:
    ws, home, tmp = Path(str(world["ws"])), Path(str(world["home"])), Path(str(world["tmp"]))
    extra: list[str] = []
    if policy is not None:
        path = tmp / "policy.json"
        path.write_text(json.dumps(policy))
        extra = ["--policy", str(path), "--allow-user-expansion"]
    return capgate_run(["run", "--backend", backend, "--runtime", str(world["runtime"]), "--image",
                        str(world["image"]), "--workspace", str(ws), *extra, "--", *args], home=home, cwd=tmp,
                       env_extra={"CAPGATE_TEST_MARK": LAUNCHER_MARK}, timeout=timeout)


def test_a_native_child_meets_every_refusal_in_the_container(world: dict[str, object]) -> None:
    ws, home, tmp = Path(str(world["ws"])), Path(str(world["home"])), Path(str(world["tmp"]))
    tcp = world["tcp"]
    assert isinstance(tcp, _Listener)
    mode_before = stat.S_IMODE(os.stat(ws / "src" / "app.py").st_mode)
    result = _run(world, str(world["probe"]),
                  "read", str(ws / "src" / "app.py"),
                  "write", str(ws / "output" / "ok.txt"), "benign",
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
                  "write", str(ws / "src" / "new.txt"), "x",
                  "exec", "/bin/sh",
                  "exec", "/usr/bin/cat",
                  "exec", str(world["probe"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 17, lines
    (control_read, control_write, env, planted_read, planted_write, host_sock, ws_sock, environ, chmod,
     bashrc, hook, key, tcp_line, outside_write, shell, tool, control_exec) = lines
    assert control_read == "read OK 12 [print('hi') ]"
    assert control_write == "write OK 6" and (ws / "output" / "ok.txt").read_text() == "benign"
    assert env == "read OK 0 []"  # covered: an empty read-only file
    assert planted_read == "read OK 0 []"
    assert planted_write.startswith("append ERR")
    assert (home / "notes.txt").read_text() == "a home file that must not change\n"
    assert (home / ".ssh" / "id_rsa").read_text() == SECRET
    assert host_sock == "unix ERR ENOENT"
    assert ws_sock.startswith("unix ERR")
    host_listener, ws_listener = world["host_sock"], world["ws_sock"]
    assert isinstance(host_listener, _Listener) and isinstance(ws_listener, _Listener)
    assert host_listener.connections == 0 and ws_listener.connections == 0
    assert environ.startswith("environ") and "FOUND" not in environ
    assert chmod.startswith("chmod ERR")
    assert stat.S_IMODE(os.stat(ws / "src" / "app.py").st_mode) == mode_before
    assert bashrc in ("create OK", "create ERR EACCES")  # (not planted before the run: nothing to bind on)
    assert hook.startswith("create ERR")  # .git/hooks is bound read-only
    assert not (ws / "output" / ".git" / "hooks" / "pre-commit").exists()
    assert key.startswith("read ERR")  # the real HOME is not in the container
    assert tcp_line.startswith("tcp ERR") and tcp.connections == 0  # --network=none
    assert outside_write.startswith("write ERR") and not (ws / "src" / "new.txt").exists()
    # shells and unlisted tools: in the image, refused (Landlock, allowShell: false); the
    # launched program itself may run again (the control)
    assert shell == "exec ERR EACCES" and tool == "exec ERR EACCES"
    assert control_exec == "exec OK 0"
    events = audit_lines(home)
    assert events[0]["event"] == "run.start" and events[0]["backend"] == "container"
    # created during the run by a program no hook sees: reported as a denial at exit, never silent
    assert (bashrc == "create OK") == (ws / "output" / ".bashrc").exists()
    if bashrc == "create OK":
        assert any(e.get("decision") == "deny" and e.get("source") == "launcher"
                   and str(e.get("target", "")).endswith("output/.bashrc") for e in events)


def test_a_python_child_meets_the_gate_inside(world: dict[str, object]) -> None:
    ws, home = Path(str(world["ws"])), Path(str(world["home"]))
    (ws / "agent.py").write_text(
        "import os, subprocess, sys\n"
        "from capgate import fs\n"
        "def t(label, f):\n"
        "    try:\n"
        "        print(label, 'OK', f())\n"
        "    except Exception as exc:\n"
        "        print(label, 'ERR', type(exc).__name__)\n"
        "print('in-sandbox', os.environ.get('AGENT_IN_SANDBOX'))\n"
        f"t('env', lambda: open({str(ws / '.env')!r}).read())\n"
        f"t('key', lambda: open({str(home / '.ssh' / 'id_rsa')!r}).read())\n"
        f"t('src-write', lambda: open({str(ws / 'src' / 'x.txt')!r}, 'w').write('x'))\n"
        f"t('out-write', lambda: open({str(ws / 'output' / 'a.txt')!r}, 'w').write('py'))\n"
        f"t('fs-write', lambda: fs.write_text({str(ws / 'output' / 'b.txt')!r}, 'via capgate.fs') or 'done')\n"
        f"t('fs-read', lambda: fs.read_text({str(ws / 'src' / 'app.py')!r}).strip())\n"
        "t('shell', lambda: subprocess.run(['sh', '-c', 'echo pwned']).returncode)\n"
        "t('tool', lambda: subprocess.run(['cat', '/etc/hostname']).returncode)\n"
    )
    result = _run(world, "python3", str(ws / "agent.py"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "in-sandbox 1",
        "env ERR PermissionDenied",
        "key ERR PermissionDenied",
        "src-write ERR PermissionDenied",
        "out-write OK 2",
        "fs-write OK 14",
        "fs-read OK print('hi')",
        "shell ERR PermissionDenied",
        "tool ERR PermissionDenied",
    ], result.stdout + result.stderr
    assert (ws / "output" / "a.txt").read_text() == "py"
    assert (ws / "output" / "b.txt").read_text() == "via capgate.fs"
    assert not (ws / "src" / "x.txt").exists()
    events = audit_lines(home)
    denied = {str(e["target"]).split(" ")[0] for e in events
              if e.get("source") == "child" and e.get("decision") == "deny"}
    assert str(ws / ".env") in denied and str(ws / "src" / "x.txt") in denied
    assert any(e.get("event") == "child.soft.activated" for e in events)


def test_the_inner_gate_alone_refuses_a_secret_that_appeared_during_the_run(world: dict[str, object]) -> None:
    """The mounts are made at start: a ``*.pem`` that appears in a write root afterwards is
    not covered. Only the gate inside the container stands between it and the Python child,
    and its refusal reaches the launcher's audit log outside. The control, a plain file that
    appears the same way, is read."""
    ws, home, tmp = Path(str(world["ws"])), Path(str(world["home"])), Path(str(world["tmp"]))
    late, benign = ws / "output" / "late.pem", ws / "output" / "late.txt"
    (ws / "wait.py").write_text(
        "import os, sys, time\n"
        "print('ready', flush=True)\n"
        "deadline = time.time() + 30\n"
        f"while not os.path.exists({str(late)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        f"print('txt', open({str(benign)!r}).read())\n"
        "try:\n"
        f"    print('pem', open({str(late)!r}).read())\n"
        "except PermissionError as exc:\n"
        "    print('pem refused', exc.rule)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN_SANDBOX", "SOFT_SANDBOX"))}
    env.pop("XDG_STATE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "capgate", "run", "--backend", "container", "--runtime",
                             str(world["runtime"]), "--image", str(world["image"]), "--workspace", str(ws), "--",
                             "python3", str(ws / "wait.py")], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        benign.write_text("plain")
        late.write_text(SECRET)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["txt plain", "pem refused filesystem.denyRead"] or \
        (out.splitlines()[0] == "txt plain" and out.splitlines()[1].startswith("pem refused")), out + err
    assert SECRET not in out
    events = audit_lines(home)
    assert any(e.get("source") == "child" and e.get("decision") == "deny" and e.get("target") == str(late)
               for e in events), events


def test_the_network_is_the_egress_proxy_only(world: dict[str, object]) -> None:
    from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer

    ws = Path(str(world["ws"]))
    allowed, other = LoopbackHTTPServer(), RecordingTCPServer()
    try:
        (ws / "net.py").write_text(
            "import os, socket, urllib.request\n"
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
        )
        policy = {"network": {"enabled": True, "allowedAddresses": [f"127.0.0.1:{allowed.port}"]}}
        result = _run(world, "python3", str(ws / "net.py"), policy=policy)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["urllib OK 200", "other ERR HTTPError", "direct ERR PermissionDenied",
                                              "net OK 200"], result.stdout + result.stderr
        assert sorted(str(r["path"]) for r in allowed.requests) == ["/n", "/u"]
        assert other.connections == 0
        # a native child: no route out but the proxy's loopback port (Landlock: TCP to it alone)
        native = _run(world, str(world["probe"]), "tcp", str(allowed.port), "tcp", "3128", policy=policy)
        assert native.returncode == 0, native.stderr
        direct, proxy_port = native.stdout.splitlines()
        assert direct.startswith("tcp ERR") and proxy_port.startswith("tcp OK")
        assert sorted(str(r["path"]) for r in allowed.requests) == ["/n", "/u"]
    finally:
        allowed.close()
        other.close()


LIMITS = {"wallTimeSeconds": 20, "maxProcesses": 24, "memoryMb": 160, "maxFileSizeMb": 1}


def test_a_fork_bomb_is_contained(world: dict[str, object]) -> None:
    ws = Path(str(world["ws"]))
    (ws / "bomb.py").write_text(
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('fork refused after', n)\n"
        "else:\n"
        "    print('forked', n)\n"
    )
    started = time.monotonic()
    result = _run(world, "python3", str(ws / "bomb.py"), policy={"limits": LIMITS})
    assert time.monotonic() - started < 20
    assert result.stdout.startswith("fork refused after"), result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) < 24


def test_memory_wall_time_and_file_size_are_contained(world: dict[str, object]) -> None:
    ws = Path(str(world["ws"]))
    # memory: the cgroup's limit kills the child (no swap on top)
    hog = _run(world, "python3", "-c", "b = bytearray(400 << 20); b[::4096] = b'x' * len(b[::4096]); print('ate')",
               policy={"limits": LIMITS})
    assert hog.returncode != 0 and "ate" not in hog.stdout
    control = _run(world, "python3", "-c", "b = bytearray(8 << 20); print('fine')", policy={"limits": LIMITS})
    assert control.returncode == 0 and control.stdout.strip() == "fine", control.stderr
    # file size: the write past maxFileSizeMb fails, the file stays below it
    big = ws / "output" / "big.bin"
    fsize = _run(world, "python3", "-c", f"open({str(big)!r}, 'wb').write(b'x' * (3 << 20))",
                 policy={"limits": LIMITS})
    assert fsize.returncode != 0
    assert big.stat().st_size <= 1 << 20
    # wall time: the container is killed at the limit
    started = time.monotonic()
    slow = _run(world, "python3", "-c", "import time; time.sleep(120)",
                policy={"limits": {**LIMITS, "wallTimeSeconds": 2}})
    assert time.monotonic() - started < 30
    assert slow.returncode != 0 and "wall-time limit" in slow.stderr, slow.stderr


def test_auto_picks_the_container_when_its_image_is_ready(world: dict[str, object]) -> None:
    ws, home = Path(str(world["ws"])), Path(str(world["home"]))
    result = _run(world, "true", backend="auto")
    assert result.returncode == 0, result.stderr
    assert "backend: container (auto: a container runtime answers and the image is built" in result.stderr
    assert audit_lines(home)[0]["backend"] == "container"
    # the control: without a ready image auto moves on (and says why)
    other = capgate_run(["run", "--runtime", str(world["runtime"]), "--image", "localhost/capgate:no-such-image",
                         "--workspace", str(ws), "--dry-run-policy", "--", "true"], home=home,
                        cwd=Path(str(world["tmp"])))
    assert other.returncode == 0 and "backend: container" not in other.stderr


def test_a_stopped_launcher_leaves_no_container_running(world: dict[str, object]) -> None:
    """SIGTERM to the launcher (``timeout``, CI cancellation) kills the container by name: the
    runtime's client alone going away would leave it running under Docker."""
    import signal

    ws, home, tmp = Path(str(world["ws"])), Path(str(world["home"])), Path(str(world["tmp"]))
    (ws / "sleep.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN_SANDBOX", "SOFT_SANDBOX"))}
    env.pop("XDG_STATE_HOME", None)
    env["HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "capgate", "run", "--backend", "container", "--runtime",
                             str(world["runtime"]), "--image", str(world["image"]), "--workspace", str(ws), "--",
                             "python3", str(ws / "sleep.py")], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        exe = require_runtime(str(world["runtime"]))
        ours = [n for n, owner in run_owners(exe).items() if owner == proc.pid]  # (not another suite's)
        assert ours, "the run's container was not running"  # (the control: it was there)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert time.monotonic() - started < 30
    assert "stopped by SIGTERM" in err
    assert not set(ours) & set(leftovers(exe)[0])
