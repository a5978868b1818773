"""proc.run end to end: audit events, cwd rules, input, result attributes, cleanup."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

import capgate
from capgate import proc
from tests.conftest import audit_lines

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gate(make_gate):  # type: ignore[no-untyped-def]
    g = make_gate({"process": {"allowedCommands": ["python3", "cat", "git", "echo"]}})
    with g:
        yield g


def test_run_returns_completed_process_and_audits(gate, audit_stream, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = proc.run(["python3", "-c", "import os,sys; print(os.getcwd()); sys.exit(3)"])
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 3 and result.stdout == f"{workspace}\n".encode()
    assert result.truncated is False and result.timed_out is False and result.limits_fired == ()
    lines = audit_lines(audit_stream)
    decision = next(line for line in lines if line.get("op") == "proc.exec")
    assert decision["decision"] == "allow" and decision["resolved"] == os.path.realpath("/usr/bin/python3")
    event = next(line for line in lines if line.get("event") == "proc.run")
    assert event["exit_status"] == 3 and event["signal"] is None and event["limits_fired"] == []
    assert event["resolved"] == decision["resolved"] and "duration" in event


def test_a_repeated_command_is_decided_and_logged_every_time(gate, audit_stream, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """The second run of the same command line reuses the remembered decision, but the log
    still has every decision of every run: the cwd read, the exec, the run."""
    for _ in range(3):
        assert proc.run(["echo", "again"]).stdout == b"again\n"
    lines = audit_lines(audit_stream)
    cwd_reads = [x for x in lines if x.get("op") == "fs.read" and x.get("target") == str(workspace)]
    execs = [x for x in lines if x.get("op") == "proc.exec" and x.get("decision") == "allow"]
    runs = [x for x in lines if x.get("event") == "proc.run"]
    assert len(cwd_reads) == len(execs) == len(runs) == 3
    assert len({x["resolved"] for x in execs}) == 1 and len(gate.command_rules._memo) == 1


def test_signal_is_reported(gate, audit_stream) -> None:  # type: ignore[no-untyped-def]
    result = proc.run(["python3", "-c", "import os,signal; os.kill(os.getpid(), signal.SIGTERM)"])
    assert result.returncode == -15
    event = next(line for line in audit_lines(audit_stream) if line.get("event") == "proc.run")
    assert event["signal"] == "SIGTERM" and event["exit_status"] is None


def test_denial_is_audited_with_rule(gate, audit_stream) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(capgate.PermissionDenied) as info:
        proc.run(["sh", "-c", "id"])
    assert info.value.rule == "process.allowShell"
    denied = [line for line in audit_lines(audit_stream) if line.get("decision") == "deny"]
    assert denied and denied[-1]["rule"] == "process.allowShell" and denied[-1]["op"] == "proc.exec"


def test_input_is_fed(gate) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(300_000)
    assert proc.run(["cat"], input=data).stdout == data


def test_cwd_must_be_readable(gate, fake_home: Path, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(capgate.PermissionDenied):
        proc.run(["echo", "x"], cwd=str(fake_home / ".ssh"))
    with pytest.raises(capgate.PermissionDenied):
        proc.run(["echo", "x"], cwd="/")
    with pytest.raises(capgate.PermissionDenied):
        proc.run(["echo", "x"], cwd="no-such-dir")
    here = proc.run(["python3", "-c", "import os; print(os.getcwd())"], cwd="src")
    assert here.stdout == f"{workspace / 'src'}\n".encode()


def test_cwd_does_not_become_writable(gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    proc.run(["echo", "x"], cwd="src")
    assert not gate.check("fs.write", str(workspace / "src" / "new.txt")).allowed


def test_no_cgroup_or_tmp_left_behind(gate) -> None:  # type: ignore[no-untyped-def]
    root = "/sys/fs/cgroup/pids"
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    out = proc.run(["python3", "-c", "import os; print(os.environ['HOME'], os.environ['TMPDIR'])"]).stdout
    home, tmpdir = out.decode().split()
    assert not os.path.exists(home) and not os.path.exists(tmpdir)
    after = set(os.listdir(root)) if os.path.isdir(root) else set()
    for name in after - before:  # only an empty cgroup kept for this process's next run
        assert name.startswith(f"capgate-{os.getpid()}-")
        assert open(os.path.join(root, name, "cgroup.procs")).read() == ""


def test_private_dirs_are_fresh_and_gone_even_when_the_child_leaves_files(gate) -> None:  # type: ignore[no-untyped-def]
    """Files left in HOME/TMPDIR are removed with the directory (the spawner's own clean-up
    right after the exit); the next run gets a different, empty directory."""
    code = ("import os; t=os.environ['TMPDIR']; h=os.environ['HOME'];"
            "print(t, h, sorted(os.listdir(t)), sorted(os.listdir(h)));"
            "open(os.path.join(t, 'secret'), 'w').write('x'); os.mkdir(os.path.join(h, '.cache'));"
            "open(os.path.join(h, '.cache', 'k'), 'w').write('y')")
    seen = []
    for _ in range(3):
        tmpdir, home, in_tmp, in_home = proc.run(["python3", "-c", code]).stdout.decode().split(" ", 3)
        assert in_tmp == "[]" and in_home.strip() == "['tmp']"
        assert not os.path.lexists(home) and not os.path.lexists(tmpdir)
        seen.append(home)
    assert len(set(seen)) == 3


def test_private_dir_is_removed_when_a_daemon_outlives_the_child(gate) -> None:  # type: ignore[no-untyped-def]
    """A setsid double-forked daemon still writing into TMPDIR when the child exits: the tree
    is killed first, then the directory removed (the supervisor's clean-up path)."""
    code = textwrap.dedent("""
        import os, sys, time
        t = os.environ['TMPDIR']
        print(t, flush=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.close(1); os.close(2)
                i = 0
                while True:
                    open(os.path.join(t, f'f{i % 50}'), 'w').write('x'); i += 1
            os._exit(0)
        time.sleep(0.2)
    """)
    result = proc.run(["python3", "-c", code])
    tmpdir = result.stdout.decode().strip()
    assert result.returncode == 0 and tmpdir
    assert not os.path.lexists(tmpdir) and not os.path.lexists(os.path.dirname(tmpdir))


def test_no_gate_uses_ambient_defaults(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import capgate.gate as gate_mod

    monkeypatch.setattr(gate_mod, "_ambient", None)
    monkeypatch.chdir(workspace)
    with pytest.raises(capgate.PermissionDenied):
        proc.run(["echo", "x"])  # the defaults allow no command
    monkeypatch.setattr(gate_mod, "_ambient", None)
