"""The change list read from an overlay's upper directory (issue 21), on upper directories made
by hand the way overlayfs makes them: whiteouts (``0:0`` character devices), opaque
directories (``user.overlay.opaque=y``), copy-up marks. Real files; the kernel's own overlay
is exercised by the integration and attack tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capgate.errors import StagingError
from capgate.staging.changes import Change, compute_changes, with_renames


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    (ws / "keep").mkdir(parents=True)
    (ws / "keep" / "k.txt").write_text("k\n")
    (ws / "same.txt").write_text("same\n")
    (ws / "gone").mkdir()
    (ws / "gone" / "inner").mkdir()
    (ws / "gone" / "inner" / "g.txt").write_text("g\n")
    (ws / "opaque").mkdir()
    (ws / "opaque" / "old.txt").write_text("old\n")
    (ws / "opaque" / "kept.txt").write_text("kept\n")
    (ws / "was_file").write_text("f\n")
    (ws / "was_dir").mkdir()
    (ws / "was_dir" / "w.txt").write_text("w\n")
    upper = tmp_path / "upper"
    upper.mkdir()
    return ws, upper


def _whiteout(path: Path) -> None:
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


def _by_path(changes: list[Change]) -> dict[str, str]:
    return {c.path: c.status for c in changes}


def test_whiteouts_opaque_dirs_and_type_changes(tmp_path: Path) -> None:
    ws, upper = _tree(tmp_path)
    (upper / "keep").mkdir()  # a directory copied up for a child: no change of its own
    (upper / "keep" / "new.txt").write_text("n\n")
    (upper / "same.txt").write_text("same\n")  # copied up, bytes and mode unchanged: no change
    os.chmod(upper / "same.txt", os.stat(ws / "same.txt").st_mode & 0o777)
    _whiteout(upper / "gone")  # a deleted tree
    (upper / "opaque").mkdir()  # removed and made again
    os.setxattr(upper / "opaque", "user.overlay.opaque", b"y")
    (upper / "opaque" / "kept.txt").write_text("kept\n")
    (upper / "was_file").mkdir()  # a file replaced by a directory
    (upper / "was_dir").write_text("now a file\n")  # a directory replaced by a file
    _whiteout(upper / "never_there")  # a whiteout over nothing: no change
    changes = compute_changes(str(upper), str(ws))
    assert _by_path(changes) == {
        "keep/new.txt": "A",
        "gone/inner/g.txt": "D", "gone/inner": "D", "gone": "D",
        "opaque/old.txt": "D",
        "was_file": "A",  # (after its D: the same path, one key here)
        "was_dir/w.txt": "D", "was_dir": "A",
    }
    order = [(c.path, c.status) for c in changes]
    assert order.index(("gone/inner/g.txt", "D")) < order.index(("gone/inner", "D")) < order.index(("gone", "D"))
    assert ("was_file", "D") in order and order.index(("was_file", "D")) < order.index(("was_file", "A"))
    assert ("was_dir", "D") in order and order.index(("was_dir/w.txt", "D")) < order.index(("was_dir", "D"))


def test_mode_only_change_is_m(tmp_path: Path) -> None:
    ws, upper = _tree(tmp_path)
    (upper / "same.txt").write_text("same\n")
    os.chmod(upper / "same.txt", 0o600)
    os.chmod(ws / "same.txt", 0o644)
    (change,) = compute_changes(str(upper), str(ws))
    assert (change.path, change.status, change.mode) == ("same.txt", "M", 0o600)


def test_the_workspace_is_never_read_through_a_symlink(tmp_path: Path) -> None:
    ws, upper = _tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "k.txt").write_text("k\n")
    os.rename(ws / "keep", ws / "keep.real")
    os.symlink(outside, ws / "keep")  # planted: the walk must see a symlink, not a directory
    (upper / "keep").mkdir()
    (upper / "keep" / "k.txt").write_text("k\n")
    statuses = _by_path(compute_changes(str(upper), str(ws)))
    assert statuses["keep"] == "A" and statuses["keep/k.txt"] == "A"  # the symlink is replaced, never entered


def test_overlay_features_capgate_does_not_read_are_refused(tmp_path: Path) -> None:
    ws, upper = _tree(tmp_path)
    (upper / "keep").mkdir()
    os.setxattr(upper / "keep", "user.overlay.redirect", b"/elsewhere")
    with pytest.raises(StagingError, match="redirect_dir"):
        compute_changes(str(upper), str(ws))
    os.removexattr(upper / "keep", "user.overlay.redirect")
    (upper / "same.txt").write_text("")
    os.setxattr(upper / "same.txt", "user.overlay.metacopy", b"")
    with pytest.raises(StagingError, match="metacopy"):
        compute_changes(str(upper), str(ws))


def test_a_rename_is_shown_only_when_certain(tmp_path: Path) -> None:
    ws, upper = _tree(tmp_path)
    mode = os.stat(ws / "same.txt").st_mode & 0o777
    _whiteout(upper / "same.txt")
    (upper / "moved.txt").write_text("same\n")
    os.chmod(upper / "moved.txt", mode)
    raw = compute_changes(str(upper), str(ws))
    assert _by_path(with_renames(raw, str(ws))) == {"same.txt": "D", "moved.txt": "A"}  # not copied up: a copy
    os.setxattr(upper / "moved.txt", "user.overlay.origin", b"")
    shown = with_renames(compute_changes(str(upper), str(ws)), str(ws))
    assert [(c.path, c.status, c.source) for c in shown] == [("moved.txt", "R", "same.txt")]
    (upper / "moved.txt").write_text("edited\n")  # renamed, then edited: D + A
    assert _by_path(with_renames(compute_changes(str(upper), str(ws)), str(ws))) == {"same.txt": "D",
                                                                                   "moved.txt": "A"}
