"""Adversarial review of net, proc and the soft sandbox (public API and the real ``capgate``).

Every test asserts the *secure* behaviour, so each failure marks a hole that was found by
this review. Attacks that held are listed in the review report, not kept here. Only loopback
sockets are used; every child process is bounded in time and cleaned up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import capgate
from capgate import net, proc
from tests._net_helpers import LoopbackHTTPServer, RecordingTCPServer, make_net_gate
from tests.attacks._proc_helpers import PY, alive, no_process_with

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY as SOFT_PY
from _soft_helpers import capgate_run

pytestmark = pytest.mark.timeout(60)

SECRET = "capgate-review-secret-91c4"


# ---------------------------------------------------------------------------------------------
# soft sandbox: a hostile Python child under the real `capgate run`
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    return {"home": home, "ws": ws, "outside": outside, "tmp": tmp_path}


def _soft_child(world: dict[str, Path], body: str, *, policy: dict | None = None,
                timeout: float = 40) -> subprocess.CompletedProcess[str]:
    script = world["ws"] / "agent.py"
    script.write_text(textwrap.dedent(body))
    args = ["run", "--workspace", str(world["ws"])]
    if policy is not None:
        pfile = world["tmp"] / "agent-policy.json"
        pfile.write_text(json.dumps({"version": 1, **policy}))
        args += ["--policy", str(pfile), "--allow-user-expansion"]
    return capgate_run([*args, "--", SOFT_PY, str(script)], home=world["home"], cwd=world["ws"],
                       timeout=timeout)


def test_soft_udp_sendmsg_with_network_off_reaches_nothing(world: dict[str, Path]) -> None:
    """``socket.sendmsg(..., address)`` raises the audit event ``socket.sendmsg``, which the
    soft hooks do not handle: a UDP datagram leaves an offline sandbox (DNS-style exfil)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(1.0)
    port = udp.getsockname()[1]
    try:
        proc_ = _soft_child(world, f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendmsg([b"exfil"], [], 0, ("127.0.0.1", {port}))
                print("SENT")
            except PermissionError:
                print("blocked")
        """)
        try:
            data, _ = udp.recvfrom(100)
        except OSError:
            data = b""
    finally:
        udp.close()
    assert data == b"", "a datagram left the offline soft sandbox through socket.sendmsg"
    assert "SENT" not in proc_.stdout, proc_.stdout + proc_.stderr


def test_soft_tcp_fast_open_sendmsg_with_network_off_reaches_nothing(world: dict[str, Path]) -> None:
    """``sendmsg(..., MSG_FASTOPEN, addr)`` on a TCP socket connects without a
    ``socket.connect`` event (``sendto`` with MSG_FASTOPEN is caught; ``sendmsg`` is not)."""
    listener = RecordingTCPServer()
    try:
        proc_ = _soft_child(world, f"""
            import socket, time
            s = socket.socket()
            try:
                s.sendmsg([b"exfil"], [], socket.MSG_FASTOPEN, ("127.0.0.1", {listener.port}))
                print("SENT")
            except BlockingIOError:
                print("SENT (in progress)")
            except PermissionError:
                print("blocked")
            except OSError as exc:
                print("other", exc)
            time.sleep(0.3)
            try:
                s.send(b"exfil-after-connect")
            except OSError:
                pass
        """)
        time.sleep(0.5)
    finally:
        listener.close()
    assert listener.connections == 0, "the offline soft sandbox opened a TCP connection via sendmsg+MSG_FASTOPEN"
    assert "SENT" not in proc_.stdout, proc_.stdout + proc_.stderr


def test_soft_mknod_and_mkfifo_create_nothing_outside_write_roots(world: dict[str, Path]) -> None:
    """``os.mknod``/``os.mkfifo`` raise no audit event: files appear outside every write root,
    even at mandatory write-deny names such as ``~/.profile`` (a FIFO there hangs the next login
    shell)."""
    planted_file = world["outside"] / "PLANTED"
    planted_fifo = world["home"] / ".profile"
    proc_ = _soft_child(world, f"""
        import os, stat
        for action in (lambda: os.mknod({str(planted_file)!r}, stat.S_IFREG | 0o755),
                       lambda: os.mkfifo({str(planted_fifo)!r})):
            try:
                action(); print("CREATED")
            except PermissionError:
                print("blocked")
    """)
    assert not planted_file.exists() and not os.path.lexists(planted_fifo), proc_.stdout
    assert "CREATED" not in proc_.stdout


def test_soft_pidfd_signal_cannot_reach_a_process_outside_the_sandbox(world: dict[str, Path]) -> None:
    """``os.kill`` to a process outside the sandbox's session is denied, but
    ``os.pidfd_open`` + ``signal.pidfd_send_signal`` raise no audit event: the child can kill
    any process of the user (the launcher's spawner too, which crashes ``capgate run``)."""
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        proc_ = _soft_child(world, f"""
            import os, signal
            try:
                os.kill({victim.pid}, signal.SIGKILL); print("KILLED via kill")
            except PermissionError:
                print("blocked kill")
            try:
                fd = os.pidfd_open({victim.pid})
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                print("KILLED via pidfd")
            except PermissionError:
                print("blocked pidfd")
        """)
        time.sleep(0.2)
        survived = victim.poll() is None
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait(timeout=5)
    assert "blocked kill" in proc_.stdout, proc_.stdout + proc_.stderr
    assert survived, "a process outside the sandbox was killed through pidfd_send_signal"


_GRANDCHILD_CASES = {
    "isolated_flag": "[sys.executable, '-I', '-c', CODE], env=None",
    "no_env_flag": "[sys.executable, '-E', '-c', CODE], env=None",
    "no_site_flag": "[sys.executable, '-S', '-c', CODE], env=None",
    "combined_flags": "[sys.executable, '-Esc', CODE], env=None",
    "empty_env": "[sys.executable, '-c', CODE], env={}",
    "env_without_boot_path": "[sys.executable, '-c', CODE], "
                             "env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}",
    "forged_policy": "[sys.executable, '-c', CODE], env={**os.environ, 'CAPGATE_POLICY': WIDE}",
}


@pytest.mark.parametrize("case", sorted(_GRANDCHILD_CASES))
def test_soft_python_grandchild_cannot_start_without_the_hooks(world: dict[str, Path], case: str) -> None:
    """With python an allowed command, the launcher refuses ``-I/-E/-S`` for the agent itself,
    but the soft hooks let the agent start a Python grandchild with those flags, without the
    boot ``PYTHONPATH``, or with ``CAPGATE_POLICY`` pointing at a policy it wrote: that
    grandchild runs unhooked (or under the forged policy) and reads ``~/.ssh/id_rsa``."""
    key = world["home"] / ".ssh" / "id_rsa"
    call = _GRANDCHILD_CASES[case]
    proc_ = _soft_child(world, f"""
        import json, os, subprocess, sys
        CODE = "print('GOT', open({str(key)!r}).read())"
        WIDE = os.path.abspath("output/wide.json")
        from capgate.soft import installed
        from capgate.policy.dump import policy_to_dict
        d = policy_to_dict(installed().policy)
        d["filesystem"]["denyRead"] = []
        d["filesystem"]["read"] = ["/"]
        with open(WIDE, "w") as fh:
            json.dump(d, fh)
        try:
            r = subprocess.run({call}, capture_output=True, text=True, timeout=20)
            print(r.stdout, r.stderr[-300:])
        except PermissionError as exc:
            print("blocked", exc)
    """, policy={"process": {"allowedCommands": [SOFT_PY]}})
    assert SECRET not in proc_.stdout + proc_.stderr, proc_.stdout


# ---------------------------------------------------------------------------------------------
# proc.run
# ---------------------------------------------------------------------------------------------


def _git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(ws), "-c", "user.email=r@example.invalid", "-c", "user.name=r", *args],
                   check=True, capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(ws.parent)})


