"""The user policy file is hostile input: strict schema, size cap, clear errors naming keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import capgate
from capgate.policy import MAX_POLICY_BYTES


def _load(tmp_path: Path, text: str, workspace: Path, **kw: object) -> capgate.Policy:
    path = tmp_path / "agent-permissions.json"
    path.write_text(text)
    return capgate.load_policy(path, workspace=workspace, **kw)  # type: ignore[arg-type]


BAD = {
    "unknown-top": ('{"version": 1, "filesystm": {}}', "filesystm"),
    "unknown-nested": ('{"version": 1, "filesystem": {"raed": ["."]}}', "filesystem.raed"),
    "unknown-deep": ('{"version": 1, "network": {"deniedDomains": [{"domain": "a.com", "reason": "x", "y": 1}]}}',
                     "network.deniedDomains[0]"),
    "number-as-path": ('{"version": 1, "filesystem": {"read": [1]}}', "filesystem.read[0]"),
    "object-as-path": ('{"version": 1, "filesystem": {"read": [{"p": "."}]}}', "filesystem.read[0]"),
    "string-as-number": ('{"version": 1, "limits": {"memoryMb": "256"}}', "limits.memoryMb"),
    "bool-as-number": ('{"version": 1, "limits": {"memoryMb": true}}', "limits.memoryMb"),
    "float-as-number": ('{"version": 1, "limits": {"memoryMb": 256.0}}', "limits.memoryMb"),
    "negative-limit": ('{"version": 1, "limits": {"cpuSeconds": -1}}', "limits.cpuSeconds"),
    "string-as-bool": ('{"version": 1, "network": {"enabled": "true"}}', "network.enabled"),
    "int-as-bool": ('{"version": 1, "process": {"allowShell": 1}}', "process.allowShell"),
    "empty-path": ('{"version": 1, "filesystem": {"write": [""]}}', "filesystem.write[0]"),
    "nul-path": ('{"version": 1, "filesystem": {"read": ["a\\u0000b"]}}', "filesystem.read[0]"),
    "string-not-list": ('{"version": 1, "filesystem": {"read": "."}}', "filesystem.read"),
    "unknown-version": ('{"version": 2}', "version"),
    "string-version": ('{"version": "1"}', "version"),
    "bool-version": ('{"version": true}', "version"),
    "float-version": ('{"version": 1.0}', "version"),
    "zero-version": ('{"version": 0}', "version"),
    "null-version": ('{"version": null}', "version"),
    "negated-deny": ('{"version": 1, "filesystem": {"denyRead": ["!~/.ssh"]}}', "filesystem.denyRead[0]"),
    "port-out-of-range": ('{"version": 1, "network": {"allowedPorts": [70000]}}', "network.allowedPorts[0]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_policy_is_a_policy_error_naming_the_key(case: str, tmp_path: Path, workspace: Path) -> None:
    text, key = BAD[case]
    with pytest.raises(capgate.PolicyError) as info:
        _load(tmp_path, text, workspace, allow_user_expansion=True)
    assert key in str(info.value)
    assert isinstance(info.value, ValueError)


def test_invalid_json_names_line_and_column(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(capgate.PolicyError, match=r"line 3 column \d+"):
        _load(tmp_path, '{\n  "version": 1,\n  "filesystem": {,}\n}', workspace)


def test_duplicate_keys_are_refused(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(capgate.PolicyError, match="duplicate key 'network'"):
        _load(tmp_path, '{"version": 1, "network": {}, "network": {"enabled": true}}', workspace)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(constant: str, tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(capgate.PolicyError):
        _load(tmp_path, f'{{"version": 1, "limits": {{"cpuSeconds": {constant}}}}}', workspace)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path, workspace: Path) -> None:
    text = '{"version": 1, "filesystem": {"denyRead": [' + ",".join(['"x"'] * 20000) + "]}}"
    assert len(text) > MAX_POLICY_BYTES
    with pytest.raises(capgate.PolicyError, match="larger than"):
        _load(tmp_path, text, workspace)
    path = tmp_path / "huge.json"
    path.write_bytes(b" " * (MAX_POLICY_BYTES + 1))
    with pytest.raises(capgate.PolicyError, match="larger than"):
        capgate.load_policy(path, workspace=workspace)


def test_missing_file_and_bad_workspace(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(capgate.PolicyError, match="cannot read"):
        capgate.load_policy(tmp_path / "nope.json", workspace=workspace)
    with pytest.raises(capgate.PolicyError, match="workspace"):
        capgate.load_policy(None, workspace=tmp_path / "no-such-dir")


def test_defaults_are_least_privilege(workspace: Path, fake_home: Path) -> None:
    policy = capgate.load_policy(None, workspace=workspace)
    assert policy.origin == "defaults"
    assert policy.filesystem.read == (str(workspace),)
    assert policy.filesystem.write == (str(workspace / "output"), str(workspace / ".cache" / "agent"))
    sources = {p.source for p in policy.filesystem.deny_read}
    for secret in ("~/.ssh", "~/.gnupg", "~/.config", "~/Library/Keychains", "~/.aws", "~/.kube",
                   "~/.docker/config.json", "~/.netrc", "~/.git-credentials", "~/.npmrc", "~/.pypirc",
                   ".env*", "*.pem"):
        assert secret in sources
    mandatory = {p.source for p in policy.filesystem.deny_write if p.mandatory}
    for name in (".bashrc", ".bash_profile", ".zshrc", ".profile", ".gitconfig", ".gitmodules", ".envrc",
                 ".mcp.json", "**/.git/hooks/", "**/.git/config", ".vscode/", ".idea/"):
        assert name in mandatory
    assert policy.network.enabled is False and policy.network.allowed_ports == (443,)
    assert policy.process.allowed_commands == () and policy.process.allow_shell is False
    assert policy.limits.wall_time_seconds == 900 and policy.limits.max_file_size_mb == 256


def test_relative_entries_are_relative_to_workspace_not_cwd(tmp_path: Path, workspace: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = _load(tmp_path, '{"version": 1, "filesystem": {"read": ["src"]}}', workspace)
    assert policy.filesystem.read == (str(workspace / "src"),)


def test_relative_root_escaping_through_symlink_is_refused(tmp_path: Path, workspace: Path, fake_home: Path) -> None:
    (workspace / "vendor").symlink_to(fake_home)
    with pytest.raises(capgate.PolicyError, match=r"filesystem.read\[0\].*outside the workspace"):
        _load(tmp_path, '{"version": 1, "filesystem": {"read": ["vendor"]}}', workspace, allow_user_expansion=True)
    with pytest.raises(capgate.PolicyError, match="outside the workspace"):
        _load(tmp_path, '{"version": 1, "filesystem": {"read": ["../"]}}', workspace, allow_user_expansion=True)


def test_roots_are_symlink_resolved_once(tmp_path: Path, workspace: Path) -> None:
    (workspace / "real").mkdir()
    (workspace / "alias").symlink_to("real")
    policy = _load(tmp_path, '{"version": 1, "filesystem": {"read": ["alias"]}}', workspace)
    assert policy.filesystem.read == (str(workspace / "real"),)


def test_effective_policy_round_trips_as_json(tmp_path: Path, workspace: Path) -> None:
    policy = _load(tmp_path, '{"version": 1, "filesystem": {"denyRead": ["secrets/"]}}', workspace)
    data = json.loads(policy.to_json())
    assert data["origin"] == "restrict-only"
    assert all(p.startswith("/") for p in data["filesystem"]["read"])
    path = tmp_path / "effective.json"
    path.write_text(policy.to_json())
    assert capgate.load_effective_policy(path) == policy


def test_effective_policy_loader_is_strict(tmp_path: Path, workspace: Path) -> None:
    data = capgate.load_policy(None, workspace=workspace).to_dict()
    data["filesystem"]["extra"] = 1  # type: ignore[index]
    with pytest.raises(capgate.PolicyError):
        capgate.policy_from_dict(data) if hasattr(capgate, "policy_from_dict") else __import__(
            "capgate.policy", fromlist=["policy_from_dict"]).policy_from_dict(data)


@pytest.mark.parametrize(
    "text",
    ["{}", '{"network": {"enabled": false}}', '{"filesystem": {"denyRead": ["secrets/"]}}', '{"version": 1}'],
)
def test_version_is_optional_and_absent_means_one(text: str, tmp_path: Path, workspace: Path) -> None:
    policy = _load(tmp_path, text, workspace)
    defaults = capgate.load_policy(None, workspace=workspace)
    assert policy.network.enabled is False
    assert policy.filesystem.read == defaults.filesystem.read


def test_a_version_less_file_still_only_restricts(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(capgate.PolicyError, match="network"):
        _load(tmp_path, '{"network": {"enabled": true, "allowedDomains": ["example.com"]}}', workspace)


HOSTILE_SHAPES = {
    "huge-int": ('{"limits": {"cpuSeconds": ' + "9" * 5000 + "}}", "limits.cpuSeconds"),
    "huge-negative-int": ('{"limits": {"cpuSeconds": -' + "9" * 5000 + "}}", "limits.cpuSeconds"),
    "huge-int-in-list": ('{"network": {"allowedPorts": [443, ' + "1" * 4400 + "]}}", "network.allowedPorts[1]"),
    "deep-objects": ('{"a": ' * 1000 + "1" + "}" * 1000, None),
    "deep-lists": ('{"filesystem": {"read": ' + "[" * 1000 + "]" * 1000 + "}}", None),
    "moderately-deep": ('{"filesystem": {"read": ' + "[" * 40 + "]" * 40 + "}}", "filesystem.read"),
    "overflowing-float": ('{"limits": {"cpuSeconds": 1e999}}', "limits.cpuSeconds"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SHAPES))
def test_hostile_shapes_are_policy_errors(case: str, tmp_path: Path, workspace: Path) -> None:
    text, key = HOSTILE_SHAPES[case]
    assert len(text.encode()) <= MAX_POLICY_BYTES
    with pytest.raises(capgate.PolicyError) as info:
        _load(tmp_path, text, workspace)
    if key is not None:
        assert key in str(info.value)


def test_long_but_ordinary_numbers_are_still_judged_by_the_schema(tmp_path: Path, workspace: Path) -> None:
    # Control: an 18-digit number is parsed and the schema accepts it as a (lowered) limit.
    policy = _load(tmp_path, '{"limits": {"cpuSeconds": 10}}', workspace)
    assert policy.limits.cpu_seconds == 10
    with pytest.raises(capgate.PolicyError, match=r"limits\.cpuSeconds"):
        _load(tmp_path, '{"limits": {"cpuSeconds": 999999999999999999}}', workspace)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_policy_that_is_not_a_regular_file_is_refused_without_hanging(
    kind: str, tmp_path: Path, workspace: Path
) -> None:
    import os

    path = tmp_path / "agent-permissions.json"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a plain open() would block forever
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    with pytest.raises(capgate.PolicyError, match=r"regular file|cannot read"):
        capgate.load_policy(path, workspace=workspace)
    # Control: a regular file right beside it loads.
    ok = tmp_path / "ok.json"
    ok.write_text("{}")
    assert capgate.load_policy(ok, workspace=workspace).workspace == str(workspace)
