"""The soft sandbox's kernel layer (Landlock): what the audit hooks cannot see — a non-Python
child, or an allowed command a Python agent starts — still cannot write outside the write
roots, nor (allowShell false) execute anything but the command and the allowed commands.

Each attack runs through the real ``capgate run`` and plants a marker that must not appear.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from capgate._sys import landlock
from tests.integration._soft_helpers import audit_lines, capgate_run, empty_home, source_workspace, write_policy

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock"),
]
PY = sys.executable


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return source_workspace(tmp_path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return empty_home(tmp_path)


def test_non_python_child_cannot_write_outside_the_write_roots(ws: Path, home: Path) -> None:
    outside = ws.parent / "planted.txt"
    inside = ws / "src" / "edited.py"
    proc = capgate_run(["run", "--backend", "soft", "--", shutil.which("cp") or "/bin/cp", "src/app.py",
                        str(outside)], home=home, cwd=ws)
    assert proc.returncode != 0 and not outside.exists(), proc.stderr
    assert "kernel layer (Landlock)" in proc.stderr
    proc = capgate_run(["run", "--backend", "soft", "--", shutil.which("cp") or "/bin/cp", "src/app.py",
                        str(inside)], home=home, cwd=ws)
    assert not inside.exists(), "the workspace is read-only by default: src/ is not a write root"
    # the write root works (and was created by the launcher: it did not exist)
    proc = capgate_run(["run", "--backend", "soft", "--", shutil.which("cp") or "/bin/cp", "src/app.py",
                        "output/copy.py"], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert (ws / "output" / "copy.py").read_text() == "print('hi')\n"
    start = next(line for line in audit_lines(home) if line.get("event") == "run.start")
    assert start["landlock"] == {"write": True, "exec": True, "read": True, "connect": True, "signals": True}


def test_non_python_child_cannot_execute_unlisted_programs(ws: Path, home: Path, tmp_path: Path) -> None:
    mark = tmp_path / "MARK"
    # the launched command itself may run (the user chose it), but nothing it starts unless listed
    proc = capgate_run(["run", "--backend", "soft", "--", shutil.which("env") or "/usr/bin/env", "touch",
                        str(mark)], home=home, cwd=ws)
    assert proc.returncode != 0 and not mark.exists(), proc.stderr
    policy = write_policy(ws, {"process": {"allowedCommands": ["touch"]}})
    proc = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--",
                        shutil.which("env") or "/usr/bin/env", "touch", "output/ok"], home=home, cwd=ws)
    assert proc.returncode == 0 and (ws / "output" / "ok").exists(), proc.stderr


def test_allowed_command_started_by_a_python_agent_is_confined_too(ws: Path, home: Path) -> None:
    """The hooks decide that ``cp`` may run; what cp then writes is not the hooks' to see."""
    outside = ws.parent / "via-cp.txt"
    agent = ws / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import subprocess
        r = subprocess.run(["cp", "src/app.py", {str(outside)!r}], capture_output=True, text=True)
        print("cp exit", r.returncode, r.stderr.strip())
        r = subprocess.run(["cp", "src/app.py", "output/fine.py"])
        print("cp inside", r.returncode)
    """))
    policy = write_policy(ws, {"process": {"allowedCommands": ["cp"]}})
    proc = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--",
                        PY, str(agent)], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert not outside.exists(), proc.stdout
    assert "cp inside 0" in proc.stdout and (ws / "output" / "fine.py").exists()


def test_allow_shell_keeps_writes_confined_but_lets_the_shell_run(ws: Path, home: Path) -> None:
    outside = ws.parent / "from-shell.txt"
    policy = write_policy(ws, {"process": {"allowShell": True, "allowedCommands": ["sh"]}})
    script = f"echo hi > {outside}; echo inside > output/from-shell.txt"
    proc = capgate_run(["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--",
                        shutil.which("sh") or "/bin/sh", "-c", script], home=home, cwd=ws)
    assert not outside.exists(), proc.stderr
    assert (ws / "output" / "from-shell.txt").read_text() == "inside\n"


def test_non_python_child_cannot_read_outside_the_read_roots(ws: Path, home: Path) -> None:
    """The fake HOME's key is outside every read root: cat cannot open it; the workspace reads."""
    secret = home / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("CANARY-KEY-CONTENT\n")
    cat = shutil.which("cat") or "/bin/cat"
    proc = capgate_run(["run", "--backend", "soft", "--", cat, str(secret)], home=home, cwd=ws)
    assert "CANARY-KEY-CONTENT" not in proc.stdout and proc.returncode != 0, proc.stdout
    proc = capgate_run(["run", "--backend", "soft", "--", cat, "src/app.py"], home=home, cwd=ws)
    assert proc.returncode == 0 and proc.stdout == "print('hi')\n", proc.stderr
