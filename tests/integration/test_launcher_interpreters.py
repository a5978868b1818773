"""A Python child may be any CPython >= 3.10 on the machine, not only the one capgate is
installed in; an older one is refused with a message that says what to do."""

from __future__ import annotations

import glob
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, audit_lines, capgate_run

from capgate._soft_boot import SITECUSTOMIZE


def _interpreters(versions: str, *, system: bool) -> list[str]:
    """The interpreters of the machine (pyenv's ``versions`` glob; ``system``: /usr/bin/python3
    too) other than the one running the tests."""
    found: list[str] = []
    for path in [*(["/usr/bin/python3"] if system else []),
                 *sorted(glob.glob(f"/root/.pyenv/versions/{versions}/bin/python"))]:
        if os.path.exists(path) and not os.path.samefile(path, PY):
            real = os.path.realpath(path)
            if real not in (os.path.realpath(f) for f in found):
                found.append(path)
    return found


_MODERN = _interpreters("3.1[0-9].*", system=True)
_OLD = _interpreters("[23].[0-9].*", system=False)


_CHILD = (
    "import json, os, sys\n"
    "open('output/x', 'w').write('1')\n"
    "try:\n"
    "    open('/etc/shadow')\n"
    "    shadow = 'read'\n"
    "except PermissionError:\n"
    "    shadow = 'denied'\n"
    "try:\n"
    "    import subprocess\n"
    "    subprocess.run(['/bin/true'])\n"
    "    run = 'ran'\n"
    "except PermissionError:\n"
    "    run = 'denied'\n"
    "print(json.dumps({'version': list(sys.version_info[:2]), 'shadow': shadow, 'run': run, 'path': sys.path}))\n"
)


@pytest.mark.skipif(not _MODERN, reason="no other CPython >= 3.10 on this machine")
@pytest.mark.parametrize("python", _MODERN)
def test_another_cpython_runs_hooked(ws: Path, home: Path, python: str) -> None:
    """Benign actions work; the hooks deny (a file read, a command) and the denials reach the
    launcher's log; the child sees capgate alone, not the launcher's site-packages."""
    done = capgate_run(["run", "--workspace", str(ws), "--", python, "-c", _CHILD], home=home, cwd=ws)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert tuple(seen["version"]) >= (3, 10)
    assert (ws / "output" / "x").read_text() == "1"
    assert (seen["shadow"], seen["run"]) == ("denied", "denied")
    lines = audit_lines(home)
    assert any(line.get("event") == "child.soft.activated" for line in lines)
    denied = {(line["op"], line["target"]) for line in lines if line.get("decision") == "deny"}
    assert ("fs.read", "/etc/shadow") in denied and ("proc.exec", "/usr/bin/true") in denied
    ours = {os.path.realpath(p) for p in site.getsitepackages()}
    assert not ours & {os.path.realpath(p) for p in seen["path"] if p}, seen["path"]
    assert "WARNING" not in done.stderr


@pytest.mark.skipif(not _OLD, reason="no Python older than 3.10 on this machine")
@pytest.mark.parametrize("python", _OLD)
def test_an_older_python_is_refused_with_what_to_do(ws: Path, home: Path, python: str) -> None:
    marker = ws / "output" / "ran"
    done = capgate_run(["run", "--workspace", str(ws), "--", python, "-c", f"open({str(marker)!r}, 'w')"],
                       home=home, cwd=ws)
    assert done.returncode == 125, done.stderr
    assert done.stderr.startswith(f"capgate: sandbox refused to start: {python} is Python ")
    assert "need CPython 3.10 or newer: run the agent with a newer interpreter" in done.stderr
    assert not marker.exists()


@pytest.mark.skipif(not _OLD, reason="no Python older than 3.10 on this machine")
@pytest.mark.parametrize("python", _OLD)
def test_the_boot_stub_refuses_an_old_python_that_slipped_through(tmp_path: Path, python: str) -> None:
    """``site`` only warns about a ``sitecustomize`` that does not compile and runs the program
    anyway: the stub must compile, and refuse, on any Python (here without the launcher's
    name check, as for an interpreter whose file name says no version)."""
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "ran"
    env = {"PYTHONPATH": str(boot), "PATH": os.defpath}
    done = subprocess.run([python, "-c", f"open({str(marker)!r}, 'w')"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 125, done.stderr
    assert "capgate: the soft sandbox could not activate in this Python (RuntimeError: the hooks need CPython " \
           "3.10 or newer" in done.stderr
    assert not marker.exists()
