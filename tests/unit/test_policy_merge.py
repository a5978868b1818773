"""Restrict-only by default; expansion only when asked; deny always beats allow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import capgate


def _load(tmp_path: Path, workspace: Path, body: dict[str, object], **kw: object) -> capgate.Policy:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, **body}))
    return capgate.load_policy(path, workspace=workspace, **kw)  # type: ignore[arg-type]


RESTRICTING = [
    {"filesystem": {"read": ["src"]}},
    {"filesystem": {"write": ["output"]}},
    {"filesystem": {"denyRead": ["secrets/"], "denyWrite": ["output/keep"]}},
    {"network": {"enabled": False, "allowedPorts": [443], "deniedDomains": ["evil.com"]}},
    {"process": {"allowShell": False, "envPassthrough": ["LANG"], "allowedCommands": []}},
    {"limits": {"memoryMb": 256, "wallTimeSeconds": 10, "maxProcesses": 8}},
]


@pytest.mark.parametrize("body", RESTRICTING)
def test_restricting_entries_load_restrict_only(body: dict[str, object], tmp_path: Path, workspace: Path) -> None:
    policy = _load(tmp_path, workspace, body)
    assert policy.origin == "restrict-only"


EXPANDING = {
    "read-outside": ({"filesystem": {"read": ["/etc"]}}, "filesystem.read[0]"),
    "write-src": ({"filesystem": {"write": ["src"]}}, "filesystem.write[0]"),
    "network-on": ({"network": {"enabled": True}}, "network.enabled"),
    "new-domain": ({"network": {"allowedDomains": ["api.example.com"]}}, "network.allowedDomains[0]"),
    "new-port": ({"network": {"allowedPorts": [80]}}, "network.allowedPorts[0]"),
    "new-command": ({"process": {"allowedCommands": ["git"]}}, "process.allowedCommands[0]"),
    "shell": ({"process": {"allowShell": True}}, "process.allowShell"),
    "env": ({"process": {"envPassthrough": ["AWS_SECRET_ACCESS_KEY"]}}, "process.envPassthrough[0]"),
    "limit-up": ({"limits": {"memoryMb": 4096}}, "limits.memoryMb"),
    "rmtree": ({"filesystem": {"recursiveDelete": ["output"]}}, "filesystem.recursiveDelete[0]"),
}


@pytest.mark.parametrize("case", sorted(EXPANDING))
def test_expanding_entry_is_refused_naming_entry_and_flag(case: str, tmp_path: Path, workspace: Path) -> None:
    body, key = EXPANDING[case]
    with pytest.raises(capgate.PolicyError) as info:
        _load(tmp_path, workspace, body)
    assert key in str(info.value)
    # the three ways, in the command line's words (no Python spelling: True, allow_user_expansion=True)
    assert "--allow-user-expansion" in str(info.value) and "permissions.json" in str(info.value)
    assert "allow_user_expansion" not in str(info.value) and "True" not in str(info.value)
    assert info.value.key == key


def test_every_expanding_entry_is_listed_at_once(tmp_path: Path, workspace: Path) -> None:
    body: dict[str, object] = {}
    for case_body, _ in EXPANDING.values():
        for section, values in case_body.items():
            body.setdefault(section, {}).update(values)  # type: ignore[attr-defined]
    with pytest.raises(capgate.ExpansionRefused) as info:
        _load(tmp_path, workspace, body)
    keys = [key for key, _ in info.value.entries]
    assert set(keys) >= {key for _, key in EXPANDING.values()}, keys


@pytest.mark.parametrize("case", sorted(EXPANDING))
def test_expansion_allowed_says_expanded(case: str, tmp_path: Path, workspace: Path) -> None:
    body, _ = EXPANDING[case]
    policy = _load(tmp_path, workspace, body, allow_user_expansion=True)
    assert policy.origin == "expanded"


def test_user_deny_lists_add_to_defaults_never_replace(tmp_path: Path, workspace: Path) -> None:
    policy = _load(tmp_path, workspace, {"filesystem": {"denyRead": ["secrets/"], "denyWrite": []}})
    sources = [p.source for p in policy.filesystem.deny_read]
    assert "~/.ssh" in sources and "secrets/" in sources
    assert any(p.mandatory for p in policy.filesystem.deny_write)


def test_deny_beats_allow_even_when_expanded(tmp_path: Path, workspace: Path, fake_home: Path) -> None:
    policy = _load(tmp_path, workspace, {"filesystem": {"read": [str(fake_home)], "write": ["."]}},
                   allow_user_expansion=True)
    gate = capgate.Gate(policy)
    assert gate.check("fs.read", "~/.bashrc").allowed
    assert not gate.check("fs.read", "~/.ssh/id_rsa").allowed
    assert not gate.check("fs.write", ".git/hooks/pre-commit").allowed
    assert not gate.check("fs.write", ".env").allowed


def test_user_deny_patterns_anchor_at_workspace_home_or_root(tmp_path: Path, workspace: Path) -> None:
    policy = _load(tmp_path, workspace, {"filesystem": {"denyRead": ["src/private", "~/notes", "/etc/shadow",
                                                                   "*.sqlite", "cache/"]}})
    gate = capgate.Gate(policy)
    assert not gate.check("fs.read", "src/private/x").allowed
    assert gate.check("fs.read", "other/src/private/x").allowed  # anchored at the workspace root
    assert not gate.check("fs.read", "deep/db.sqlite").allowed  # no slash: any depth
    assert not gate.check("fs.read", "a/cache/b").allowed
    assert gate.check("fs.read", "a/cache").allowed is False  # directory pattern: the dir itself too
    assert gate.check("fs.read", "src/app.py").allowed


def test_deny_pattern_with_symlinked_prefix_covers_both_spellings(tmp_path: Path, workspace: Path,
                                                                  fake_home: Path) -> None:
    real = tmp_path / "real-keys"
    real.mkdir()
    (real / "k").write_text("secret")
    (fake_home / "keys").symlink_to(real)
    policy = _load(tmp_path, workspace, {"filesystem": {"read": [str(tmp_path)], "denyRead": ["~/keys"]}},
                   allow_user_expansion=True)
    gate = capgate.Gate(policy)
    assert not gate.check("fs.read", "~/keys/k").allowed
    assert not gate.check("fs.read", str(real / "k")).allowed


def test_workspace_with_glob_characters_is_escaped(tmp_path: Path, fake_home: Path) -> None:
    ws = tmp_path / "w[s]*?"
    (ws / "src").mkdir(parents=True)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "filesystem": {"denyRead": ["src/secret.txt"]}}))
    gate = capgate.Gate(capgate.load_policy(path, workspace=ws))
    assert not gate.check("fs.read", "src/secret.txt").allowed
    assert gate.check("fs.read", "src/other.txt").allowed


def test_inner_load_from_a_base_can_only_restrict(tmp_path: Path, workspace: Path) -> None:
    base = _load(tmp_path, workspace, {"process": {"allowedCommands": ["git"]}}, allow_user_expansion=True)
    narrowed = capgate.load_policy(None, workspace=workspace, base=base)
    assert narrowed.process.allowed_commands == ("git",)
    path = tmp_path / "inner.json"
    path.write_text(json.dumps({"version": 1, "process": {"allowedCommands": ["git", "curl"]}}))
    with pytest.raises(capgate.PolicyError, match=r"allowedCommands\[1\]"):
        capgate.load_policy(path, workspace=workspace, base=base)
