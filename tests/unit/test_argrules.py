"""Built-in argument rules: options of data tools that run a command are refused, with
GNU long-option abbreviations and short-option clusters read the way the tools read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from capgate.argrules import builtin_denial

DENIED = [
    ("tar", ["-xf", "a.tar", "--to-command=sh -c id"]),
    ("tar", ["-xf", "a.tar", "--to-com=id"]),  # unambiguous abbreviation
    ("tar", ["-xf", "a.tar", "--to-command", "id"]),
    ("tar", ["-xf", "a.tar", "--checkpoint=1", "--checkpoint-action=exec=id"]),
    ("tar", ["-xf", "a.tar", "--checkpoint-a=exec=id"]),
    ("tar", ["-cf", "b.tar", "--use-compress-program=id", "src"]),
    ("tar", ["-cf", "b.tar", "--use=id", "src"]),
    ("tar", ["-cf", "b.tar", "-I", "id", "src"]),
    ("tar", ["-cIid", "-f", "b.tar", "src"]),
    ("tar", ["-cvIid", "src"]),
    ("tar", ["cIf", "id", "b.tar", "src"]),  # old-style cluster
    ("tar", ["-cf", "b.tar", "-F", "id", "src"]),
    ("tar", ["-cf", "b.tar", "--info-script=id", "src"]),
    ("tar", ["-cf", "b.tar", "--new-volume-script=id", "src"]),
    ("tar", ["-cf", "b.tar", "--rsh-command=id", "src"]),
    ("tar", ["-xf", "evil-host:a.tar"]),
    ("tar", ["-xf", "-oProxyCommand=id:a.tar"]),
    ("tar", ["--file=host:a.tar", "-x"]),
    ("tar", ["-fhost:a.tar", "-x"]),
    ("gtar", ["-xf", "a.tar", "--to-command=id"]),
    ("sort", ["--compress-program=id", "a.txt"]),
    ("sort", ["--compress-prog", "id", "a.txt"]),
    ("split", ["--filter=id", "a.txt"]),
    ("rsync", ["-e", "id", "a", "b"]),
    ("rsync", ["-avze", "id", "a", "b"]),
    ("rsync", ["--rsh=id", "a", "b"]),
    ("rsync", ["--rsync-path=id", "a", "b"]),
    ("zip", ["-T", "-TT", "id", "a.zip", "a"]),
    ("zip", ["--unzip-command=id", "a.zip", "a"]),
    ("sdiff", ["--diff-program=id", "a", "b"]),
    ("man", ["-P", "id", "ls"]),
    ("man", ["--pager=id", "ls"]),
]

ALLOWED = [
    ("tar", ["-xf", "a.tar"]),
    ("tar", ["xvf", "a.tar"]),
    ("tar", ["-czf", "b.tgz", "src"]),
    ("tar", ["-cf", "IMAGES.tar", "src"]),  # I inside -f's value
    ("tar", ["-cfFILE.tar", "src"]),
    ("tar", ["-xf", "a.tar", "--checkpoint=10"]),  # exactly --checkpoint, not -action
    ("tar", ["-xf", "a.tar", "--to-stdout"]),
    ("tar", ["-xf", "a:b.tar", "--force-local"]),
    ("tar", ["-xf", "dir/a:b.tar"]),
    ("tar", ["-xf", "a.tar", "--", "--to-command=x"]),  # after --: a member name
    ("sort", ["-u", "a.txt"]),
    ("sort", ["-r", "a.txt"]),
    ("rsync", ["-avz", "a/", "b/"]),
    ("zip", ["-r", "a.zip", "src"]),
    ("ls", ["--to-command=x"]),  # no rules for ls
]


@pytest.mark.parametrize(("name", "rest"), DENIED, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_option_that_runs_a_command_is_denied(name: str, rest: list[str]) -> None:
    why = builtin_denial(name, rest)
    assert why is not None and name in why


@pytest.mark.parametrize(("name", "rest"), ALLOWED, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_ordinary_use_is_allowed(name: str, rest: list[str]) -> None:
    assert builtin_denial(name, rest) is None


def test_decision_names_the_rule(make_gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    rules = make_gate({"process": {"allowedCommands": ["tar", "xargs"]}}).command_rules
    decision, _ = rules.decide_argv(["tar", "-xf", "a.tar", "--to-command=id"], str(workspace))
    assert not decision.allowed and decision.rule == "process.builtinArguments"
    assert "--to-command" in decision.reason
    decision, _ = rules.decide_argv(["tar", "-xf", "a.tar"], str(workspace))
    assert decision.allowed, decision
    # xargs would append unchecked arguments to tar
    decision, _ = rules.decide_argv(["xargs", "tar", "-xf"], str(workspace))
    assert not decision.allowed and decision.rule == "process.trampoline"
