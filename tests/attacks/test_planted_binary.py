"""A look-alike ``git`` planted where the agent can write is never run; a hostile repo's
``.git/config`` cannot make the real git run code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import capgate
from capgate import proc

pytestmark = pytest.mark.timeout(60)


def plant(directory: Path, marker: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fake = directory / "git"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\necho fake git\n")
    fake.chmod(0o755)
    return fake


@pytest.fixture
def planted(make_gate, workspace: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    marker = workspace.parent / "PWNED"
    fakes = [plant(d, marker) for d in (workspace, workspace / "output", workspace / ".cache" / "agent",
                                        workspace / "src")]
    # the parent's own PATH is hostile too: it lists the planted directories first
    monkeypatch.setenv("PATH", os.pathsep.join([str(f.parent) for f in fakes] + [os.environ["PATH"]]))
    gate = make_gate({"process": {"allowedCommands": ["git"]}})
    with gate:
        yield marker, fakes
    assert not marker.exists(), "the planted git ran"


def test_bare_git_runs_the_system_git(planted, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    marker, _fakes = planted
    for cwd in (None, "output", "src", ".cache/agent"):
        result = proc.run(["git", "--version"], cwd=cwd)
        assert result.returncode == 0 and result.stdout.startswith(b"git version"), result
        assert result.executable == os.path.realpath("/usr/bin/git")
    assert not marker.exists()


def test_caller_path_in_env_is_ignored(planted, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    marker, _ = planted
    result = proc.run(["git", "--version"], env={"PATH": str(workspace / "output")})
    assert result.stdout.startswith(b"git version")
    assert not marker.exists()


@pytest.mark.parametrize("spelling", ["./git", "output/git", "{ws}/output/git", "{ws}/git", "{ws}/src/git"])
def test_planted_git_by_path_is_refused(planted, workspace: Path, spelling: str) -> None:  # type: ignore[no-untyped-def]
    marker, _ = planted
    with pytest.raises(capgate.PermissionDenied) as info:
        proc.run([spelling.replace("{ws}", str(workspace)), "--version"], cwd="output")
    assert info.value.rule.startswith("process.")
    assert not marker.exists()


def test_hostile_repo_config_cannot_run_code(planted, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    _marker, _ = planted
    hook_marker = workspace.parent / "HOOKED"
    subprocess.run(["git", "init", "-q", str(workspace)], check=True, env={"PATH": "/usr/bin:/bin"})
    with open(workspace / ".git" / "config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = touch {hook_marker}\n\tpager = touch {hook_marker}\n"
                 f"\thooksPath = {workspace}/hooks\n")
    for argv in (["git", "status", "--porcelain"], ["git", "-P", "log"], ["env", "git", "status"]):
        with pytest.raises(capgate.PermissionDenied) as info:
            proc.run(argv)
        assert info.value.rule in ("process.gitConfig", "process.allowedCommands"), info.value
    assert not hook_marker.exists()
    # git config itself never runs the configuration: it can show (and repair) it
    assert proc.run(["git", "config", "--get", "core.hooksPath"]).stdout == b"/dev/null\n"
    assert proc.run(["git", "config", "--unset", "core.fsmonitor"]).returncode == 0
    assert proc.run(["git", "config", "--unset", "core.pager"]).returncode == 0
    assert proc.run(["git", "config", "--unset", "core.hooksPath"]).returncode == 0
    assert proc.run(["git", "status", "--porcelain"]).returncode == 0
    assert not hook_marker.exists()
