"""With allowShell false, a proc.run tree may execute only allowed commands (Landlock).

The attacks: an allowed program that runs ``/bin/sh -c`` by itself (``awk`` ``system()``,
``sed``'s ``e`` command, ``os.system`` in an allowed interpreter), a copy of an allowed binary
under another name, a symlink named like an allowed command, a grandchild of the child. Each
plants a marker that must never appear; honest runs keep working.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from capgate import proc
from capgate._sys import landlock
from tests.conftest import audit_lines

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock"),
]
PY = sys.executable


def _py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def mark(tmp_path: Path) -> Path:
    return tmp_path / "MARK"


@pytest.mark.parametrize("argv", [
    ["awk", 'BEGIN { system("touch {mark}") }'],
    ["sed", "-n", "1e touch {mark}", "/etc/hostname"],
    ["sed", "-n", "s/.*/touch {mark}/e", "/etc/hostname"],
], ids=["awk-system", "sed-e", "sed-s-e"])
def test_allowed_tool_cannot_start_a_shell(make_gate, mark: Path, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    with make_gate({"process": {"allowedCommands": ["awk", "sed"]}}):
        result = proc.run([a.replace("{mark}", str(mark)) for a in argv], timeout=10)
    assert result.exec_confined is True
    assert not mark.exists(), result


def test_allowed_interpreter_cannot_start_anything_unlisted(make_gate, mark: Path, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    copy = workspace / "output" / "innocent"
    shutil.copy("/bin/sh", copy)
    (workspace / "output" / "python3").symlink_to("/bin/sh")
    code = f"""
        import os, subprocess, sys
        out = []
        out.append(os.system("touch {mark}"))
        for argv in (["/bin/sh", "-c", "touch {mark}"], ["/usr/bin/touch", "{mark}"],
                     ["{copy}", "-c", "touch {mark}"], ["{workspace}/output/python3", "-c", "touch {mark}"]):
            try:
                subprocess.run(argv)
                out.append("ran")
            except PermissionError:
                out.append("EACCES")
        # a grandchild that is allowed (this interpreter) is just as confined
        r = subprocess.run([sys.executable, "-c", "import os; print(os.system('touch {mark}'))"],
                           capture_output=True, text=True)
        out.append(r.stdout.strip())
        print(out)
    """
    with make_gate({"process": {"allowedCommands": [PY]}}):
        result = proc.run(_py(code), timeout=20)
    assert result.returncode == 0, result.stderr
    assert not mark.exists()
    assert result.stdout.decode().strip() == str([127 << 8, "EACCES", "EACCES", "EACCES", "EACCES", str(127 << 8)])


def test_allow_shell_true_lifts_the_restriction(make_gate, mark: Path) -> None:  # type: ignore[no-untyped-def]
    """The control: the same os.system does run when shells are allowed."""
    with make_gate({"process": {"allowedCommands": [PY], "allowShell": True}}):
        result = proc.run(_py(f"import os; os.system('touch {mark}')"), timeout=20)
    assert result.exec_confined is False
    assert mark.exists()


def test_honest_children_still_run(make_gate, workspace: Path, audit_stream) -> None:  # type: ignore[no-untyped-def]
    code = """
        import subprocess, sys
        print(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout.strip())
        print(subprocess.run(["env", "true"]).returncode)
    """
    with make_gate({"process": {"allowedCommands": [PY, "env", "true", "git"]}}):
        result = proc.run(_py(code), timeout=20)
        assert result.stdout.decode().split() == ["42", "0"], result.stderr
        assert proc.run(["env", "true"]).returncode == 0
        assert proc.run(["git", "init", "-q"]).returncode == 0  # git runs its own helpers
        assert proc.run(["git", "status"]).returncode == 0
    events = [line for line in audit_lines(audit_stream) if line.get("event") == "proc.run"]
    assert events and all(e["exec_confined"] is True for e in events), json.dumps(events)


def test_fallback_without_a_spawner_is_confined_too(make_gate, mark: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from capgate._sys import spawner as spawner_mod

    def unavailable(*_args: object) -> object:
        raise spawner_mod.SpawnerUnavailable(38, "test")

    monkeypatch.setattr(spawner_mod, "acquire", unavailable)
    with make_gate({"process": {"allowedCommands": ["awk"]}}):
        result = proc.run(["awk", f'BEGIN {{ system("touch {mark}") }}'], timeout=10)
    assert result.exec_confined is True
    assert not mark.exists()
