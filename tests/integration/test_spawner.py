"""The spawner (capgate._sys.spawner) under the supervisor: same containment, cheaper start.

Real children, a real pids cgroup where the machine has one; every test bounded in time and
checking that nothing of the run is left alive.
"""

from __future__ import annotations

import contextvars
import dataclasses
import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import capgate
from capgate import proc
from capgate._sys import spawner as spawner_mod
from capgate._sys.cgroup import cgroup_parent
from capgate.supervisor import supervise
from tests.attacks._proc_helpers import alive, no_process_with

pytestmark = pytest.mark.timeout(90)

PY = "/usr/bin/python3"
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "TMPDIR": "/nonexistent"}


@pytest.fixture
def limits(workspace: Path):  # type: ignore[no-untyped-def]
    base = capgate.default_policy(str(workspace)).limits
    return dataclasses.replace(base, max_processes=16, wall_time_seconds=20, cpu_seconds=5, memory_mb=512)


@pytest.fixture
def gate(make_gate):  # type: ignore[no-untyped-def]
    g = make_gate({"process": {"allowedCommands": ["python3", "echo", "true"]},
                   "limits": {"maxProcesses": 16, "wallTimeSeconds": 20, "memoryMb": 512, "cpuSeconds": 5}})
    with g:
        yield g


def _run_py(code: str, limits, workspace: Path, *args: str, **kw):  # type: ignore[no-untyped-def]
    return supervise([PY, "-c", textwrap.dedent(code), *args], executable=PY, limits=limits, env=ENV,
                     cwd=str(workspace), **kw)


def _spawner_pids() -> set[int]:
    me = str(os.getpid()).encode()
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if spawner_mod._BOOT.encode() in cmd and me in cmd:
            out.add(int(name))
    return out


def _pid_with(token: str, exclude: set[int]) -> int:
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude and int(name) != os.getpid():
            try:
                if token.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    return int(name)
            except OSError:
                continue
    raise AssertionError(f"no process with {token}")


