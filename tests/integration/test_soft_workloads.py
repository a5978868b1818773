"""Honest work under the soft sandbox: no false denials.

* a benign plain-Python child (stdlib + a site-package, reads sources, writes output/) exits 0
  with no denial;
* a real third-party test suite (``six``'s, from its PyPI sdist), unmodified, passes with the
  workspace set to a copy of the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soft_helpers import PY, audit_lines, capgate_run

SIX = "six==1.16.0"


def test_benign_child_exits_zero_without_denials(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "output").mkdir()
    (ws / "src" / "app.py").write_text("def f():\n    return 1\n")
    (ws / "agent.py").write_text(
        "import json, os, pathlib, re, tempfile, hashlib, sqlite3, subprocess, threading, asyncio\n"
        "import pathspec, idna, structlog\n"  # site-packages
        "src = pathlib.Path('src/app.py').read_text()\n"
        "names = sorted(os.listdir('src'))\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    p = pathlib.Path(d, 'scratch.db'); sqlite3.connect(p).execute('create table t(x)'); p.unlink()\n"
        "os.makedirs('output/sub', exist_ok=True)\n"
        "report = json.dumps({'lines': len(src.splitlines()), 'names': names})\n"
        "pathlib.Path('output/sub/report.json').write_text(report)\n"
        "os.replace('output/sub/report.json', 'output/report.json')\n"
        "open(os.devnull, 'w').write('x')\n"
        "print('ok', hashlib.sha256(src.encode()).hexdigest()[:8], idna.encode('b\\u00fccher.example').decode())\n"
    )
    proc = capgate_run(["run", "--workspace", str(ws), "--", PY, str(ws / "agent.py")], home=home, cwd=ws)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok ")
    assert (ws / "output" / "report.json").exists()
    assert "no denials" in proc.stderr
    assert not [line for line in audit_lines(home) if line.get("decision") == "deny"]


# Fetched from the registry by scripts/test.sh's install step (tests never use the network).
WORKLOADS = Path(__file__).resolve().parents[2] / ".cache" / "test-workloads"


@pytest.fixture(scope="session")
def six_sdist() -> Path:
    found = sorted(WORKLOADS.glob("six-1.16.0.tar.gz"))
    if not found:
        message = f"{SIX} sdist missing from {WORKLOADS}: run `bash scripts/test.sh` (it downloads it at install time)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


@pytest.mark.slow
def test_third_party_test_suite_passes_unmodified(tmp_path: Path, six_sdist: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ws = tmp_path / "six"
    with tarfile.open(six_sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    shutil.move(str(tmp_path / "six-1.16.0"), ws)
    # Deselected, with reasons: test_getoutput runs a shell (denied by the default policy, which
    # is right; asserted below); dbm_ndbm is missing from this Python build (fails outside too).
    args = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_six.py", "-k",
            "not test_getoutput and not dbm_ndbm"]
    outside = subprocess.run(args, cwd=ws, capture_output=True, text=True, timeout=120)
    assert outside.returncode == 0, outside.stdout[-2000:]
    proc = capgate_run(["run", "--workspace", str(ws), "--", *args], home=home, cwd=ws, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
    assert not [line for line in audit_lines(home) if line.get("decision") == "deny"]
    shell = capgate_run(["run", "--workspace", str(ws), "--", PY, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "test_six.py", "-k", "test_getoutput"], home=home, cwd=ws, timeout=120)
    assert shell.returncode != 0 and "proc.exec" in shell.stderr
    denied = [line for line in audit_lines(home) if line.get("decision") == "deny"]
    assert [line["rule"] for line in denied] == ["process.allowShell"]
