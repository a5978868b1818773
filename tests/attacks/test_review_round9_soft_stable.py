"""Review round 9 against the soft hooks' remembered reads (``capgate._sys.frozen_dirs``): a
mount whose content is a write root's by another way than a bind — an overlay with a write
root among its layers — shows the tree's changes under a path the mount table alone calls
frozen. Real ``capgate run``, a real overlay in a private mount namespace, a real symlink."""

from __future__ import annotations

import os
import shutil
import textwrap
import threading
import time
from pathlib import Path

import pytest

from capgate._sys import landlock
from tests.attacks.test_soft_stable_reads import _run, _world

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not landlock.available(), reason="needs a kernel with Landlock (the stable reads need it)"),
]

# The agent: reads PATH (remembered), swaps output/d for a symlink to ../private, waits until the
# kernel has let go of its cached names (the harness drops the dentry cache, as memory pressure
# may at any time), reads PATH again.
SWAP_AND_WAIT = textwrap.dedent("""
    import os, subprocess, sys, time
    path, ws = sys.argv[1], sys.argv[2]
    for _ in range(3):
        with open(path) as fh:
            print("first", fh.read().strip())
    os.rename(ws + "/output/d", ws + "/output/d.old")
    subprocess.run(["ln", "-s", "../private", ws + "/output/d"], check=True)
    with open(ws + "/output/ready", "w") as fh:
        fh.write("1")
    deadline = time.monotonic() + 30
    while not os.path.exists(ws + "/output/go") and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with open(path) as fh:
            print("second", fh.read().strip())
    except PermissionError as exc:
        print("second denied", exc)
""")


def _evict_when_ready(ws: Path) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 60
        while not (ws / "output" / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
        (ws / "output" / "go").write_text("1")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _need_root_overlay() -> None:
    why = None
    if os.geteuid() != 0:
        why = "needs root: an overlay mount and dropping the dentry cache"
    elif shutil.which("unshare") is None or shutil.which("mount") is None:
        why = "unshare(1) and mount(8) are needed for a private mount namespace"
    if why is not None:
        pytest.skip(why)


def _in_namespace(tmp_path: Path, ws: Path, mount: str) -> list[str]:
    script = tmp_path / "in_namespace.sh"
    script.write_text(f'set -e\n{mount}\nshift\nexec "$@"\n')
    return [shutil.which("unshare") or "unshare", "-m", "sh", str(script), str(ws)]


def test_an_overlay_over_a_write_root_is_not_frozen(tmp_path: Path) -> None:
    """Finding 3: ``mirror/`` (in the read-only workspace) is an overlay whose lower layer is
    ``output/``. Its device holds no write root, so the mount table alone called ``mirror/d``
    frozen and remembered ``mirror/d/f.txt``; once the kernel dropped its cached names, the
    same path reached ``private/f.txt`` through the symlink the tree made in ``output/``."""
    _need_root_overlay()
    ws, home, policy = _world(tmp_path)
    (ws / "mirror").mkdir()
    (tmp_path / "empty").mkdir()
    (ws / "agent.py").write_text(SWAP_AND_WAIT)
    prefix = _in_namespace(tmp_path, ws, f'mount -t overlay overlay -o lowerdir="$1/output:{tmp_path}/empty" '
                                         '"$1/mirror"')
    thread = _evict_when_ready(ws)
    out = _run(ws, home, policy, "mirror/d/f.txt", str(ws), prefix=prefix)
    thread.join(5)
    assert out.count("first benign") == 3  # the control: the same read, allowed each time
    assert (ws / "output" / "d").is_symlink()  # (the swap really happened)
    assert "SECRET" not in out and "second denied" in out, out


def test_control_an_overlay_of_read_only_layers_is_still_read(tmp_path: Path) -> None:
    """Control: an overlay of directories outside the write roots reads as before."""
    _need_root_overlay()
    ws, home, policy = _world(tmp_path)
    (ws / "mirror").mkdir()
    (ws / "lower" / "d").mkdir(parents=True)
    (ws / "lower" / "d" / "f.txt").write_text("benign\n")
    (tmp_path / "empty").mkdir()
    (ws / "agent.py").write_text("import sys\nfor _ in range(3):\n"
                                 "    print('first', open(sys.argv[1]).read().strip())\n")
    prefix = _in_namespace(tmp_path, ws, f'mount -t overlay overlay -o lowerdir="$1/lower:{tmp_path}/empty" '
                                         '"$1/mirror"')
    out = _run(ws, home, policy, "mirror/d/f.txt", prefix=prefix)
    assert out.count("first benign") == 3, out
    assert not os.path.ismount(ws / "mirror")  # (the overlay went with its namespace)


def test_the_landlock_claim_is_never_passed_through(make_gate) -> None:  # type: ignore[no-untyped-def]
    """Finding 5 (defence in depth): ``CAPGATE_LANDLOCK=writes`` turns the remembered reads on;
    only the process that applied the Landlock plan may say so. Passed through (``--allow-env
    CAPGATE_LANDLOCK``, a nested run's environment) on a tree without Landlock, it would have
    switched them on with nothing holding the directories still. Control: ``LANG`` passes."""
    from capgate._sys.clean_env import build_child_env

    gate = make_gate({"process": {"envPassthrough": ["LANG", "CAPGATE_LANDLOCK"]}})
    env = build_child_env(gate.policy, home="/h", tmpdir="/t", extra={"CAPGATE_LANDLOCK": "writes"},
                          base_env={"LANG": "C", "CAPGATE_LANDLOCK": "writes"})
    assert env.get("LANG") == "C" and "CAPGATE_LANDLOCK" not in env, env
