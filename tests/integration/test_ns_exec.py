"""``capgate._sys.ns_exec`` applies the run's Landlock plan itself (through ``_ctypes``, for
start-up time) or, failing that, through ``landlock.Ruleset``: either way the program it
becomes writes only in the write roots and is told so (``CAPGATE_LANDLOCK=writes``).
Run on the host here (no bubblewrap): the confinement is Landlock's alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capgate._sys import landlock

pytestmark = pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock")
SYS_DIR = os.path.dirname(landlock.__file__)
NS_EXEC = os.path.join(SYS_DIR, "ns_exec.py")
SCRIPT = 'echo in > "$1/w/in.txt"; echo out > "$1/out.txt"; echo "landlock=$CAPGATE_LANDLOCK"'


def _plan(tmp_path: Path) -> str:
    (tmp_path / "w").mkdir()
    plan = landlock.plan(None, [str(tmp_path / "w")])
    assert plan is not None
    return plan.encode()


def _check(tmp_path: Path, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0 or "out.txt" in done.stderr, done.stderr
    assert (tmp_path / "w" / "in.txt").read_text() == "in\n", done.stderr  # the control: the write root works
    assert not (tmp_path / "out.txt").exists(), "wrote outside the write root"
    assert "landlock=writes" in done.stdout


def test_ns_exec_confines_the_command_to_the_write_roots(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-I", "-S", NS_EXEC, _plan(tmp_path), "--", "/bin/sh", "-c", SCRIPT,
                           "sh", str(tmp_path)], capture_output=True, text=True, timeout=30)
    _check(tmp_path, done)


def test_ns_exec_falls_back_to_the_landlock_module(tmp_path: Path) -> None:
    code = (f"import sys; sys.path.insert(0, {SYS_DIR!r}); import ns_exec\n"
            "def missing(_plan):\n    raise AttributeError('no FUNCFLAG_USE_ERRNO here')\n"
            "ns_exec._apply = missing\n"
            "ns_exec.main(['ns_exec.py', sys.argv[1], '--', '/bin/sh', '-c', sys.argv[2], 'sh', sys.argv[3]])\n")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, _plan(tmp_path), SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    _check(tmp_path, done)


def test_ns_exec_without_a_plan_says_nothing_about_landlock(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    done = subprocess.run([sys.executable, "-I", "-S", NS_EXEC, "-", "--", "/bin/sh", "-c", SCRIPT, "sh",
                           str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "landlock=\n" in done.stdout, done.stderr
    assert (tmp_path / "out.txt").exists()  # (nothing confined it: the control for the tests above)
