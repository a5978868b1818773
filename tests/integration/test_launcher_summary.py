"""The launcher's denial summary never says "no denials" about what it cannot see (design.md,
launcher step 6): kernel-layer refusals to processes that are not Python are invisible to it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, capgate_run, empty_home, launcher_messages, write_policy


def _last(stderr: str) -> str:
    return launcher_messages(stderr)[-1]


def test_a_python_child_that_runs_only_python_gets_the_plain_summary(ws: Path, home: Path) -> None:
    done = capgate_run(["run", "--workspace", str(ws), "--", PY, "-c", "open('output/x', 'w').write('1')"],
                       home=home, cwd=ws)
    assert done.returncode == 0, done.stderr
    assert _last(done.stderr).startswith("capgate: no denials ("), done.stderr
    assert "not observable" not in done.stderr


def test_a_native_command_never_gets_no_denials(ws: Path, home: Path) -> None:
    """``cat`` of a file outside the read roots is refused by Landlock; the launcher cannot
    see that, and says so instead of "no denials"."""
    done = capgate_run(["run", "--workspace", str(ws), "--", "/bin/cat", "/etc/shadow"], home=home, cwd=ws)
    assert done.returncode != 0  # refused by the kernel layer
    last = _last(done.stderr)
    assert last.startswith("capgate: no denials seen (") and "not observable" in last, done.stderr
    assert "cat is not Python" in last
    assert not any(line.startswith("capgate: no denials (") for line in done.stderr.splitlines())


def test_a_python_child_that_starts_native_programs_says_how_many(ws: Path, home: Path) -> None:
    policy = write_policy(ws, {"process": {"allowedCommands": ["true"]}})
    code = "import subprocess\nfor _ in range(2):\n    subprocess.run(['true'], check=True)\n"
    done = capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--allow-user-expansion", "--",
                        PY, "-c", code], home=home, cwd=ws)
    assert done.returncode == 0, done.stderr
    last = _last(done.stderr)
    assert last.startswith("capgate: no denials seen from Python code ("), done.stderr
    assert "(2 execs of non-Python programs) are not observable" in last


def test_denials_are_listed_with_the_note_about_native_processes(ws: Path, home: Path) -> None:
    policy = write_policy(ws, {"process": {"allowedCommands": ["true"]}})
    code = ("import subprocess\nsubprocess.run(['true'], check=True)\n"
            "try:\n    open('/etc/shadow')\nexcept PermissionError:\n    pass\n")
    done = capgate_run(["run", "--workspace", str(ws), "--policy", str(policy), "--allow-user-expansion", "--",
                        PY, "-c", code], home=home, cwd=ws)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("fs.read" in line and "/etc/shadow" in line for line in lines), done.stderr
    assert lines[-2:] == ["  (refusals by the kernel layer to native processes (1 exec of non-Python programs) are not",
                          "   observable)"]


def test_a_python_child_that_never_activated_is_not_no_denials() -> None:
    """The child's hooks never said they were active (it died in start-up): the launcher saw
    nothing of it and must not call that "no denials"."""
    import io

    from capgate.audit import AuditLog
    from capgate.launcher import _summary

    audit = AuditLog(io.StringIO())
    assert _summary(audit, ["/usr/bin/python3"], True, 0, True).startswith("no denials (")  # the control
    line = _summary(audit, ["/usr/bin/python3"], True, 0, False)
    assert line.startswith("no denials seen from Python code (")
    assert "never activated its hooks" in line


def test_a_wall_time_kill_is_said_once(tmp_path: Path) -> None:
    """The launcher names the wall-time kill in one line, not again as 'limit reached'."""
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    home = empty_home(tmp_path)
    policy = tmp_path / "policy.json"
    policy.write_text('{"limits": {"wallTimeSeconds": 1}}')
    result = capgate_run(["run", "--policy", str(policy), "--workspace", str(ws), "--", "/bin/sleep", "30"],
                         home=home, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("wall-time limit") == 1, result.stderr
    assert "limit reached: wallTimeSeconds" not in result.stderr
