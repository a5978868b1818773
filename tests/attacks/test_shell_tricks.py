"""Shell tricks through proc.run with real processes: denied, and the payload never runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import capgate
from capgate import proc
from capgate.testing import corpus, run_attack_corpus

pytestmark = pytest.mark.timeout(60)

SHELL = json.loads((Path(__file__).parents[2] / "capgate/testing/corpus/shell.json").read_text())


@pytest.fixture
def gate(make_gate):  # type: ignore[no-untyped-def]
    g = make_gate({"process": {"allowedCommands": SHELL["allowedCommands"]}})
    with g:
        yield g


PAYLOADS = [
    ["sh", "-c", "touch {m}"],
    ["/bin/bash", "-c", "touch {m}"],
    ["env", "sh", "-c", "touch {m}"],
    ["env", "-i", "/usr/bin/dash", "-c", "touch {m}"],
    ["timeout", "5", "sh", "-c", "touch {m}"],
    ["nohup", "bash", "-c", "touch {m}"],
    ["find", ".", "-maxdepth", "0", "-exec", "sh", "-c", "touch {m}", ";"],
    ["find", ".", "-maxdepth", "0", "-exec", "touch", "{m}", ";"],
    ["xargs", "touch", "{m}"],
    ["git", "-c", "core.pager=touch {m}", "-p", "log"],
    ["git", "-c", "alias.x=!touch {m}", "x"],
    ["git", "clone", "ext::sh -c touch% {m}", "out"],
    ["git", "clone", "--upload-pack=touch {m}", ".", "output/clone"],
    ["timeout", "5", "git", "-c", "core.pager=touch {m}", "log"],
    ["env", "GIT_CONFIG_PARAMETERS='core.pager'='touch {m}'", "git", "log"],
    ["env", "LD_PRELOAD=/nonexistent.so", "touch", "{m}"],
    ["touch", "{m}"],
]


@pytest.mark.parametrize("template", PAYLOADS, ids=lambda t: " ".join(t)[:50])
def test_payload_is_denied_and_never_runs(gate, workspace: Path, template: list[str]) -> None:  # type: ignore[no-untyped-def]
    marker = workspace / "output" / "PWNED"
    argv = [a.replace("{m}", str(marker)) for a in template]
    with pytest.raises(capgate.PermissionDenied) as info:
        proc.run(argv, input=b"touch " + str(marker).encode() + b"\n")
    assert info.value.op == "proc.exec" and info.value.rule.startswith("process.")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["ls; cat ~/.ssh/id_rsa", "echo hi", b"echo hi"])
def test_string_command_is_denied(gate, command: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(capgate.PermissionDenied) as info:
        proc.run(command)  # type: ignore[arg-type]
    assert info.value.rule == "process.allowShell"


def test_allowed_controls_really_run(gate, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    assert proc.run(["echo", "hello"]).stdout == b"hello\n"
    assert proc.run(["env", "LANG=C", "echo", "hi"]).stdout == b"hi\n"
    assert proc.run(["timeout", "5", "echo", "ok"]).stdout == b"ok\n"
    assert proc.run(["xargs", "echo"], input=b"a b\n").stdout == b"a b\n"
    found = proc.run(["find", "src", "-name", "*.py", "-exec", "cat", "{}", ";"])
    assert found.stdout == b"print('hello')\n"


def test_corpus_runner_finds_nothing_for_proc_run(gate) -> None:  # type: ignore[no-untyped-def]
    def tool(value: object) -> object:
        return proc.run(value)  # type: ignore[arg-type]

    assert [e for e in corpus("shell") if e["expect"] == "deny"]
    findings = run_attack_corpus(tool, kinds=("shell",), gate=gate)
    assert findings == []
