"""A symlink flipped between a benign file and the secret while reads run in a loop.

The attacker thread renames a prepared symlink over ``src/target`` as fast as it can,
alternating between a link to the benign file and a link to ``~/.ssh/id_rsa``. Whatever
interleaving happens, no read may return the secret; some reads must succeed (so the test
is not passing because everything is denied). Bounded in time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import capgate
from capgate import fs
from tests.conftest import SECRET


def _flipper(ws: Path, home: Path, stop: threading.Event) -> None:
    benign = ws / "src" / "app.py"
    secret = home / ".ssh" / "id_rsa"
    target = ws / "src" / "target"
    tmp_good, tmp_bad = ws / "src" / ".good", ws / "src" / ".bad"
    while not stop.is_set():
        for tmp, dest in ((tmp_good, benign), (tmp_bad, secret)):
            try:
                os.symlink(dest, tmp)
            except FileExistsError:
                pass
            os.replace(tmp, target)


def _run_race(gate: capgate.Gate, ws: Path, home: Path, reader, seconds: float = 2.0) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    (ws / "src" / "target").symlink_to(ws / "src" / "app.py")
    stop = threading.Event()
    thread = threading.Thread(target=_flipper, args=(ws, home, stop), daemon=True)
    thread.start()
    ok = denied = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                data = reader("src/target")
            except PermissionError:
                denied += 1
            except FileNotFoundError:
                denied += 1
            else:
                assert SECRET not in str(data)
                ok += 1
    finally:
        stop.set()
        thread.join(5)
    return ok, denied


def test_symlink_swap_never_yields_secret_read_text(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    ok, denied = _run_race(gate, workspace, fake_home, fs.read_text)
    assert ok > 0, "benign reads must get through while the link points at the benign file"
    assert denied > 0, "reads while the link points at the secret must be denied"


def test_symlink_swap_never_yields_secret_open(gate: capgate.Gate, workspace: Path, fake_home: Path) -> None:
    def reader(path: str) -> bytes:
        with fs.open(path, "rb") as fh:
            return fh.read()

    ok, denied = _run_race(gate, workspace, fake_home, reader, seconds=1.0)
    assert ok > 0 and denied > 0


def test_swapped_directory_symlink_is_refused_not_followed(gate: capgate.Gate, workspace: Path, fake_home: Path
                                                           ) -> None:
    """A directory on the path replaced by a link to ~/.ssh after the check: the open refuses."""
    (fake_home / ".ssh" / "known_hosts").write_text(SECRET)
    (workspace / "src" / "known_hosts").write_text("benign\n")
    # decided when it is a directory...
    assert gate.check("fs.read", "src/known_hosts").allowed
    # ...then swapped: the old directory becomes a link into ~/.ssh
    os.rename(workspace / "src", workspace / "src.orig")
    (workspace / "src").symlink_to(fake_home / ".ssh")
    with pytest.raises(PermissionError):
        fs.read_text("src/known_hosts")
