"""Review round 8, staged writes: a staged symlink whose target passes through *another staged*
symlink. The apply check resolved the target lexically (``normpath``) and looked for symlinks
on the way only in the real workspace, where the run's own links do not exist yet: ``sub/s ->
..`` (the workspace itself: fine) and ``esc -> sub/s/../victim/v.txt`` (lexically
``ws/sub/victim/v.txt``: inside) both passed, and after apply the kernel resolves ``esc`` to
``../victim/v.txt`` — outside the workspace, which apply promises never to let a link point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._staging_helpers import build_staged_probe, capgate, snapshot, staged


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "s.txt").write_text("s\n")
    home = tmp_path / "home"
    home.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "v.txt").write_text("victim\n")
    (ws / "tools").mkdir()
    probe = build_staged_probe(ws / "tools")
    return {"ws": ws, "home": home, "victim": victim, "probe": probe}


def _run(world: dict[str, Path], *actions: str) -> None:
    before = snapshot(world["ws"])
    done = staged(world["ws"], world["home"], [str(world["probe"]), *actions])
    assert all(line.endswith(" OK") for line in done.stdout.splitlines()), done.stdout + done.stderr
    assert snapshot(world["ws"]) == before


def test_link_through_a_staged_link_that_leads_out_is_refused(world: dict[str, Path]) -> None:
    ws = world["ws"]
    _run(world, "symlink", "..", f"{ws}/sub/s", "symlink", "sub/s/../victim/v.txt", f"{ws}/esc",
         "symlink", "sub/s.txt", f"{ws}/inside")
    before = snapshot(ws)
    done = capgate(ws, world["home"], "apply")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "esc: staged symlink" in done.stderr and "passes through a symlink" in done.stderr
    assert snapshot(ws) == before
    assert not os.path.lexists(ws / "esc")
    # control: the same run's plain link, and the link to the workspace itself, apply
    ok = capgate(ws, world["home"], "apply", "inside", "sub/s")
    assert ok.returncode == 0, ok.stderr
    assert (ws / "inside").read_text() == "s\n"
    assert os.path.realpath(ws / "sub" / "s") == str(ws)


def test_link_through_a_link_applied_earlier_is_refused(world: dict[str, Path]) -> None:
    ws = world["ws"]
    _run(world, "symlink", "..", f"{ws}/sub/s", "symlink", "sub/s/../victim/v.txt", f"{ws}/esc")
    first = capgate(ws, world["home"], "apply", "sub/s")
    assert first.returncode == 0, first.stderr
    done = capgate(ws, world["home"], "apply", "esc")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "passes through a symlink" in done.stderr
    assert not os.path.lexists(ws / "esc")
