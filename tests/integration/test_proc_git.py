"""git under proc.run: an ordinary workflow works; a repository configured to run code is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import capgate
from capgate import proc
from tests.conftest import audit_lines

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gate(make_gate):  # type: ignore[no-untyped-def]
    with make_gate({"process": {"allowedCommands": ["git", "env"]}}) as g:
        yield g


def _ok(argv: list[str]) -> bytes:
    result = proc.run(argv, timeout=20)
    assert result.returncode == 0, (argv, result.stderr)
    return result.stdout


def test_ordinary_workflow_runs(gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """init/add/commit/diff/show/log/status, with diff and show printing real patches."""
    (workspace / "notes.txt").write_text("one\n")
    _ok(["git", "init", "-q"])
    _ok(["git", "config", "user.email", "a@example.invalid"])  # not a key that runs anything
    _ok(["git", "config", "user.name", "a"])
    _ok(["git", "add", "notes.txt"])
    _ok(["git", "commit", "-qm", "first"])
    (workspace / "notes.txt").write_text("two\n")
    assert b"-one\n+two" in _ok(["git", "diff"])
    assert b" M notes.txt" in _ok(["git", "status", "--porcelain"])
    _ok(["git", "commit", "-qam", "second"])
    assert b"+two" in _ok(["git", "show", "HEAD"])
    assert _ok(["git", "log", "--format=%s"]) == b"second\nfirst\n"
    assert b"-one\n+two" in _ok(["git", "diff", "HEAD~1", "HEAD"])


@pytest.mark.parametrize("config", [
    '[filter "x"]\n\tclean = touch {mark}\n',
    '[diff "x"]\n\ttextconv = touch {mark}\n',
    '[merge "x"]\n\tdriver = touch {mark}\n',
    "[alias]\n\tst = !touch {mark}\n",
    "[trailer \"t\"]\n\tcmd = touch {mark}\n",
    "[gpg]\n\tprogram = touch {mark}\n",
    "[include]\n\tpath = {extra}\n",
], ids=["filter", "textconv", "merge-driver", "alias", "trailer-cmd", "gpg", "include"])
@pytest.mark.parametrize("argv", [["git", "status"], ["env", "git", "status"], ["git", "-P", "show"]],
                         ids=["git", "env-git", "git-P-show"])
def test_repository_that_configures_a_program_is_refused(gate, audit_stream, workspace: Path,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path, config: str, argv: list[str]) -> None:
    mark = tmp_path / "MARK"
    extra = tmp_path / "extra.gitconfig"
    extra.write_text(f'[filter "y"]\n\tsmudge = touch {mark}\n')
    _ok(["git", "init", "-q"])
    with open(workspace / ".git" / "config", "a") as fh:
        fh.write(config.format(mark=mark, extra=extra))
    with pytest.raises(capgate.PermissionDenied) as info:
        proc.run(argv, timeout=20)
    assert info.value.rule == "process.gitConfig", info.value
    assert "git configuration" in str(info.value)
    assert not mark.exists()
    denied = [line for line in audit_lines(audit_stream) if line.get("rule") == "process.gitConfig"]
    assert denied and denied[-1]["decision"] == "deny", json.dumps(denied)


def test_git_config_can_repair_the_repository(gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    _ok(["git", "init", "-q"])
    with open(workspace / ".git" / "config", "a") as fh:
        fh.write("[alias]\n\tst = !echo hi\n")
    with pytest.raises(capgate.PermissionDenied):
        proc.run(["git", "status"])
    assert _ok(["git", "config", "--get", "alias.st"]) == b"!echo hi\n"
    _ok(["git", "config", "--remove-section", "alias"])
    _ok(["git", "status"])
    with pytest.raises(capgate.PermissionDenied) as info:  # but it cannot set one
        proc.run(["git", "config", "alias.st", "!echo hi"])
    assert info.value.rule == "process.gitArguments"


def test_unreadable_configuration_fails_closed(gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    _ok(["git", "init", "-q"])
    with open(workspace / ".git" / "config", "a") as fh:
        fh.write("[broken\n")
    with pytest.raises(capgate.PermissionDenied) as info:
        proc.run(["git", "status"])
    assert info.value.rule == "process.gitConfig" and "could not list" in str(info.value)