def test_exec_failure_raises_the_matching_oserror(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        supervise(["nope"], executable=str(workspace / "no-such-program"), limits=limits, env=ENV,
                  cwd=str(workspace))
    plain = workspace / "not-executable"
    plain.write_text("#!/bin/sh\necho ran\n")
    plain.chmod(0o644)
    with pytest.raises(PermissionError):
        supervise([str(plain)], executable=str(plain), limits=limits, env=ENV, cwd=str(workspace))
    with pytest.raises(FileNotFoundError):
        supervise(["echo"], executable="/bin/echo", limits=limits, env=ENV, cwd=str(workspace / "missing"))
    ok = supervise(["echo", "x"], executable="/bin/echo", limits=limits, env=ENV, cwd=str(workspace))
    assert ok.returncode == 0 and ok.stdout == b"x\n"  # the spawner is still fine


def test_child_gets_only_its_descriptors_and_pass_fds_keep_their_numbers(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    r, w = os.pipe()
    high = 757  # (high and unusual: no leftover thread of an earlier test holds or closes this number)
    for _attempt in range(50):  # (EBUSY: another thread of this process is opening a file as fd 757 right now)
        try:
            os.dup2(w, high)
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.01)
    os.close(w)
    try:
        code = """
            import os
            os.write(757, b'through 57')
            print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))
        """
        result = _run_py(code, limits, workspace, pass_fds=(high,))
    finally:
        os.close(high)
    assert os.read(r, 100) == b"through 57"
    os.close(r)
    fds = eval(result.stdout.decode())
    assert set(fds) - {3} == {0, 1, 2, 757}, fds  # 3: the listdir handle itself


def test_limits_cgroup_and_session_apply_before_exec(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    code = """
        import os, resource
        cg = [l.strip() for l in open('/proc/self/cgroup') if ':pids:' in l or l.startswith('0::')]
        print(resource.getrlimit(resource.RLIMIT_AS)[1], resource.getrlimit(resource.RLIMIT_CORE),
              os.getsid(0) == os.getpid(), cg)
    """
    result = _run_py(code, limits, workspace)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith(f"{512 * 1024 * 1024} (0, 0) True")
    if cgroup_parent() is not None:
        assert "capgate-" in out and result.containment == "cgroup"
    for pid in _spawner_pids():  # the spawner itself went back to its own cgroup
        assert "capgate-" not in Path(f"/proc/{pid}/cgroup").read_text()


def test_concurrent_runs_from_threads(gate) -> None:  # type: ignore[no-untyped-def]
    results: dict[int, list[bytes]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            results[n] = [proc.run(["echo", f"{n}-{i}"]).stdout for i in range(5)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker, n)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for n in range(6):
        assert results[n] == [f"{n}-{i}\n".encode() for i in range(5)]


def test_spawner_killed_mid_run_kills_the_run_and_the_next_run_works(gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    token = uuid.uuid4().hex
    pidfile = workspace / "output" / f"{token}.pid"
    code = textwrap.dedent("""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            open(sys.argv[2], 'w').write(str(os.getpid()))
            time.sleep(60)
        time.sleep(60)
    """)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(proc.run(["python3", "-c", code, token, str(pidfile)], timeout=30))
        except OSError as exc:
            outcome.append(exc)

    t = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    t.start()
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    grandchild = int(pidfile.read_text())
    child = _pid_with(token, exclude={grandchild})
    spawner_pid = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert spawner_pid in _spawner_pids()  # the run's child hangs off the spawner
    os.kill(spawner_pid, signal.SIGKILL)
    t.join(30)
    assert not t.is_alive()
    assert outcome and isinstance(outcome[0], OSError), outcome
    end = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < end:
        time.sleep(0.01)
    assert not alive(grandchild) and no_process_with(token)
    assert proc.run(["echo", "again"]).stdout == b"again\n"


def test_fork_bomb_and_setsid_escape_through_the_spawner(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    token = uuid.uuid4().hex
    pidfile = workspace / "output" / f"{token}.pid"
    bomb = """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open(sys.argv[2], 'w').write(str(os.getppid()) + ' ' + str(os.getpid()))
                for _ in range(300):
                    try:
                        os.fork()
                    except OSError:
                        pass
                time.sleep(60)
            os._exit(0)
        time.sleep(60)
    """
    result = _run_py(bomb, limits, workspace, token, str(pidfile), timeout=3)
    assert result.timed_out
    if cgroup_parent() is not None:
        assert "maxProcesses" in result.limits_fired
    assert not alive(int(pidfile.read_text().split()[1]))
    assert no_process_with(token)


def test_child_parent_is_the_spawner_not_this_process(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = _run_py("import os; print(os.getppid())", limits, workspace)
    parent = int(result.stdout)
    assert parent != os.getpid() and parent in _spawner_pids()


def test_fallback_without_spawner_is_contained(limits, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def unavailable(*_a: object, **_k: object) -> None:
        raise spawner_mod.SpawnerUnavailable(38, "test")

    monkeypatch.setattr(spawner_mod, "acquire", unavailable)
    code = "import os; print(os.getppid(), [l.strip() for l in open('/proc/self/cgroup') if ':pids:' in l])"
    result = _run_py(code, limits, workspace)
    assert result.returncode == 0
    assert result.stdout.split()[0] == str(os.getpid()).encode()
    if cgroup_parent() is not None:
        assert b"capgate-" in result.stdout


def test_nothing_left_after_the_process_exits(tmp_path: Path) -> None:
    script = tmp_path / "runs.py"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        import capgate
        from capgate.supervisor import supervise
        limits = dataclasses.replace(capgate.default_policy({str(tmp_path)!r}).limits, max_processes=8)
        env = {{"PATH": "/usr/bin:/bin"}}
        for i in range(5):
            r = supervise(["echo", str(i)], executable="/bin/echo", limits=limits, env=env, cwd="/",
                          private_dirs=True)
            assert r.stdout == f"{{i}}\\n".encode()
        print(os.getpid())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = done.stdout.decode().strip()
    time.sleep(0.3)  # the spawners see their owner die
    parent = cgroup_parent()
    if parent is not None:
        assert not [n for n in os.listdir(parent) if n.startswith(f"capgate-{pid}-")]
    import tempfile

    from capgate._sys.spawner import private_parent

    for where in {tempfile.gettempdir(), private_parent()}:
        assert not [n for n in os.listdir(where) if n.startswith(f"capgate-run-{pid}-")]
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            assert not (spawner_mod._BOOT.encode() in cmd and pid.encode() in cmd)


def test_capture_false_inherits_this_process_stdin_and_stdout(limits, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The launcher path: the child reads our stdin and writes our stdout (fds 0 and 1)."""
    script = tmp_path / "inherit.py"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        import capgate
        from capgate.supervisor import supervise
        limits = dataclasses.replace(capgate.default_policy({str(workspace)!r}).limits, max_processes=8)
        r = supervise(["cat"], executable="/bin/cat", limits=limits, env={{"PATH": "/usr/bin"}}, cwd="/",
                      capture=False)
        sys.exit(r.returncode)
    """))
    done = subprocess.run([sys.executable, str(script)], input=b"from our stdin\n", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"from our stdin\n"


def test_prestarted_spawner_takes_its_limits_and_plan_before_its_first_child(
    limits, workspace: Path  # type: ignore[no-untyped-def]
) -> None:
    """``prestart`` starts a spawner blank; ``acquire`` hands it the rlimit table and the
    Landlock plan, and its children run under both (the launcher's start-up path)."""
    from capgate._sys import landlock
    from capgate._sys.rlimits import limit_table

    python = os.path.realpath(PY)
    exec_plan = landlock.plan([python, *landlock.exec_dependencies(python)], None)
    if exec_plan is None:
        pytest.skip("no Landlock on this kernel")
    table = tuple((row[0], row[1], row[2]) for row in limit_table(limits))
    before = _spawner_pids()
    spawner_mod.prestart()
    blank = spawner_mod._blank[-1]
    assert blank.blank and blank.limits is None
    spawner = spawner_mod.acquire(table, exec_plan)
    try:
        assert spawner is blank and not spawner.blank  # configured, not a second spawner
        assert spawner.confined and spawner.limits == table and spawner.confine == exec_plan
        pid = (_spawner_pids() - before).pop()
        as_limit = [line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                    if line.startswith("Max address space")]
        assert str(512 * 1024 * 1024) in as_limit[0]  # the spawner carries the run's limits itself
        with pytest.raises(spawner_mod.SpawnerUnavailable):
            spawner.configure(None, None)  # once only
    finally:
        spawner_mod.release(spawner)
    code = """
        import os, resource, subprocess
        print(resource.getrlimit(resource.RLIMIT_AS)[1])
        try:
            subprocess.run(['/bin/echo', 'escaped'])
        except PermissionError:
            print('exec refused')
    """
    result = supervise([PY, "-c", textwrap.dedent(code)], executable=PY, limits=limits, env=ENV,
                       cwd=str(workspace), confine=exec_plan)
    assert result.returncode == 0, result.stderr
    assert result.exec_confined
    assert result.stdout.decode().split() == [str(512 * 1024 * 1024), "exec", "refused"]


def test_a_used_spawner_refuses_a_late_configure(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """The server takes limits and a plan only before its first child: a ``configure``
    message after one is answered False and changes nothing."""
    spawner = spawner_mod.Spawner(blank=True)
    try:
        spawner.configure(None, None)
        assert not spawner.confined
        spawner_mod._send(spawner.sock, ("configure", "", ""))
        assert spawner_mod._recv(spawner.sock, spawner.buf) == ("configured", False, False)
    finally:
        spawner.close()
    assert spawner.proc.poll() is not None  # it exited on EOF


@pytest.mark.skipif(cgroup_parent() is None, reason="no pids cgroup on this machine")
def test_cgroup_migration_is_kept_warm_after_a_run_by_this_process_then_stops(
    limits, workspace: Path  # type: ignore[no-untyped-def]
) -> None:
    """After a run this process (never the spawner) makes no-op cgroup migrations for a
    quarter of a second, so the next run's join skips an RCU grace period; then it stops."""
    def warmers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "capgate-cgroup-warm" and t.is_alive()]

    result = supervise(["true"], executable="/bin/true", limits=limits, env=ENV, cwd=str(workspace))
    assert result.returncode == 0 and result.containment == "cgroup"
    assert warmers()  # the window after the run
    deadline = time.monotonic() + 5
    while warmers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not warmers()  # and nothing afterwards


@pytest.mark.skipif(cgroup_parent() is None, reason="no pids cgroup on this machine")
def test_spawner_holds_no_writable_cgroup_file_while_a_child_runs(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """A child can take its spawner's descriptors (same user, same Landlock domain:
    ``pidfd_getfd``, ``/proc/<ppid>/fd``). A writable ``cgroup.procs`` among them would let
    it leave the run's cgroup; while it runs, the spawner keeps only the read-only
    ``pids.current`` of the run."""
    supervise(["true"], executable="/bin/true", limits=limits, env=ENV, cwd=str(workspace))  # a used spawner
    code = """
        import os
        ppid = os.getppid()
        for name in os.listdir(f"/proc/{ppid}/fd"):
            try:
                target = os.readlink(f"/proc/{ppid}/fd/{name}")
                flags = open(f"/proc/{ppid}/fdinfo/{name}").read().split()[3]
            except OSError:
                continue
            print(target, flags)
    """
    result = _run_py(code, limits, workspace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines, "the child could not list its spawner's descriptors"
    cgroup_files = [line for line in lines if line.startswith(str(cgroup_parent()))]
    assert cgroup_files and all(line.split()[0].endswith("/pids.current") for line in cgroup_files), lines
    assert all(int(line.split()[1], 8) & 0o3 == os.O_RDONLY for line in cgroup_files), lines



@pytest.mark.skipif(cgroup_parent() is None or os.geteuid() != 0, reason="needs a pids cgroup and root")
def test_warming_never_moves_the_process_back_after_someone_moved_it(tmp_path: Path) -> None:
    """An operator (or a service manager) moves the process to another cgroup after capgate
    probed: the warming after a run must not pull it back into the cgroup it came from."""
    parent = cgroup_parent()
    assert parent is not None
    elsewhere = os.path.join(parent, f"capgate-test-elsewhere-{uuid.uuid4().hex[:8]}")
    os.mkdir(elsewhere)
    script = tmp_path / "moved.py"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, os, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        import capgate
        from capgate._sys.cgroup import cgroup_parent
        from capgate.supervisor import supervise
        assert cgroup_parent() is not None
        with open({os.path.join(elsewhere, "cgroup.procs")!r}, "w") as fh:
            fh.write(str(os.getpid()))
        limits = capgate.default_policy({str(tmp_path)!r}).limits
        supervise(["true"], executable="/bin/true", limits=limits, env={{"PATH": "/usr/bin"}}, cwd="/")
        time.sleep(0.1)
        print(open("/proc/self/cgroup").read())
    """))
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert os.path.basename(elsewhere) in done.stdout, done.stdout
    finally:
        for _ in range(100):
            try:
                os.rmdir(elsewhere)
                break
            except OSError:
                time.sleep(0.05)


@pytest.mark.skipif(cgroup_parent() is None, reason="no pids cgroup on this machine")
def test_a_forked_child_starts_with_its_own_warming_state(limits, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    from capgate._sys import cgroup as cgroup_mod

    supervise(["true"], executable="/bin/true", limits=limits, env=ENV, cwd=str(workspace))  # a window is open
    assert cgroup_mod._warm_running
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = not cgroup_mod._warm_running and cgroup_mod._warm_lock.acquire(timeout=1)
        os._exit(0 if ok else 1)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
