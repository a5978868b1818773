"""How ``capgate run`` ends, through the real command: one message and nothing after it when
it cannot start; signals end the run like the child's exit does; a killed launcher's run
directory is removed by the next run."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, audit_lines, soft_by_default


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN_SANDBOX", "SOFT_SANDBOX"))}
    env.pop("XDG_STATE_HOME", None)
    env["HOME"] = str(home)
    return env


def _start(args: list[str], home: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "capgate", *soft_by_default(args)], cwd=cwd, env=_env(home),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _spawners_of(owner: int) -> list[int]:
    """Spawner processes (``capgate._sys.spawner``) serving the launcher ``owner``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"spawner._main" in w for w in words) and str(owner).encode() in words:
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int] | None, owner: int, timeout: float = 10.0) -> None:
    """Wait until nothing the launcher ``owner`` started is alive (its spawners; ``pids``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = _spawners_of(owner) + [p for p in pids or () if _alive(p)]
        if not alive:
            return
        time.sleep(0.02)
    raise AssertionError(f"still alive after the launcher exited: {alive}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    """Wait for the launcher *and* for every process that shares its stderr (``communicate``
    reads to EOF, which only comes once the spawner is gone too), then for any spawner of it
    that may have closed its stderr: a late message cannot be missed."""
    out, err = proc.communicate(timeout=timeout)
    _wait_gone(None, proc.pid)
    return proc.returncode, out, err


def _run_dirs(owner: int) -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"capgate-run-{owner}-")]


# -- start-up failures: one message, then nothing ---------------------------------------------
@pytest.mark.parametrize(("case", "code", "message"), [
    ("missing-workspace", 2, "capgate: policy error: workspace '{tmp}/nope' is not a directory (key: workspace)"),
    ("missing-policy", 2, "capgate: policy error: cannot read policy file {tmp}/nope.json: No such file or directory"),
    ("not-utf8-policy", 2, "capgate: policy error: {tmp}/bad.json: policy file is not UTF-8 (byte 19)"),
    ("unknown-command", 125, "capgate: sandbox refused to start: no-such-command-3c1e: command not found on PATH"),
    ("recursion", 125, "capgate: refusing to start: already in a capgate sandbox (AGENT_IN_SANDBOX=1); "
                       "sandboxes do not nest"),
])
def test_a_run_that_cannot_start_prints_one_line_and_nothing_after(
        ws: Path, home: Path, tmp_path: Path, case: str, code: int, message: str) -> None:
    """Each of these exits before any child: the spawner started in parallel with the policy
    load must neither outlive the launcher nor print (it used to die a moment later with a
    ``ProcessLookupError`` traceback from ``pidfd_open`` on the launcher's stderr)."""
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"version":1, "x":"\xff"}')
    args = {
        "missing-workspace": ["--workspace", str(tmp_path / "nope"), "--", "/bin/true"],
        "missing-policy": ["--workspace", str(ws), "--policy", str(tmp_path / "nope.json"), "--", "/bin/true"],
        "not-utf8-policy": ["--workspace", str(ws), "--policy", str(bad), "--", "/bin/true"],
        "unknown-command": ["--workspace", str(ws), "--", "no-such-command-3c1e"],
        "recursion": ["--workspace", str(ws), "--", "/bin/true"],
    }[case]
    env = _env(home)
    if case == "recursion":
        env["AGENT_IN_SANDBOX"] = "1"
    proc = subprocess.Popen([PY, "-m", "capgate", *soft_by_default(["run", *args])], cwd=ws, env=env,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, out, err = _finish(proc)
    assert (rc, out, err) == (code, "", message.format(tmp=tmp_path) + "\n")
    assert not _run_dirs(proc.pid)


def test_a_usage_error_ends_with_its_message(ws: Path, home: Path) -> None:
    proc = _start(["run", "--backend", "nope", "--", "/bin/true"], home, ws)
    rc, out, err = _finish(proc)
    assert rc == 2 and out == ""
    assert err.splitlines()[0].startswith("usage: capgate run")
    assert err.endswith("capgate run: error: argument --backend: invalid choice: 'nope' "
                        "(choose from 'auto', 'container', 'namespace', 'soft')\n")
    assert "Traceback" not in err


def test_a_run_that_starts_ends_with_the_summary(ws: Path, home: Path) -> None:
    """The control: a run that starts prints its banner and ends with the summary line; no
    process of it outlives it and nothing follows."""
    proc = _start(["run", "--workspace", str(ws), "--", PY, "-c", "print('ok')"], home, ws)
    rc, out, err = _finish(proc)
    assert (rc, out) == (0, "ok\n"), err
    assert err.splitlines()[-1].startswith("capgate: no denials"), err
    assert "Traceback" not in err and not _run_dirs(proc.pid)


# -- signals ------------------------------------------------------------------------------------
_SLEEPER = ("import os, sys, time\n"
            "open('output/started', 'w').write(str(os.getpid()))\n"
            "print(os.getpid(), flush=True)\n"
            "time.sleep(120)\n")


def _start_sleeper(ws: Path, home: Path) -> tuple[subprocess.Popen[str], int]:
    proc = _start(["run", "--workspace", str(ws), "--", PY, "-c", _SLEEPER], home, ws)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the child is running (and hooked: it wrote through the gate)
    assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else line
    return proc, int(line)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_launcher_ends_the_run_cleanly(ws: Path, home: Path, signum: int) -> None:
    """What ``timeout``, ``docker stop``, CI cancellation, Ctrl-C and a closed terminal send:
    the tree dies, the audit log ends with the run's own end record, the run directory goes,
    no traceback, exit 128+N."""
    proc, child = _start_sleeper(ws, home)
    assert _run_dirs(proc.pid), "the run directory exists while the run runs"
    proc.send_signal(signum)
    rc, _out, err = _finish(proc)
    _wait_gone([child], proc.pid)
    name = signal.Signals(signum).name
    assert rc == 128 + signum, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = err.splitlines()
    assert lines[-2] == f"capgate: stopped by {name}: the child's process tree was killed", err
    assert lines[-1].startswith("capgate: no denials"), err
    last = audit_lines(home)[-1]
    assert (last["event"], last["returncode"], last["signal"]) == ("run.end", 128 + signum, name)
    assert not _run_dirs(proc.pid)
    assert (ws / "output" / "started").read_text() == str(child)


def test_a_signal_before_the_child_starts_is_one_line_too(ws: Path, home: Path, tmp_path: Path) -> None:
    """A signal while the launcher is still setting up (held here on a FIFO named as the audit
    log: opening it for writing blocks until a reader comes) stops it with one line and 128+N."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    proc = _start(["run", "--workspace", str(ws), "--audit-log", str(fifo), "--", "/bin/true"], home, ws)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the launcher is blocked opening the FIFO
        try:
            if Path(f"/proc/{proc.pid}/wchan").read_text() in ("wait_for_partner", "fifo_open"):
                break
        except OSError:
            pass
        time.sleep(0.02)
    else:
        raise AssertionError("the launcher never opened the audit-log FIFO")
    proc.send_signal(signal.SIGTERM)
    rc, out, err = _finish(proc)
    assert (rc, out) == (143, ""), err
    # The banner comes first (the audit log is opened after it); the stop line is the last.
    tail = f"capgate: audit log: {fifo}\ncapgate: stopped by SIGTERM before the child started\n"
    assert err.endswith(tail), err
    assert "Traceback" not in err
    assert not _run_dirs(proc.pid)


def test_the_next_run_removes_the_run_directory_of_a_killed_launcher(ws: Path, home: Path) -> None:
    """SIGKILL leaves the launcher no chance to clean up; the next run does, and never touches
    the directory of a launcher that is still running (the control)."""
    killed, killed_child = _start_sleeper(ws, home)
    killed.kill()
    killed.communicate(timeout=30)
    _wait_gone([killed_child], killed.pid)
    left = _run_dirs(killed.pid)
    assert left, "SIGKILL leaves the run directory behind"
    (ws / "output" / "started").unlink()
    running, running_child = _start_sleeper(ws, home)
    try:
        done = _start(["run", "--workspace", str(ws), "--", PY, "-c", "pass"], home, ws)
        rc, _out, err = _finish(done)
        assert rc == 0, err
        assert not _run_dirs(killed.pid), "the dead launcher's run directory is removed"
        assert _run_dirs(running.pid), "a live launcher's run directory is left alone"
    finally:
        running.send_signal(signal.SIGTERM)
        _finish(running)
        _wait_gone([running_child], running.pid)


def test_a_locked_run_directory_of_an_unknown_pid_is_left_alone(ws: Path, home: Path) -> None:
    """The pid in a run directory's name may belong to another pid namespace sharing the temp
    directory: a directory whose lock is held is never removed, whatever its pid says."""
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix=f"capgate-run-{dead.pid}-"))
    (stale / "home").mkdir()
    fd = os.open(stale, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        first = _start(["run", "--workspace", str(ws), "--", PY, "-c", "pass"], home, ws)
        assert _finish(first)[0] == 0
        assert (stale / "home").is_dir(), "held lock: left alone"
        fcntl.flock(fd, fcntl.LOCK_UN)
        second = _start(["run", "--workspace", str(ws), "--", PY, "-c", "pass"], home, ws)
        assert _finish(second)[0] == 0
        assert not stale.exists(), "free lock, dead pid: removed"
    finally:
        os.close(fd)
        if stale.exists():
            import shutil

            shutil.rmtree(stale)


def test_audit_log_of_a_signalled_run_is_valid_json(ws: Path, home: Path) -> None:
    proc, child = _start_sleeper(ws, home)
    proc.send_signal(signal.SIGINT)
    _finish(proc)
    _wait_gone([child], proc.pid)
    logs = sorted((home / ".local" / "state" / "capgate" / "audit").glob("*.jsonl"))
    events = [json.loads(line)["event"] for line in logs[-1].read_text().splitlines()]
    assert events[0] == "run.start" and events[-1] == "run.end" and events.count("run.end") == 1


# -- the same, deterministically: the two halves of the start-up fix -----------------------------
def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_launcher_that_starts_no_child_leaves_no_spawner_running(ws: Path, tmp_path: Path) -> None:
    """``launcher.run`` returns only once the spawner it prestarted is gone (the in-process
    view: here the owner stays alive, so a forgotten spawner would still be running)."""
    code = (
        "import sys\n"
        "from capgate import launcher\n"
        "from capgate._sys import spawner\n"
        f"rc = launcher.run(launcher.RunOptions(command=('/bin/true',), workspace={str(ws)!r}, "
        f"policy={str(tmp_path / 'nope.json')!r}))\n"
        "assert rc == 2, rc\n"
        "assert not spawner._blank, 'the prestarted spawner is still waiting'\n"
        "import os\n"
        "kids = open(f'/proc/self/task/{os.getpid()}/children').read().split()\n"
        "alive = [k for k in kids if open(f'/proc/{k}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z']\n"
        "print(len(alive))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n", done.stdout + done.stderr


@pytest.mark.parametrize("when", ["owner-gone", "socket-closed"])
def test_a_spawner_whose_owner_left_exits_without_a_word(when: str) -> None:
    """The spawner shares its owner's stderr: when the owner is gone before the spawner could
    watch it (``pidfd_open`` fails) or closed the socket before the greeting (``EPIPE``),
    it exits 0 silently. The control: a spawner that could talk greets and serves."""
    if when == "owner-gone":
        code = (
            "import os, subprocess, sys, _socket\n"
            "from capgate._sys import spawner\n"
            "dead = subprocess.Popen(['/bin/true']); dead.wait()\n"
            "a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
            "p = subprocess.Popen([sys.executable, '-I', '-S', '-c', spawner._BOOT,\n"
            "    os.path.dirname(spawner.__file__), str(dead.pid), str(b.fileno()), '', ''],\n"
            "    pass_fds=(b.fileno(),), env={})\n"
            "print(p.wait())\n"
        )
    else:
        code = (
            "from capgate._sys import spawner\n"
            "s = spawner.Spawner(blank=True)\n"
            "s.sock.close()\n"
            "print(s.proc.wait(timeout=30))\n"
            "ok = spawner.Spawner()\n"  # the control: a spawner that is listened to serves
            "print(ok.proc.poll() is None and ok.next_dir != '')\n"
            "ok.close()\n"
        )
    done = _python(code)
    assert done.stderr == "", done.stderr
    assert done.stdout.splitlines()[0] == "0"
    if when == "socket-closed":
        assert done.stdout.splitlines()[1] == "True"
