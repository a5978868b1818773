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
