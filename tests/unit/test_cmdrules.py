"""Decision table of the process gate: the shared shell corpus, lookup, allowlist identity."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from capgate.cmdrules import CommandRules
from capgate.testing import corpus
from tests.conftest import audit_lines

SHELL = json.loads((Path(__file__).parents[2] / "capgate/testing/corpus/shell.json").read_text())
ALLOWED = SHELL["allowedCommands"]


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(0o755)


@pytest.fixture
def rules(make_gate, workspace: Path) -> CommandRules:  # type: ignore[no-untyped-def]
    _plant(workspace / "output" / "git", workspace / "pwned")
    _plant(workspace / "git", workspace / "pwned")
    return make_gate({"process": {"allowedCommands": ALLOWED}}).command_rules  # type: ignore[no-any-return]


@pytest.mark.parametrize("entry", corpus("shell"), ids=lambda e: str(e.get("argv", e.get("input")))[:60])
def test_shell_corpus_decision(rules: CommandRules, workspace: Path, entry: dict[str, object]) -> None:
    value = entry.get("argv", entry.get("input"))
    if isinstance(value, list):
        value = [a.replace("{ws}", str(workspace)) for a in value]
    decision, resolved = rules.decide_argv(value, str(workspace))  # type: ignore[arg-type]
    if entry["expect"] == "allow":
        assert decision.allowed, decision
        assert resolved is not None and os.path.isabs(resolved)
        assert not resolved.startswith(str(workspace))
    else:
        assert not decision.allowed, f"{value!r} was allowed"
        assert decision.rule.startswith("process.") and decision.reason


def test_check_proc_exec_names_and_audits(make_gate, audit_stream) -> None:  # type: ignore[no-untyped-def]
    gate = make_gate({"process": {"allowedCommands": ["git"]}})
    assert gate.check("proc.exec", "git").allowed
    assert gate.check("proc.exec", "/usr/bin/git").allowed
    denied = gate.check("proc.exec", "sh")
    assert not denied.allowed and denied.rule == "process.allowShell"
    assert gate.check("proc.exec", "curl").rule == "process.allowedCommands"
    lines = [line for line in audit_lines(audit_stream) if line.get("op") == "proc.exec"]
    assert [line["decision"] for line in lines] == ["allow", "allow", "deny", "deny"]


def test_default_policy_allows_no_command(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    rules = make_gate().command_rules
    for argv in (["git", "status"], ["true"], ["echo", "x"]):
        assert not rules.decide_argv(argv, str(workspace))[0].allowed


def test_allow_shell_true_allows_shells(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    rules = make_gate({"process": {"allowShell": True}}).command_rules
    assert rules.decide_argv(["sh", "-c", "true"], str(workspace))[0].allowed
    assert not rules.decide_argv(["git", "status"], str(workspace))[0].allowed


def test_same_file_under_other_name_is_refused(make_gate, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a multi-call binary allowed under one name must not run under another name
    rules = make_gate({"process": {"allowedCommands": ["true"]}}).command_rules
    assert rules.decide_argv(["true"], str(workspace))[0].allowed
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "sneaky").symlink_to("/usr/bin/true")
    assert not rules.decide_argv([str(link_dir / "sneaky")], str(workspace))[0].allowed


def test_absolute_entry_matches_resolved_file(make_gate, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = make_gate({"process": {"allowedCommands": ["/usr/bin/true"]}}).command_rules
    decision, resolved = rules.decide_argv(["/usr/bin/true"], str(workspace))
    assert decision.allowed and resolved == os.path.realpath("/usr/bin/true")
    assert rules.decide_argv(["true"], str(workspace))[0].allowed  # same file, same name


def test_listed_binary_in_write_root_is_refused(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    tool = workspace / "output" / "tool"
    _plant(tool, workspace / "pwned")
    rules = make_gate({"process": {"allowedCommands": [str(tool)]}}).command_rules
    decision, _ = rules.decide_argv([str(tool)], str(workspace))
    assert not decision.allowed and decision.rule == "process.writeRoot"


def test_group_writable_binary_is_refused(make_gate, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tool = tmp_path / "opt" / "tool"
    _plant(tool, workspace / "pwned")
    tool.chmod(tool.stat().st_mode | stat.S_IWOTH)
    rules = make_gate({"process": {"allowedCommands": [str(tool)]}}).command_rules
    assert not rules.decide_argv([str(tool)], str(workspace))[0].allowed
    tool.chmod(0o755)
    assert rules.decide_argv([str(tool)], str(workspace))[0].allowed


def test_denied_arguments_policy_key(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    gate = make_gate({"process": {"allowedCommands": ["echo"], "deniedArguments": {"echo": ["--secret*", "*.pem"]}}})
    rules = gate.command_rules
    assert rules.decide_argv(["echo", "fine"], str(workspace))[0].allowed
    decision, _ = rules.decide_argv(["echo", "--secret=1"], str(workspace))
    assert not decision.allowed and decision.rule == "process.deniedArguments.echo[0]"
    assert rules.decide_argv(["echo", "key.pem"], str(workspace))[0].rule == "process.deniedArguments.echo[1]"


def test_error_while_deciding_is_a_denial(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    rules = make_gate({"process": {"allowedCommands": ["git"]}}).command_rules
    assert not rules.decide_argv([object()], str(workspace))[0].allowed  # type: ignore[list-item]
    assert not rules.decide_argv("git status", str(workspace))[0].allowed  # type: ignore[arg-type]


@pytest.mark.parametrize(("argv", "allowed"), [
    (["env", "-i", "FOO=1", "true"], True),
    (["env", "-iu", "HOME", "true"], True),  # -u takes HOME; the program is true
    (["env", "--unset=HOME", "true"], True),
    (["env", "--uns", "HOME", "true"], True),  # getopt abbreviation of --unset, value next
    (["env", "--", "true"], True),
    (["env", "-iu", "true", "sh"], False),  # the program is sh, not true
    (["env", "--uns", "true", "sh"], False),
    (["env", "-C", "src", "true"], False),  # runs elsewhere than the checked cwd
    (["env", "--ch=src", "true"], False),
    (["env", "-iS", "true"], False),
    (["env", "--split=true"], False),
    (["env", "--frobnicate", "true"], False),  # unknown: refused, not guessed
    (["env", "SHELL=/bin/sh", "true"], False),
    (["env", "TAR_OPTIONS=-Ix", "true"], False),
], ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_env_is_read_the_way_getopt_reads_it(make_gate, workspace: Path, argv: list[str], allowed: bool) -> None:  # type: ignore[no-untyped-def]
    rules = make_gate({"process": {"allowedCommands": ["env", "true"]}}).command_rules
    decision, _ = rules.decide_argv(argv, str(workspace))
    assert decision.allowed is allowed, decision


def test_make_counts_as_a_shell(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """A Makefile names the shell that runs its recipes (SHELL := anything): no exec rule
    can follow it, so with allowShell false make is refused even when listed."""
    rules = make_gate({"process": {"allowedCommands": ["make"]}}).command_rules
    decision, _ = rules.decide_argv(["make", "-n"], str(workspace))
    assert not decision.allowed and decision.rule == "process.allowShell"
    rules = make_gate({"process": {"allowedCommands": ["make"], "allowShell": True}}).command_rules
    if rules.allowed_executable("make", str(workspace)) is not None:  # make is installed here
        assert rules.decide_argv(["make", "-n"], str(workspace))[0].allowed


@pytest.mark.parametrize("argv", [
    ["git", "--bare", "log"],
    ["find", ".", "-execdir", "git", "status", ";"],
])
def test_git_where_the_checked_repository_is_not_the_one_used(make_gate, workspace: Path,  # type: ignore[no-untyped-def]
                                                              argv: list[str]) -> None:
    rules = make_gate({"process": {"allowedCommands": ["git", "find"]}}).command_rules
    decision, _ = rules.decide_argv(argv, str(workspace))
    assert not decision.allowed, decision
    assert rules.decide_argv(["git", "init", "--bare", "output/r.git"], str(workspace))[0].allowed


def test_a_remembered_decision_is_made_again_when_the_file_or_the_path_changes(  # type: ignore[no-untyped-def]
    make_gate, workspace: Path, tmp_path: Path
) -> None:
    """decide_argv remembers an allowed command line only while the PATH directories are
    the ones it was decided with and the file found is the same file: every change that
    would change the decision is seen on the next call (real files, real chmod/rename)."""
    from capgate._sys.clean_env import sanitized_path_dirs

    tool = tmp_path / "opt" / "tool"
    _plant(tool, workspace / "pwned")
    other = tmp_path / "opt" / "other"
    _plant(other, workspace / "pwned")
    gate = make_gate({"process": {"allowedCommands": [str(tool)]}})
    rules = gate.command_rules
    dirs = sanitized_path_dirs(gate.policy, cwd=str(workspace))
    argv, cwd = [str(tool), "--flag"], str(workspace)
    assert rules.decide_argv(argv, cwd, path_dirs=dirs)[0].allowed
    assert rules.decide_argv(argv, cwd, path_dirs=dirs)[0].allowed  # remembered
    assert len(rules._memo) == 1
    tool.chmod(0o777)  # mode changed: decided again, and refused
    assert rules.decide_argv(argv, cwd, path_dirs=dirs)[0].rule == "process.writeRoot"
    tool.chmod(0o755)
    assert rules.decide_argv(argv, cwd, path_dirs=dirs)[0].allowed
    tool.unlink()
    tool.symlink_to(other)  # now a link to a file that is not allowed
    decision, _ = rules.decide_argv(argv, cwd, path_dirs=dirs)
    assert not decision.allowed and decision.rule == "process.allowedCommands"
    tool.unlink()
    _plant(tool, workspace / "pwned")  # a new file at the allowed path: decided again (allowed)
    decision, resolved = rules.decide_argv(argv, cwd, path_dirs=dirs)
    assert decision.allowed and resolved == str(tool)
    fresh_dirs = tuple(list(dirs))  # equal, but not the tuple the decision was made with
    assert fresh_dirs == dirs and fresh_dirs is not dirs
    rules._memo[(tuple(argv), cwd)] = (*rules._memo[(tuple(argv), cwd)][:3],
                                       rules._memo[(tuple(argv), cwd)][3].__class__.deny("stale", "test"), str(tool))
    assert rules.decide_argv(argv, cwd, path_dirs=fresh_dirs)[0].allowed  # a new PATH snapshot: decided again


def test_a_remembered_decision_is_not_used_once_the_approved_path_is_another_file(  # type: ignore[no-untyped-def]
    make_gate, workspace: Path, tmp_path: Path
) -> None:
    """The name still leads to the approved file (its directory was renamed and a link
    follows it), but the approved path now holds another file: decided again, refused."""
    from capgate._sys.clean_env import sanitized_path_dirs

    tools = tmp_path / "tools"
    _plant(tools / "v1" / "tool", workspace / "pwned")
    (tools / "current").symlink_to("v1")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").symlink_to(tools / "current" / "tool")
    _plant(tools / "evil", workspace / "pwned")
    gate = make_gate({"process": {"allowedCommands": [str(tools / "v1" / "tool")], "allowShell": True}})
    rules, cwd = gate.command_rules, str(workspace)
    dirs = sanitized_path_dirs(gate.policy, cwd=cwd)
    argv = [str(tmp_path / "bin" / "tool")]
    decision, resolved = rules.decide_argv(argv, cwd, path_dirs=dirs)
    assert decision.allowed and resolved == str(tools / "v1" / "tool") and rules._memo
    (tools / "v1").rename(tools / "v2")  # same inode and times: the name's chain still matches
    (tools / "current").unlink()
    (tools / "current").symlink_to("v2")
    (tools / "v1").mkdir()
    (tools / "v1" / "tool").symlink_to(tools / "evil")  # the approved path: another file now
    decision, resolved = rules.decide_argv(argv, cwd, path_dirs=dirs)
    assert not decision.allowed and resolved is None, decision


def test_look_alike_str_arguments_are_decided_by_their_text(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    """A str subclass that hashes and compares like an allowed argument must not reuse that
    decision: what is decided (and remembered) is the plain text the child would get."""
    from capgate._sys.clean_env import sanitized_path_dirs

    gate = make_gate({"process": {"allowedCommands": ["python3"], "deniedArguments": {"python3": ["*import*"]}}})
    rules, cwd = gate.command_rules, str(workspace)
    dirs = sanitized_path_dirs(gate.policy, cwd=cwd)
    assert rules.decide_argv(["python3", "-c", "print(1)"], cwd, path_dirs=dirs)[0].allowed

    class LookAlike(str):
        def __hash__(self) -> int:
            return hash("print(1)")

        def __eq__(self, other: object) -> bool:
            return other == "print(1)" or str.__eq__(self, other)

    decision, _ = rules.decide_argv(["python3", "-c", LookAlike("import os")], cwd, path_dirs=dirs)
    assert not decision.allowed and decision.rule == "process.deniedArguments.python3[0]"


def test_long_command_lines_are_not_remembered(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    from capgate._sys.clean_env import sanitized_path_dirs

    gate = make_gate({"process": {"allowedCommands": ["echo"]}})
    rules, cwd = gate.command_rules, str(workspace)
    dirs = sanitized_path_dirs(gate.policy, cwd=cwd)
    assert rules.decide_argv(["echo", "x" * 100_000], cwd, path_dirs=dirs)[0].allowed
    assert not rules._memo
    assert rules.decide_argv(["echo", "short"], cwd, path_dirs=dirs)[0].allowed
    assert len(rules._memo) == 1
