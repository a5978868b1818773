"""The namespace backend run by an unprivileged user (issue 11: "as root and as an unprivileged
user"). As root the suite's other namespace tests run with uid 0 inside the view; here the same
probe runs as an ordinary user, through unprivileged user namespaces, with capgate and its
dependencies copied where that user can read them (the test venv may live under a private
directory). Runs when the suite runs as root (CI does); as an ordinary user, the other
namespace tests already are this test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests._namespace_helpers import build_probe, require_namespace_backend

USER = "capgate-test"
SECRET = "unprivileged-secret-31f0"
_PACKAGES = ("capgate", "structlog", "pathspec", "pydantic", "pydantic_core", "annotated_types",
             "typing_extensions.py", "typing_inspection", "psutil", "tldextract", "idna", "requests_file",
             "filelock", "requests", "urllib3", "charset_normalizer", "certifi")


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(USER)


def _copy_packages(dest: Path) -> None:
    """capgate and what the launcher imports, from this interpreter's paths, world-readable."""
    import capgate

    sources = [Path(capgate.__file__).resolve().parent.parent, *[Path(p) for p in sys.path if p]]
    for name in _PACKAGES:
        for base in sources:
            candidate = base / name
            if candidate.exists():
                target = dest / name
                if candidate.is_dir():
                    shutil.copytree(candidate, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(candidate, target)
                break


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: the other namespace tests run as this user")
def test_an_unprivileged_user_gets_the_same_view() -> None:
    require_namespace_backend()
    user = _user()
    # Not under pytest's tmp_path: its parents are private to root.
    base = Path(tempfile.mkdtemp(prefix="capgate-unpriv-", dir="/tmp"))
    try:
        _run_as(user, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_as(user: pwd.struct_passwd, base: Path) -> None:
    os.chmod(base, 0o755)
    site = base / "site"
    site.mkdir()
    _copy_packages(site)
    ws = base / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "output").mkdir()
    (ws / "src" / "app.txt").write_text("hello\n")
    (ws / ".env").write_text(SECRET)
    home = base / "home"
    home.mkdir()
    (ws / "tools").mkdir()
    probe = build_probe(ws / "tools")
    for path in (base, ws, home, *ws.rglob("*"), *home.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    for path in (site, *site.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    # The test interpreter may live under root's private HOME (pyenv): a system Python of the
    # same minor version reads the copied packages (same ABI) and is reachable by anyone.
    system_python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    interpreter = system_python if os.path.exists(system_python) else os.path.realpath(sys.executable)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--",
         interpreter, "-m", "capgate", "run", "--backend", "namespace", "--workspace", str(ws), "--", str(probe),
         "read", str(ws / "src" / "app.txt"), "read", str(ws / ".env"), "write", str(ws / "output" / "o.txt"), "ok",
         "chmod", str(ws / "src" / "app.txt"), "777", "read", "/etc/shadow"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0 and "Permission denied" in result.stderr and interpreter.startswith("/root/"):
        pytest.fail(f"the test interpreter {interpreter} is not readable by {USER}: {result.stderr[-500:]}")
    assert result.returncode == 0, result.stderr
    assert "backend: namespace" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "read OK 6 [hello ]"  # control
    assert lines[1] == "read OK 0 []"  # .env covered
    assert lines[2] == "write OK 2" and (ws / "output" / "o.txt").stat().st_uid == user.pw_uid  # the user's own file
    assert lines[3] == "chmod ERR EROFS"
    assert lines[4].startswith("read ERR")
    assert SECRET not in result.stdout + result.stderr
