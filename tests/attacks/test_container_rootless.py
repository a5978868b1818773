"""The container backend run by an ordinary user: rootless podman (``--userns=keep-id``).

Runs when the suite runs as root (CI does): a dedicated user with a subordinate uid range
builds its own image (``capgate image build``, in its own podman storage) and runs a Python
child and a write, with capgate and its dependencies copied where that user can read them
(the test venv may live under a private directory) and a system Python of the same minor
version. Files the child writes belong to the user; the gate inside refuses a secret; where
the runtime cannot apply the memory cgroup (rootless on cgroup v1) the shim's RLIMIT_AS
still stops a hog.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests._container_helpers import require_runtime

USER = "capgate-podman"
SUBIDS = "300000-365535"
SECRET = "rootless-secret-8d21"
_PACKAGES = ("structlog", "pathspec", "pydantic", "pydantic_core", "annotated_types", "typing_extensions.py",
             "typing_inspection", "psutil", "tldextract", "idna", "requests_file", "filelock", "requests", "urllib3",
             "charset_normalizer", "certifi")

pytestmark = pytest.mark.container


def _user() -> pwd.struct_passwd:
    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--home-dir", f"/var/tmp/{USER}", "--shell", "/bin/sh", USER],
                       check=True, capture_output=True)
        user = pwd.getpwnam(USER)
    for table, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        if not any(line.startswith(USER + ":") for line in Path(table).read_text().splitlines()):
            subprocess.run(["usermod", flag, SUBIDS, USER], check=True, capture_output=True)
    return user


def _copy(site: Path) -> None:
    """capgate (with its mapped folders) and what it imports, plus their metadata (the image
    builder follows capgate's requirements through it), world-readable."""
    import importlib.metadata

    import capgate

    repo = Path(capgate.__file__).resolve().parent.parent
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(repo / "capgate", site / "capgate", ignore=skip)
    wanted = {n.removesuffix(".py").lower() for n in _PACKAGES}
    for base in (Path(p) for p in sys.path if p and os.path.isdir(p)):
        for name in _PACKAGES:
            if (base / name).exists() and not (site / name).exists():
                (shutil.copytree if (base / name).is_dir() else shutil.copy2)(base / name, site / name)
        for info in base.glob("*.dist-info"):
            if info.name.split("-")[0].lower() in wanted and not (site / info.name).exists():
                shutil.copytree(info, site / info.name)
    meta = site / "capgate-0.0.0.dist-info"
    meta.mkdir()
    requires = importlib.metadata.distribution("capgate").requires or ()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: capgate\nVersion: 0.0.0\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))


