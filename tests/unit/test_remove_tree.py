"""The launcher's clean-up of a run directory never changes anything outside it.

Found when two launchers swept the same dead run directory at once: the loser's ``rmtree``
failed on the directory itself (already gone) and the clean-up "opened up" its parent —
``chmod 0700 /tmp`` as root, which locked every other user out of /tmp."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from capgate.launcher import _remove_tree


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_run_directory_already_gone_leaves_its_parent_alone(tmp_path: Path) -> None:
    parent = tmp_path / "shared-tmp"
    parent.mkdir()
    parent.chmod(0o1777)
    _remove_tree(str(parent / "capgate-run-1-gone"))
    assert _mode(parent) == 0o1777


def test_an_unwritable_directory_inside_the_run_is_opened_up_and_removed(tmp_path: Path) -> None:
    """The control: what the clean-up is for — a child's ``chmod 000`` inside the run dir."""
    parent = tmp_path / "shared-tmp"
    parent.mkdir()
    parent.chmod(0o1777)
    run = parent / "capgate-run-2"
    locked = run / "a" / "locked"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    locked.chmod(0)
    (run / "a").chmod(0o500)
    _remove_tree(str(run))
    assert not run.exists()
    assert _mode(parent) == 0o1777
    assert os.listdir(parent) == []
