"""The soft sandbox's remembered reads (``SoftHooks._on_stable_read``, ``capgate._sys.frozen_dirs``):
a read seen before skips the path lookup only where no process of the tree can change what
the path names. Each attack changes that between two reads of the same path in one Python
process — by a native program the hooks do not see (``ln``, allowed in the policy; Landlock
lets it write the write roots) or by moving the process's own cwd — and the second read must
get the gate's answer for what it really reaches. Real ``capgate run``, real symlinks, real
bind mounts (in a private mount namespace); benign controls beside each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from capgate._sys import landlock
from tests.integration._soft_helpers import audit_lines, capgate_run, empty_home, source_workspace, write_policy

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock (the stable reads need it)"),
]
PY = sys.executable
LN = shutil.which("ln") or "/bin/ln"

# The agent: reads PATH, lets a native `ln` swap a directory for a symlink, reads PATH again.
SWAP = textwrap.dedent("""
    import os, subprocess, sys
    path, moved, link_target = sys.argv[1], sys.argv[2], sys.argv[3]
    for _ in range(3):
        with open(path) as fh:
            print("first", fh.read().strip())
    os.rename(moved, moved + ".old")
    subprocess.run(["ln", "-s", link_target, moved], check=True)
    try:
        with open(path) as fh:
            print("second", fh.read().strip())
    except PermissionError as exc:
        print("second denied", exc)
""")


def _world(tmp_path: Path) -> tuple[Path, Path, Path]:
    ws = source_workspace(tmp_path)
    (ws / "output" / "d").mkdir(parents=True)
    (ws / "output" / "d" / "f.txt").write_text("benign\n")
    (ws / "private").mkdir()
    (ws / "private" / "f.txt").write_text("SECRET\n")
    (ws / "agent.py").write_text(SWAP)
    policy = write_policy(ws, {"filesystem": {"denyRead": ["private/"]}, "process": {"allowedCommands": ["ln"]}})
    return ws, empty_home(tmp_path), policy


def _run(ws: Path, home: Path, policy: Path, *args: str, prefix: list[str] | None = None) -> str:
    command = ["run", "--backend", "soft", "--allow-user-expansion", "--policy", str(policy), "--", PY, "agent.py",
               *args]
    if prefix is None:
        proc = capgate_run(command, home=home, cwd=ws)
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGATE_", "AGENT_IN", "SOFT_SANDBOX"))}
        env.pop("XDG_STATE_HOME", None)
        env.pop("XDG_CONFIG_HOME", None)
        env["HOME"] = str(home)
        proc = subprocess.run([*prefix, PY, "-m", "capgate", *command], cwd=ws, env=env, capture_output=True,
                              text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_directory_of_a_write_root_swapped_for_a_symlink_is_seen(tmp_path: Path) -> None:
    ws, home, policy = _world(tmp_path)
    out = _run(ws, home, policy, "output/d/f.txt", "output/d", "../private")
    assert out.count("first benign") == 3  # the control: the same read, allowed each time
    assert "SECRET" not in out and "second denied" in out, out
    assert (ws / "output" / "d").is_symlink()  # (the swap really happened)
    reads = [line for line in audit_lines(home) if line.get("op") == "fs.read"
             and str(line.get("target", "")).endswith("/output/d/f.txt")]
    assert len(reads) == 3, "every reuse of a remembered decision is logged again"


def _can_bind_mount() -> str | None:
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("mount") is None:
        return "unshare(1) and mount(8) are needed for a private mount namespace"
    probe = subprocess.run([unshare, "-m", "true"] if os.geteuid() == 0 else [unshare, "-Urm", "true"],
                           capture_output=True)
    return None if probe.returncode == 0 else f"no private mount namespace here: {probe.stderr!r}"


def test_a_write_root_bind_mounted_outside_the_write_roots_is_not_frozen(tmp_path: Path) -> None:
    """``mirror/`` (in the read-only workspace) is ``output/`` mounted a second time: Landlock
    lets the tree change it through ``output/``, so nothing read through ``mirror/`` is
    remembered. A check on paths alone would call ``mirror/d`` frozen and hand out the secret."""
    why = _can_bind_mount()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    ws, home, policy = _world(tmp_path)
    (ws / "mirror").mkdir()
    unshare = shutil.which("unshare") or "unshare"
    script = tmp_path / "in_namespace.sh"
    script.write_text('set -e\nmount --bind "$1/output" "$1/mirror"\nshift\nexec "$@"\n')
    prefix = [unshare, "-m" if os.geteuid() == 0 else "-Urm", "sh", str(script), str(ws)]
    # The link is made in output/d's parent (output/), reached as mirror/d: ``../private`` from
    # there is the workspace's private/.
    out = _run(ws, home, policy, "mirror/d/f.txt", "output/d", "../private", prefix=prefix)
    assert out.count("first benign") == 3
    assert "SECRET" not in out and "second denied" in out, out


CHDIR = textwrap.dedent("""
    import os, sys
    how = sys.argv[1]
    os.chdir("src")
    for _ in range(3):
        with open("f.txt") as fh:
            print("first", fh.read().strip())
    if how == "chdir":
        os.chdir("../private")
    elif how == "fchdir":
        fd = os.open("../private", os.O_PATH | os.O_DIRECTORY)  # (O_PATH: not a read)
        os.fchdir(fd)
    else:  # the real chdir, reached around the wrapper (its closure): only the event is seen
        real = next(c.cell_contents for c in os.chdir.__closure__ if callable(c.cell_contents)
                    and getattr(c.cell_contents, "__name__", "") == "chdir")
        real("../private")
    try:
        with open("f.txt") as fh:
            print("second", fh.read().strip())
    except PermissionError as exc:
        print("second denied", exc)
""")


@pytest.mark.parametrize("how", ["chdir", "fchdir", "unwrapped"])
def test_a_relative_read_after_a_chdir_is_judged_in_the_new_directory(tmp_path: Path, how: str) -> None:
    ws, home, policy = _world(tmp_path)
    (ws / "src" / "f.txt").write_text("benign\n")
    (ws / "agent.py").write_text(CHDIR)
    out = _run(ws, home, policy, how)
    assert out.count("first benign") == 3
    assert "SECRET" not in out and "second denied" in out, out