_HOSTILE_GIT = {
    # case: (extra .git/config text with {mark}, .gitattributes, argv)
    "filter_clean_on_add": ('[filter "evil"]\n\tclean = touch {mark}; cat\n', "* filter=evil\n",
                            ["git", "add", "a.txt"]),
    "filter_smudge_on_checkout": ('[filter "evil"]\n\tsmudge = touch {mark}; cat\n', "* filter=evil\n",
                                  ["git", "checkout", "--", "a.txt"]),
    "diff_textconv_on_show": ('[diff "evil"]\n\ttextconv = touch {mark}; cat\n', "* diff=evil\n",
                              ["git", "show", "HEAD"]),
    "alias_runs_shell": ("[alias]\n\tst = !touch {mark}\n", "", ["git", "st"]),
}


@pytest.mark.parametrize("case", sorted(_HOSTILE_GIT))
def test_hostile_repo_config_drivers_cannot_run_code(case: str, make_gate, workspace: Path,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    """A malicious repository's own ``.git/config`` (the threat the existing fsmonitor/pager
    test covers) can also name filter, textconv and alias commands; ``GIT_ENV`` neutralizes
    only a fixed key list, so ``git add/checkout/show`` run the repository's shell command."""
    config, attributes, argv = _HOSTILE_GIT[case]
    mark = tmp_path / f"GIT-{case}"
    (workspace / "a.txt").write_text("one\n")
    _git(workspace, "init", "-q")
    _git(workspace, "add", "a.txt")
    _git(workspace, "commit", "-qm", "init")
    with open(workspace / ".git" / "config", "a") as fh:
        fh.write(config.format(mark=mark))
    if attributes:
        (workspace / ".gitattributes").write_text(attributes)
    (workspace / "a.txt").write_text("two\n")
    os.utime(workspace / "a.txt", (1, 1))  # stat differs from the index: git must re-read it
    with make_gate({"process": {"allowedCommands": ["git"]}}):
        try:
            proc.run(argv, timeout=10)
        except capgate.PermissionDenied:
            pass
    assert not mark.exists(), f"{' '.join(argv)} ran a command named by the repository's .git/config"


@pytest.mark.parametrize("option", [
    ["-xf", "a.tar", "--to-command=touch {mark}"],
    ["-xf", "a.tar", "-C", "output", "--checkpoint=1", "--checkpoint-action=exec=touch {mark}"],
    ["-cf", "output/b.tar", "--use-compress-program=touch {mark}", "src"],
    ["-cf", "output/b.tar", "-I", "touch {mark}", "src"],
], ids=["to-command", "checkpoint-action", "use-compress-program", "dash-I"])
def test_allowed_tar_cannot_run_a_shell(option: list[str], make_gate, workspace: Path,  # type: ignore[no-untyped-def]
                                        tmp_path: Path) -> None:
    """``tar`` is a data tool a user may allow (allowShell false), but four of its options run
    a command through ``/bin/sh -c``: an unrecognised trampoline, with no argument rules."""
    import tarfile

    mark = tmp_path / "TAR-MARK"
    with tarfile.open(workspace / "a.tar", "w") as tar:
        tar.add(workspace / "src" / "app.py", arcname="app.py")
    argv = ["tar", *(a.replace("{mark}", str(mark)) for a in option)]
    with make_gate({"process": {"allowedCommands": ["tar"]}}):
        try:
            proc.run(argv, timeout=10)
        except capgate.PermissionDenied:
            pass
    assert not mark.exists(), f"{argv} ran a shell command with allowShell false"


def _writable_cgroup_roots() -> list[str]:
    roots = ["/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/unified/cgroup.procs", "/sys/fs/cgroup/cgroup.procs"]
    return [r for r in roots if os.path.exists(r) and os.access(r, os.W_OK)]


@pytest.mark.skipif(not _writable_cgroup_roots(), reason="needs a writable cgroup root (root user)")
def test_cgroup_escapee_does_not_survive_the_wall_time(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """The supervisor relies on the run's pids cgroup to find a ``setsid`` double-fork. A
    descendant that may write a cgroup root's ``cgroup.procs`` (root, or a delegated subtree)
    moves itself out, and then survives the wall-time kill (and ``maxProcesses``)."""
    token = uuid.uuid4().hex
    pidfile = workspace / "output" / f"{token}.pid"
    code = textwrap.dedent(f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for procs in {_writable_cgroup_roots()!r}:
                    try:
                        open(procs, 'w').write(str(os.getpid()))
                    except OSError:
                        pass
                open(sys.argv[2], 'w').write(str(os.getpid()))
                time.sleep(30)
            os._exit(0)
        time.sleep(30)
    """)
    with make_gate({"process": {"allowedCommands": [PY]}, "limits": {"maxProcesses": 16, "wallTimeSeconds": 20}}):
        result = proc.run([PY, "-c", code, token, str(pidfile)], timeout=1.5)
    grandchild = 0
    try:
        assert result.timed_out
        deadline = time.monotonic() + 2
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
        time.sleep(0.3)
        survived = alive(grandchild)
    finally:
        if grandchild and alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert not survived, "a descendant that left the run's cgroup survived the wall-time kill"
    assert no_process_with(token)


# ---------------------------------------------------------------------------------------------
# net.fetch
# ---------------------------------------------------------------------------------------------


def test_fetch_overall_deadline_holds_against_a_slow_drip(tmp_path: Path) -> None:
    """``fetch`` promises ``4 * timeout`` overall, but the deadline is only checked between
    ``resp.read(n)`` calls, and one buffered read waits for all ``n`` bytes: a server that
    sends one byte every ``timeout - e`` seconds holds the agent for ``length * timeout``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    srv.settimeout(5)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
            for _ in range(20):
                if stop.wait(0.3):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    timeout = 0.5
    start = time.monotonic()
    try:
        with make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{port}"]}):
            try:
                net.fetch(f"http://127.0.0.1:{port}/", timeout=timeout)
            except OSError:
                pass
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join(5)
        srv.close()
    assert elapsed < 4 * timeout + 1.5, f"fetch(timeout={timeout}) took {elapsed:.1f}s (promised {4 * timeout}s)"


@pytest.mark.parametrize("name", ["Host ", "Host\t", "HOST "])
def test_fetch_host_lookalike_header_cannot_add_a_second_host(name: str, tmp_path: Path) -> None:
    """Only the exact name ``host`` is refused; ``"Host "`` passes ``_prepare_headers`` and
    ``http.client``'s name check and goes out as a second ``Host :`` line (lenient servers
    and proxies route on it): the documented 'Host is always the checked host' breaks."""
    listener = RecordingTCPServer()
    try:
        with make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{listener.port}"]}):
            try:
                net.fetch(f"http://127.0.0.1:{listener.port}/", headers={name: "evil.internal"}, timeout=1)
            except (ValueError, OSError):
                pass
        time.sleep(0.2)
    finally:
        listener.close()
    assert b"evil.internal" not in listener.received, listener.received


@pytest.mark.parametrize("framing", ["content-length", "transfer-encoding"])
def test_fetch_caller_framing_headers_cannot_smuggle_a_request(framing: str, tmp_path: Path) -> None:
    """Caller-set ``Content-Length``/``Transfer-Encoding`` are passed through, so the body is
    framed by the caller: with ``Connection: keep-alive`` the server reads a second request
    from the body, with a ``Host`` that was never checked (request smuggling)."""
    server = LoopbackHTTPServer()
    smuggled = b"GET /admin HTTP/1.1\r\nHost: evil.internal\r\nContent-Length: 0\r\n\r\n"
    if framing == "content-length":
        headers, body = {"Content-Length": "0", "Connection": "keep-alive"}, smuggled
    else:
        headers, body = {"Transfer-Encoding": "chunked", "Connection": "keep-alive"}, b"0\r\n\r\n" + smuggled
    try:
        with make_net_gate(tmp_path, {"enabled": True, "allowedAddresses": [f"127.0.0.1:{server.port}"]}):
            try:
                net.fetch(server.base + "/", method="POST", headers=headers, data=body, timeout=1)
            except (ValueError, OSError):
                pass
        time.sleep(0.3)
    finally:
        server.close()
    hosts = [r["headers"].get("Host") for r in server.requests]
    assert all(h == f"127.0.0.1:{server.port}" for h in hosts), server.requests
    assert len(server.requests) <= 1, [(r["method"], r["path"]) for r in server.requests]
