"""``capgate.wrappers.tools``: hostile tool calls come back as error results naming the rule
(never an exception, never the secret), benign ones are served; specs in three formats."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import capgate
from capgate.audit import AuditLog
from capgate.wrappers import tools
from tests._net_helpers import LoopbackHTTPServer
from tests._wrapper_cases import BENIGN, HOSTILE, Case, Env, benign_expectation, layout, write_policy
from tests.conftest import SECRET


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Env, capgate.Gate, LoopbackHTTPServer]]:
    base = layout(tmp_path)
    monkeypatch.setenv("HOME", str(base.home))
    server = LoopbackHTTPServer()
    env = Env(base.ws, base.home, base.tmp, server.port)
    policy = capgate.load_policy(write_policy(env), workspace=env.ws, allow_user_expansion=True)
    monkeypatch.chdir(env.ws)
    try:
        yield env, capgate.Gate(policy, audit=AuditLog(io.StringIO())), server
    finally:
        server.close()


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_call_is_an_error_result(case: Case, env: tuple[Env, capgate.Gate, LoopbackHTTPServer]) -> None:
    e, gate, server = env
    arguments = case.build(e)
    with gate:
        result = tools.call(case.tool, arguments)
    assert result["ok"] is False, result
    error = result["error"]
    assert error["kind"] in ("denied", "invalid_arguments"), error
    if error["kind"] == "denied":
        assert error["rule"] and error["reason"] and error["op"]
    assert SECRET not in json.dumps(result)
    assert (server.requests == [] and server.connections == 0) or case.tool != "fetch"
    if case.after is not None:
        case.after(e)


@pytest.mark.parametrize("case", BENIGN, ids=[c.id for c in BENIGN])
def test_benign_call_is_served(case: Case, env: tuple[Env, capgate.Gate, LoopbackHTTPServer]) -> None:
    e, gate, _server = env
    with gate:
        result = tools.call(case.tool, case.build(e))
    assert result["ok"] is True, result
    benign_expectation(case.id, result["result"], e)


def test_denial_carries_reason_and_rule(env: tuple[Env, capgate.Gate, LoopbackHTTPServer]) -> None:
    _e, gate, _ = env
    with gate:
        result = tools.call("read_file", {"path": "~/.ssh/id_rsa"})
    assert result["error"]["kind"] == "denied"
    assert result["error"]["rule"].startswith("filesystem.")
    assert result["error"]["op"] == "fs.read"


@pytest.mark.parametrize(("name", "arguments", "kind"), [
    ("read_file", {"path": 1}, "invalid_arguments"),
    ("read_file", {}, "invalid_arguments"),
    ("read_file", {"path": "src/app.py", "extra": True}, "invalid_arguments"),
    ("run_command", {"argv": "echo hi"}, "invalid_arguments"),  # a string is a shell line, not argv
    ("run_command", {"argv": []}, "invalid_arguments"),
    ("run_command", {"argv": ["echo"], "timeout": "5"}, "invalid_arguments"),  # strict: no coercion
    ("fetch", {"url": "http://x/", "method": "CONNECT"}, "invalid_arguments"),
    ("read_file", None, "invalid_arguments"),
    ("read_file", ["src/app.py"], "invalid_arguments"),
    ("rm_rf", {"path": "."}, "unknown_tool"),
    (None, {}, "unknown_tool"),
])
def test_bad_arguments_and_unknown_tools(
    name: Any, arguments: Any, kind: str, env: tuple[Env, capgate.Gate, LoopbackHTTPServer]
) -> None:
    _e, gate, _ = env
    with gate:
        result = tools.call(name, arguments)
    assert result["ok"] is False and result["error"]["kind"] == kind, result


def test_failures_are_results(env: tuple[Env, capgate.Gate, LoopbackHTTPServer]) -> None:
    _e, gate, _ = env
    with gate:
        missing = tools.call("read_file", {"path": "src/nope.py"})
        directory = tools.call("read_file", {"path": "src"})
    assert missing["error"]["kind"] == "failed" and "nope.py" in missing["error"]["message"]
    assert directory["error"]["kind"] == "failed"


def test_large_output_is_truncated_with_a_marker(env: tuple[Env, capgate.Gate, LoopbackHTTPServer]) -> None:
    e, gate, _ = env
    (e.ws / "big.txt").write_text("a" * 5000)
    with gate:
        cut = tools.call("read_file", {"path": "big.txt"}, max_output=1000)
        whole = tools.call("read_file", {"path": "big.txt"}, max_output=10_000)
        run = tools.call("run_command", {"argv": ["echo", "b" * 3000]}, max_output=100)
    assert cut["ok"] and cut["result"]["truncated"] is True
    assert cut["result"]["content"].startswith("a" * 1000) and "truncated" in cut["result"]["content"]
    assert len(cut["result"]["content"]) < 1100 and "after 1000 characters" in cut["result"]["content"]
    assert whole["result"]["content"] == "a" * 5000 and whole["result"]["truncated"] is False
    assert run["result"]["truncated"] is True and "output truncated" in run["result"]["stdout"]


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "mcp"])
def test_specs_formats(fmt: str) -> None:
    specs = tools.specs(format=fmt)  # type: ignore[arg-type]
    assert len(specs) == 5
    for spec in specs:
        if fmt == "openai":
            assert spec["type"] == "function"
            name, schema = spec["function"]["name"], spec["function"]["parameters"]
        elif fmt == "anthropic":
            name, schema = spec["name"], spec["input_schema"]
        else:
            name, schema = spec["name"], spec["inputSchema"]
        assert name in tools.TOOL_NAMES
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert "title" not in schema
        json.dumps(spec)  # plain JSON
    names = {s["name"] for s in tools.specs(format="mcp")}
    assert names == {"read_file", "write_file", "list_dir", "fetch", "run_command"}
    run = next(s for s in tools.specs(format="anthropic") if s["name"] == "run_command")
    assert run["input_schema"]["required"] == ["argv"]
    assert run["input_schema"]["properties"]["argv"]["type"] == "array"


def test_unknown_spec_format() -> None:
    with pytest.raises(ValueError):
        tools.specs(format="gemini")  # type: ignore[arg-type]


def test_write_over_a_hard_link_to_an_outside_file_never_reaches_it(
    env: tuple[Env, capgate.Gate, LoopbackHTTPServer],
) -> None:
    """A hard link in a write root to a file outside (the link-count class of the reference
    server's escapes): ``write_file`` replaces the directory entry (a new file, renamed in), so
    the outside file keeps its content; the workspace name holds the new text. Its control:
    reading the same name before the write is refused (two links)."""
    e, gate, _ = env
    os.link(e.home / "notes.txt", e.ws / "output" / "linked.txt")
    with gate:
        before = tools.call("read_file", {"path": "output/linked.txt"})
        written = tools.call("write_file", {"path": "output/linked.txt", "content": "mine\n"})
        after = tools.call("read_file", {"path": "output/linked.txt"})
    assert before["ok"] is False and before["error"]["kind"] == "denied", before
    assert (e.home / "notes.txt").read_text() == SECRET
    assert written["ok"] is True, written
    assert after["ok"] is True and after["result"]["content"] == "mine\n", after
    assert os.stat(e.home / "notes.txt").st_nlink == 1
