"""Staged writes run by an unprivileged user (``capuser``; issue 21: "as root and as
capuser"). An unprivileged overlay maps only the user's own uid and gid, so a workspace file
of another owner cannot be copied up (``EOVERFLOW``): it must be read-only inside the run,
with a message, while the user's own files are staged and applied as for root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests._namespace_helpers import require_namespace_backend
from tests._staging_helpers import PROBE_SOURCE, snapshot
from tests.attacks.test_namespace_unprivileged import _copy_packages

USER = "capuser"


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: the other staged tests run as this user")
def test_capuser_stages_and_applies_and_foreign_files_are_read_only() -> None:
    require_namespace_backend()
    try:
        user = pwd.getpwnam(USER)
    except KeyError:  # (made as the other unprivileged test makes its user: we are root here)
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True)
        user = pwd.getpwnam(USER)
    # Not under pytest's tmp_path (its parents are private to root), and in a directory the
    # user can pass through (a shared machine's /tmp has been seen at 0700).
    parent = next((d for d in ("/tmp", "/var/tmp") if os.stat(d).st_mode & 0o001), None)
    if parent is None:
        pytest.fail("neither /tmp nor /var/tmp can be passed through by other users here")
    base = Path(tempfile.mkdtemp(prefix="capgate-staged-", dir=parent))
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
    (ws / "src" / "mine.txt").write_text("mine\n")
    (ws / "tools").mkdir()
    home = base / "home"
    home.mkdir()
    subprocess.run(["gcc", "-O1", "-o", str(ws / "tools" / "probe"), str(PROBE_SOURCE)], check=True)
    for path in (base, ws, home, *ws.rglob("*"), *home.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    (ws / "src" / "roots.txt").write_text("root's file\n")  # another owner's file in the workspace
    os.chmod(ws / "src" / "roots.txt", 0o666)  # (writable by anyone on the host: still not inside)
    for path in (site, *site.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    system_python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    interpreter = system_python if os.path.exists(system_python) else os.path.realpath(sys.executable)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--", interpreter,
               "-m", "capgate"]
    before = snapshot(ws)
    w = str(ws)
    done = subprocess.run([*as_user, "run", "--backend", "namespace", "--staged", "--workspace", w, "--",
                           f"{w}/tools/probe", "append", f"{w}/src/mine.txt", "more\n", "write", f"{w}/new.txt", "n",
                           "append", f"{w}/src/roots.txt", "evil", "unlink", f"{w}/src/roots.txt",
                           "mkdir", f"{w}/ro", "write", f"{w}/ro/f", "f", "chmod", f"{w}/ro", "555"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["append OK", "write OK", "append ERR EROFS", "unlink ERR EBUSY", "mkdir OK",
                                        "write OK", "chmod OK"]
    assert "belong to another user or group: read-only in this staged run" in done.stderr
    assert snapshot(ws) == before
    staging = home / ".local" / "state" / "capgate" / "staging"
    (run,) = list(staging.iterdir())
    assert run.stat().st_uid == user.pw_uid and run.stat().st_mode & 0o777 == 0o700
    applied = subprocess.run([*as_user, "apply", "--workspace", w], cwd=ws, env=env, capture_output=True, text=True,
                             timeout=60)
    assert applied.returncode == 0, applied.stderr
    assert (ws / "src" / "mine.txt").read_text() == "mine\nmore\n"
    assert (ws / "new.txt").read_text() == "n" and (ws / "new.txt").stat().st_uid == user.pw_uid
    assert (ws / "src" / "roots.txt").read_text() == "root's file\n"
    # a read-only directory the run made gets its mode after its files are in
    assert (ws / "ro" / "f").read_text() == "f" and (ws / "ro").stat().st_mode & 0o777 == 0o555
    # a failure half-way (a directory made unwritable after the run: a conflict, forced): nothing
    # partial, and said so
    (ws / "late").mkdir()
    os.chown(ws / "late", user.pw_uid, user.pw_gid)
    second = subprocess.run([*as_user, "run", "--backend", "namespace", "--staged", "--workspace", w, "--",
                             f"{w}/tools/probe", "append", f"{w}/src/mine.txt", "again\n", "write", f"{w}/late/x", "x"],
                            cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    os.chmod(ws / "late", 0o555)
    before = snapshot(ws)
    failed = subprocess.run([*as_user, "apply", "--force", "--workspace", w], cwd=ws, env=env, capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1
    assert "failed at late/x" in failed.stderr and "0 changes were applied" in failed.stderr
    assert snapshot(ws) == before  # src/mine.txt still old, no temp file left anywhere
