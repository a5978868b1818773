"""wrappers/ is installed as ``capgate.wrappers`` only (through the capgate/wrappers link), and
pyproject's explicit package list (find does not follow the link) names every package folder on
disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_package_list_matches_the_folders() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "capgate").rglob("*.py")
               if "__pycache__" not in p.parts}
    on_disk |= {"capgate.wrappers." + ".".join(p.parent.relative_to(ROOT / "wrappers").parts)
                for p in (ROOT / "wrappers").rglob("*.py") if p.parent != ROOT / "wrappers"}
    on_disk |= {"capgate.wrappers", "capgate.testing.corpus", "capgate.container_shim"}
    assert listed == on_disk
    # The simple layout setuptools' editable mode installs with a plain .pth (see pyproject.toml).
    assert config["package-dir"] == {"": "src"}
    assert os.readlink(ROOT / "capgate" / "wrappers") == "../wrappers"
    assert os.readlink(ROOT / "capgate" / "container_shim") == "../container_shim"
    assert os.readlink(ROOT / "src" / "capgate") == "../capgate"
    # Nothing else on sys.path (setuptools writes its capgate.egg-info there: metadata, not code).
    assert [p.name for p in (ROOT / "src").iterdir() if not p.name.endswith(".egg-info")] == ["capgate"]


def test_importable_as_capgate_wrappers_never_bare(tmp_path: Path) -> None:
    # From a directory that is not the repository: only what is installed counts.
    code = (
        "import capgate.wrappers, capgate.wrappers.tools\n"
        "print(capgate.wrappers.__file__)\n"
        "try:\n    import wrappers\nexcept ModuleNotFoundError:\n    print('no bare wrappers')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert Path(first).resolve() == ROOT / "wrappers" / "__init__.py"
    assert second == "no bare wrappers"
