"""Deny patterns that would silently deny nothing are refused at policy load, naming the key.

* trailing whitespace (gitignore drops it: ``"notes.txt "`` is a typo either way) and control
  characters are ``PolicyError``s; an escaped trailing space (``"name\\ "``) is how a name
  ending in a space is written, and works;
* every anchored line must deny a path built from it (``check_denies_something``): a
  translation that matches nothing is refused rather than trusted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import capgate
from capgate import paths
from capgate.ops import FS_READ


def _load(workspace: Path, tmp_path: Path, deny_read: list[str]) -> capgate.Policy:
    path = tmp_path / "deny-policy.json"
    path.write_text(json.dumps({"filesystem": {"denyRead": deny_read}}))
    return capgate.load_policy(path, workspace=workspace)


@pytest.mark.parametrize("entry", ["notes.txt ", "notes.txt\u00a0", "secrets/ ", "a\tb", "a\nb", "notes\r",
                                   "x\x7f", "x\x85"], ids=repr)
def test_whitespace_typos_and_control_characters_are_refused_naming_the_key(
    entry: str, workspace: Path, tmp_path: Path
) -> None:
    with pytest.raises(capgate.PolicyError) as info:
        _load(workspace, tmp_path, ["*.pem", entry])
    assert info.value.key == "filesystem.denyRead[1]"
    assert "filesystem.denyRead[1]" in str(info.value)


def test_an_escaped_trailing_space_and_inner_spaces_work(workspace: Path, tmp_path: Path) -> None:
    (workspace / "notes.txt ").write_text("spaced")
    (workspace / "key dir").mkdir()
    (workspace / "key dir" / "id.txt").write_text("secret")
    policy = _load(workspace, tmp_path, ["notes.txt\\ ", "key dir/"])
    g = capgate.Gate(policy)
    assert g.check(FS_READ, str(workspace / "notes.txt ")).rule == "filesystem.denyRead[0]"
    assert g.check(FS_READ, str(workspace / "key dir" / "id.txt")).rule == "filesystem.denyRead[1]"
    assert g.check(FS_READ, str(workspace / "src" / "app.py")).allowed  # control


def test_a_translation_that_denies_nothing_is_refused_at_load(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate pathspec's ``/``-only translation (what ``/**/*/**`` alone gave) for one line."""
    sources = dict(paths._REGEX_SOURCES)
    for line in paths.anchor_pattern("gen/*/x.key", str(workspace.resolve()), str(Path.home()), "k"):
        sources[line] = "/"
    monkeypatch.setattr(paths, "_REGEX_SOURCES", sources)
    with pytest.raises(capgate.PolicyError, match="does not deny") as info:
        _load(workspace, tmp_path, ["*.pem", "gen/*/x.key"])
    assert info.value.key == "filesystem.denyRead[1]"
    # control: the same policy without the mistranslated line loads and denies its paths
    policy = _load(workspace, tmp_path, ["*.pem", "out/*/x.key"])
    assert not capgate.Gate(policy).check(FS_READ, str(workspace / "out" / "a" / "x.key")).allowed


@pytest.mark.parametrize("line, witness", [
    ("/ws/gen/*/x.key", "/ws/gen/x/x.key"),
    ("**/ke? /**", "/x/kex /x"),
    ("/ws/[!a]b/**/*/**", "/ws/xb/x/x/x"),
    ("*.pem", "/x.pem"),
    ("/ws/[]a]z", "/ws/az"),
    ("/ws/a\\*b", "/ws/a*b"),
])
def test_witness_paths_are_matched_by_their_line(line: str, witness: str) -> None:
    assert paths._witness(line) == witness
    assert paths.PathMatcher([(line,)]).matches(witness)


def test_dir_double_star_denies_the_directory_itself_but_dir_star_does_not(workspace: Path, tmp_path: Path) -> None:
    """The documented choice, as the gitignore reference (pathspec) has it: ``dir/**`` matches
    ``dir/``, so the directory itself is denied (its names cannot be listed); ``dir/*`` matches
    only what is inside."""
    (workspace / "vault").mkdir()
    g = capgate.Gate(_load(workspace, tmp_path, ["secrets/**", "vault/*"]))
    assert g.check(FS_READ, str(workspace / "secrets")).rule == "filesystem.denyRead[0]"
    assert g.check(FS_READ, str(workspace / "vault" / "x")).rule == "filesystem.denyRead[1]"
    assert g.check(FS_READ, str(workspace / "vault")).allowed
