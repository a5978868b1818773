"""Review round 8, staged writes: the change list is what a person reads before ``capgate
apply``, and the agent names the files in it. A name holding terminal control sequences
(``ESC [1A ESC [2K``: cursor up, erase the line) rubbed out the line above it — the agent's
``A src/evil.py`` vanished from ``capgate changes`` and from the end-of-run preview on a
terminal, while ``apply`` would still write it. Names are shown escaped, one line per change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._staging_helpers import build_staged_probe, capgate, staged

HIDER = "zz\x1b[1A\x1b[2K\r\x1b[2K"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "tools").mkdir()
    build_staged_probe(ws / "tools")
    return ws


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]


def test_control_characters_in_staged_names_are_shown_escaped(ws: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    probe = str(ws / "tools" / "staged_probe")
    done = staged(ws, home, [probe, "write", f"{ws}/src/evil.py", "import os", "write", f"{ws}/src/{HIDER}", "x",
                             "write", f"{ws}/src/new\nline.txt", "y"])
    assert done.returncode == 0, done.stderr
    listing = capgate(ws, home, "changes")
    assert listing.returncode == 0, listing.stderr
    for text in (listing.stdout, done.stderr):
        assert "\x1b" not in text and "\r" not in text, repr(text)
        changed = [line for line in _lines(text) if line.startswith("  A ")]
        assert len(changed) == 3, repr(text)  # one line per change: none hidden, none made up
        assert any(line.endswith("src/evil.py") for line in changed)  # control: the plain name as it is
        assert any("\\x1b" in line for line in changed) and any("\\n" in line for line in changed)


def test_control_characters_in_staged_content_are_escaped_in_the_diff(ws: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (ws / "src" / "a.py").write_text("print('a')\n")
    probe = str(ws / "tools" / "staged_probe")
    done = staged(ws, home, [probe, "append", f"{ws}/src/a.py", "evil()\n\x1b[1A\x1b[2K# fine\n\tindented\n"])
    assert done.returncode == 0, done.stderr
    diff = capgate(ws, home, "changes", "--diff")
    assert diff.returncode == 0, diff.stderr
    assert "\x1b" not in diff.stdout, repr(diff.stdout)
    assert "+evil()\n" in diff.stdout and "+\\x1b[1A\\x1b[2K# fine\n" in diff.stdout
    assert "+\tindented\n" in diff.stdout and "+print('a')" not in diff.stdout  # control: tabs, context as is