@pytest.mark.skipif(os.geteuid() != 0, reason="run as root (CI): the test makes its own unprivileged user")
def test_rootless_podman_runs_the_gate_as_the_user(tmp_path: Path) -> None:
    require_runtime("podman")
    system_python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if not os.path.exists(system_python):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{system_python} is needed for the rootless test")
        pytest.skip(f"no {system_python} readable by an ordinary user")
    base = Path(tempfile.mkdtemp(prefix="capgate-rootless-", dir="/tmp"))
    user = _user()
    image = ""
    try:
        os.chmod(base, 0o755)
        site = base / "site"
        site.mkdir()
        _copy(site)
        for path in (site, *site.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        ws = base / "ws"
        (ws / "output").mkdir(parents=True)
        (ws / ".env").write_text(SECRET)
        for path in (ws, *ws.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        env = (f"HOME={user.pw_dir} PATH=/usr/bin:/bin PYTHONPATH={site} PYTHONDONTWRITEBYTECODE=1")

        def as_user(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
            command = " ".join(f"'{a}'" for a in args)
            return subprocess.run(["su", "-s", "/bin/sh", USER, "-c", f"cd {ws} && env {env} {command}"],
                                  capture_output=True, text=True, timeout=timeout)

        built = as_user(system_python, "-m", "capgate", "image", "build")
        assert built.returncode == 0, built.stderr
        image = built.stdout.strip()
        script = ("import os\n"
                  f"open({str(ws / 'output' / 'o.txt')!r}, 'w').write('mine')\n"
                  "try:\n"
                  f"    open({str(ws / '.env')!r}).read()\n"
                  "except PermissionError as exc:\n"
                  "    print('env refused', exc.rule)\n"
                  "print('uid', os.getuid())\n")
        (ws / "agent.py").write_text(script)
        os.chown(ws / "agent.py", user.pw_uid, user.pw_gid)
        run = as_user(system_python, "-m", "capgate", "run", "--backend", "container", "--workspace", str(ws), "--",
                      "python3", str(ws / "agent.py"), timeout=120)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("env refused filesystem.denyRead"), run.stdout
        assert lines[1] == f"uid {user.pw_uid}"
        assert (ws / "output" / "o.txt").stat().st_uid == user.pw_uid  # the user's own file, not a subuid's
        assert SECRET not in run.stdout + run.stderr
        # memory: held even where rootless podman cannot apply the cgroup (the shim's RLIMIT_AS)
        (ws / "hog.py").write_text("b = bytearray(600 << 20)\nprint('ate')\n")
        os.chown(ws / "hog.py", user.pw_uid, user.pw_gid)
        policy = base / "limits.json"
        policy.write_text('{"version": 1, "limits": {"memoryMb": 200}}')
        hog = as_user(system_python, "-m", "capgate", "run", "--backend", "container", "--workspace", str(ws),
                      "--policy", str(policy), "--allow-user-expansion", "--", "python3", str(ws / "hog.py"),
                      timeout=120)
        assert hog.returncode != 0 and "ate" not in hog.stdout, hog.stdout + hog.stderr
        assert "MemoryError" in hog.stderr
        _staged_as_user(as_user, system_python, ws, user)
    finally:
        if image:
            subprocess.run(["su", "-s", "/bin/sh", USER, "-c", f"cd / && HOME={user.pw_dir} podman rmi -f {image}"],
                           capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def _staged_as_user(as_user: Any, python: str, ws: Path, user: pwd.struct_passwd) -> None:
    """``--staged`` under rootless podman: the overlay volume is mounted in the user's own
    namespace (keep-id). The user's changes are staged as theirs; a file of another owner
    (root's) cannot be copied up there, so it is bound read-only (EROFS, counted and said);
    ``.env`` stays covered; the real workspace is unchanged until ``apply`` (as the user)."""
    (ws / "src").mkdir()
    (ws / "src" / "a.txt").write_text("alpha\n")
    os.chown(ws / "src", user.pw_uid, user.pw_gid)
    os.chown(ws / "src" / "a.txt", user.pw_uid, user.pw_gid)
    (ws / "src" / "b.txt").write_text("beta\n")
    os.chown(ws / "src" / "b.txt", user.pw_uid, user.pw_gid)
    (ws / "roots.txt").write_text("root's\n")
    (ws / "roots.txt").chmod(0o666)  # root's, writable by all: only the copy-up could refuse it
    script = ("import os\n"
              "def t(label, f):\n"
              "    try:\n"
              "        f(); print(label, 'OK')\n"
              "    except OSError as exc:\n"
              "        print(label, 'ERR', exc.errno)\n"
              f"t('edit', lambda: open({str(ws / 'src' / 'a.txt')!r}, 'a').write('more\\n'))\n"
              f"t('new', lambda: open({str(ws / 'new.txt')!r}, 'w').write('new'))\n"
              f"t('foreign', lambda: open({str(ws / 'roots.txt')!r}, 'a').write('x'))\n"
              f"t('env', lambda: print(repr(open({str(ws / '.env')!r}).read())))\n"
              f"t('delete', lambda: os.unlink({str(ws / 'src' / 'b.txt')!r}))\n")
    (ws / "staged.py").write_text(script)
    os.chown(ws / "staged.py", user.pw_uid, user.pw_gid)
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    run = as_user(python, "-m", "capgate", "run", "--backend", "container", "--staged", "--workspace", str(ws),
                  "--", "python3", str(ws / "staged.py"), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[:3] == ["edit OK", "new OK", f"foreign ERR {errno.EROFS}"], run.stdout
    assert SECRET not in run.stdout + run.stderr
    assert "another user or group: read-only in this staged run" in run.stderr
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before  # nothing landed
    found = re.search(r"staged run (\d{8}T\d{6}Z-[0-9a-f]+): ", run.stderr)
    assert found, run.stderr
    run_id = found.group(1)
    upper = Path(user.pw_dir, ".local", "state", "capgate", "staging", run_id, "upper")
    assert (upper / "new.txt").stat().st_uid == user.pw_uid
    assert (upper / "src" / "a.txt").stat().st_uid == user.pw_uid
    applied = as_user(python, "-m", "capgate", "apply", run_id, "--workspace", str(ws))
    assert applied.returncode == 0, applied.stderr
    assert (ws / "src" / "a.txt").read_text() == "alpha\nmore\n" and (ws / "new.txt").read_text() == "new"
    assert (ws / "new.txt").stat().st_uid == user.pw_uid and (ws / "roots.txt").read_text() == "root's\n"
    assert not (ws / "src" / "b.txt").exists()  # the whiteout the user's overlay made was read as a deletion
    assert not upper.parent.exists(), applied.stderr  # everything landed: the staging is gone (the user may remove it)
