"""Soft sandbox: Python grandchildren keep the hooks, and the functions that raise no audit
event (``os.mkfifo/mknod``, pidfds, ``chroot``...) are guarded — honest uses still work.

Companion to ``test_review_net_proc_soft.py`` (which holds the attacks that were found): these
pin down the edges of the fixes, one ``capgate run`` per scenario group.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from capgate.errors import PolicyError
from capgate.policy.dump import check_launcher_file
from capgate.soft import HookSkippingOption, is_python_command, python_script_index

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from _soft_helpers import PY, capgate_run

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    home.mkdir()
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    return {"home": home, "ws": ws, "tmp": tmp_path}


def _run(world: dict[str, Path], body: str, policy: dict | None = None) -> dict[str, str]:
    """Run ``body`` as the agent; it calls ``report(name, value)``; returns name -> value."""
    script = world["ws"] / "agent.py"
    script.write_text("import json\n"
                      "def report(name, value):\n"
                      "    print('R ' + json.dumps([name, str(value)]), flush=True)\n"
                      + textwrap.dedent(body))
    args = ["run", "--workspace", str(world["ws"])]
    if policy is not None:
        pfile = world["tmp"] / "agent-policy.json"
        pfile.write_text(json.dumps({"version": 1, **policy}))
        args += ["--policy", str(pfile), "--allow-user-expansion"]
    proc = capgate_run([*args, "--", PY, str(script)], home=world["home"], cwd=world["ws"])
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("R "):
            name, value = json.loads(line[2:])
            out[name] = value
    assert "done" in out, proc.stdout + proc.stderr
    return out


ALLOW_PY = {"process": {"allowedCommands": [PY]}}


def test_python_grandchild_gets_the_hooks_back_or_is_refused(world: dict[str, Path]) -> None:
    tool = world["ws"] / "tool.py"
    tool.write_text(f"#!{PY} -I\nprint('unhooked')\n")
    tool.chmod(0o700)
    got = _run(world, """
        import os, subprocess, sys
        CODE = "from capgate.soft import installed; print(installed() is not None)"
        def attempt(name, fn):
            try:
                report(name, fn())
            except PermissionError as exc:
                report(name, "blocked " + str(exc))
        run = lambda env, argv=(): subprocess.run([sys.executable, *argv, "-c", CODE], env=env,
                                                  capture_output=True, text=True).stdout.strip()
        attempt("inherited", lambda: run(None))
        attempt("empty_env", lambda: run({}))
        attempt("path_only", lambda: run({"PATH": "/usr/bin:/bin"}))
        attempt("harmless_var", lambda: run({**os.environ, "PYTHONUNBUFFERED": "1"}))
        attempt("unbuffered_flag", lambda: run(None, ["-u", "-X", "utf8"]))
        attempt("pythonhome", lambda: run({**os.environ, "PYTHONHOME": "/tmp"}))
        attempt("platlibdir", lambda: run({**os.environ, "PYTHONPLATLIBDIR": "../../tmp"}))
        attempt("proxy", lambda: run({**os.environ, "CAPGATE_PROXY": "127.0.0.1:1"}))
        attempt("dup_key", lambda: run({**os.environ, b"PYTHONPATH": b"/tmp"}))
        attempt("posix_spawn_environ", lambda: os.posix_spawn(sys.executable, [sys.executable, "-c", "0"],
                                                              os.environ))
        attempt("execve_empty", lambda: os.execve(sys.executable, [sys.executable, "-c", "0"], {}))
        # the inherited environment, changed through os.environ / os.unsetenv
        os.environ["PYTHONPATH"] = "/tmp"
        attempt("changed_environ", lambda: run(None))
        attempt("execv_changed", lambda: os.execv(sys.executable, [sys.executable, "-c", "0"]))
        os.unsetenv("PYTHONPATH")
        attempt("unset_then_exec", lambda: os.execv(sys.executable, [sys.executable, "-c", "0"]))
        # an allowed script whose #! line runs Python with -I (the test wrote it)
        script = os.path.abspath("tool.py")
        attempt("shebang_isolated", lambda: subprocess.run([script], capture_output=True, text=True).stdout)
        report("done", 1)
    """, policy={"process": {"allowedCommands": [PY, str(tool)]}})
    for case in ("inherited", "empty_env", "path_only", "harmless_var", "unbuffered_flag"):
        assert got[case] == "True", (case, got[case])
    for case in ("pythonhome", "platlibdir", "proxy", "dup_key", "posix_spawn_environ", "execve_empty",
                 "changed_environ", "execv_changed", "unset_then_exec", "shebang_isolated"):
        assert got[case].startswith("blocked"), (case, got[case])
    assert "PYTHONHOME is set" in got["pythonhome"]
    assert "plain dict" in got["posix_spawn_environ"]
    assert "PYTHONPATH differs" in got["changed_environ"]
    assert "-I" in got["shebang_isolated"]


def test_functions_without_audit_events_are_guarded(world: dict[str, Path]) -> None:
    got = _run(world, """
        import os, signal, stat, sys, time
        def attempt(name, fn):
            try:
                report(name, fn())
            except PermissionError as exc:
                report(name, "blocked " + str(exc))
        attempt("fifo_in_output", lambda: (os.mkfifo("output/fifo"), stat.S_ISFIFO(os.lstat("output/fifo").st_mode))[1])
        attempt("file_node_in_output", lambda: os.mknod("output/node", stat.S_IFREG | 0o600) or "made")
        attempt("char_device", lambda: os.mknod("output/null", stat.S_IFCHR | 0o600, os.makedev(1, 3)))
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)  # the workspace: readable, not writable
        attempt("fifo_dir_fd_outside", lambda: os.mkfifo("x", dir_fd=dfd))
        attempt("chroot", lambda: os.chroot("output"))
        attempt("setpriority_user", lambda: os.setpriority(os.PRIO_USER, 0, 0))
        attempt("affinity_self", lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)) or "ok")
        attempt("no_wrapped", lambda: hasattr(os.mknod, "__wrapped__") or os.mknod.__name__)
        def reimport(name):
            del sys.modules[name]
            __import__(name)
            return "reimported"
        attempt("reimport_posix", lambda: reimport("posix"))
        # a pidfd for a process of this sandbox (a forked child) still works
        pid = os.fork()
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        def pidfd_kill():
            fd = os.pidfd_open(pid)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return os.waitpid(pid, 0)[1] & 0x7F
        attempt("pidfd_own_child", pidfd_kill)
        report("done", 1)
    """)
    assert got["fifo_in_output"] == "True"
    assert got["file_node_in_output"] == "made"
    assert got["char_device"].startswith("blocked") and "device" in got["char_device"]
    assert got["fifo_dir_fd_outside"].startswith("blocked"), got["fifo_dir_fd_outside"]
    assert not os.path.lexists(world["ws"] / "x")
    assert got["chroot"].startswith("blocked")
    assert got["setpriority_user"].startswith("blocked")
    assert got["affinity_self"] == "ok"
    assert got["no_wrapped"] == "mknod"
    assert got["reimport_posix"].startswith("blocked")
    assert got["pidfd_own_child"] == "9", got["pidfd_own_child"]


def test_connected_sendmsg_still_works(world: dict[str, Path]) -> None:
    got = _run(world, """
        import socket
        a, b = socket.socketpair()
        a.sendmsg([b"hi"])
        report("socketpair", b.recv(10).decode())
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.sendmsg([b"x"], [], 0, ("127.0.0.1", 9))
            report("udp", "sent")
        except PermissionError as exc:
            report("udp", "blocked " + str(exc))
        report("done", 1)
    """)
    assert got["socketpair"] == "hi"
    assert got["udp"].startswith("blocked") and "network is disabled" in got["udp"]


# -- the shared Python command-line check ---------------------------------------------------
@pytest.mark.parametrize("argv", [["python", "-I", "x.py"], ["python3", "-Esc", "0"], ["python3.11", "-bS"],
                                  ["python", "-W", "error", "-E"]])
def test_hook_skipping_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(HookSkippingOption):
        python_script_index(argv)


@pytest.mark.parametrize(("argv", "index"), [(["python", "-c", "-I"], None), (["python", "-u", "a.py", "-I"], 2),
                                             (["python", "-W", "I", "a.py"], 3), (["python", "-m", "x", "-S"], None),
                                             (["python", "--", "-E"], 2)])
def test_options_after_the_program_are_not_the_interpreter_s(argv: list[str], index: int | None) -> None:
    assert python_script_index(argv) == index


def test_is_python_command() -> None:
    assert is_python_command("/usr/bin/python3.11")
    assert is_python_command("/x/python")
    assert is_python_command(sys.executable)
    assert not is_python_command("/usr/bin/python3-config")
    assert not is_python_command("/usr/bin/pythonx")


# -- the policy file a child boots with ------------------------------------------------------
def _policy(tmp_path: Path, write: list[str]):  # type: ignore[no-untyped-def]
    from capgate.policy import load_policy

    ws = tmp_path / "pws"
    ws.mkdir(exist_ok=True)
    policy = load_policy(None, workspace=str(ws))
    import dataclasses

    return dataclasses.replace(policy, filesystem=dataclasses.replace(policy.filesystem, write=tuple(write)))


def test_launcher_policy_file_accepted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o711)
    os.chmod(run, 0o711)
    f = run / "policy.json"
    f.write_text("{}")
    f.chmod(0o400)
    check_launcher_file(str(f), _policy(tmp_path, [str(run / "home")]))


@pytest.mark.parametrize("problem", ["writable", "in_write_root", "symlink", "shared_dir"])
def test_agent_writable_policy_file_refused(tmp_path: Path, problem: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o1777 if problem == "shared_dir" else 0o700)
    f = run / "policy.json"
    f.write_text("{}")
    f.chmod(0o600 if problem == "writable" else 0o400)
    path = f
    if problem == "symlink":
        path = run / "link.json"
        path.symlink_to(f)
    write = [str(run)] if problem == "in_write_root" else []
    with pytest.raises(PolicyError):
        check_launcher_file(str(path), _policy(tmp_path, write))
    assert stat.S_ISREG(os.stat(f).st_mode)
