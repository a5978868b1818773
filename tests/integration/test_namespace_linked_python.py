"""capgate run from an environment reached through a symbolic link to its directory, as
capgate.pyz runs (pex puts its environment under ~/.cache/pex/venvs/.../s/HASH/venv, a link
to the real directory). The namespace view binds read roots at their real paths, so the
interpreter and the inner shim must be named by their real directories: named through the
link, bubblewrap could not find them and the sandbox never started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests._namespace_helpers import require_namespace_backend


def test_namespace_backend_starts_from_a_linked_environment(tmp_path: Path, fake_home: Path) -> None:
    require_namespace_backend()
    linked = tmp_path / "envs" / "s" / "venv"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(sys.prefix)  # the test's own environment, through a link
    python = linked / "bin" / Path(sys.executable).name
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX"))}
    env["HOME"] = str(fake_home)
    check = subprocess.run([str(python), "-c", "import sys, capgate; print(sys.prefix)"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.stdout.strip() == str(linked), check.stderr  # really running from the link
    done = subprocess.run([str(python), "-m", "capgate", "run", "--backend", "namespace", "--workspace", str(ws),
                           "--", "/bin/echo", "inside"], cwd=ws, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "inside"
    assert "backend: namespace" in done.stderr


def test_a_python_child_from_a_venv_outside_the_roots_starts(tmp_path: Path, fake_home: Path) -> None:
    """The agent's interpreter is a venv's ``bin/python3`` — a symlink to the system binary —
    in a directory no root shows (CI runs the pyz demo this way). The view makes that name a
    symlink to the binary the launcher resolved, so Python finds its ``pyvenv.cfg`` and the
    hooks start. The control: the same child named by the real binary starts too."""
    require_namespace_backend()
    base = next((p for p in (f"/usr/bin/python3.{sys.version_info[1]}", "/usr/bin/python3") if os.path.exists(p)),
                None)
    if base is None:
        import pytest

        pytest.skip("no system python3 here")
    venv = tmp_path / "tools" / "bare"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "SOFT_SANDBOX"))}
    env["HOME"] = str(fake_home)
    prefixes = []
    for child in (str(venv / "bin" / "python3"), os.path.realpath(base)):
        done = subprocess.run([sys.executable, "-m", "capgate", "run", "--backend", "namespace", "--workspace",
                               str(ws), "--", child, "-c", "import sys; print('inside', sys.prefix)"], cwd=ws,
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, (child, done.stderr)
        assert done.stdout.startswith("inside"), done.stderr
        assert "never reported that its hooks were active" not in done.stderr
        prefixes.append(done.stdout.split()[1])
    assert prefixes[0] == str(venv) and prefixes[1] != str(venv)  # (its venv; the control outside it)
