"""``capgate mcp`` driven by the official SDK's own stdio client: the tools are listed, every
hostile call of ``tests/_wrapper_cases`` is a result with ``isError`` (no secret in it), the
benign ones are served, the server stays up throughout, and the audit log holds the denials."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._net_helpers import LoopbackHTTPServer
from tests._wrapper_cases import BENIGN, HOSTILE, WS_FILE, Env, benign_expectation, layout, write_policy
from tests.conftest import SECRET

mcp = pytest.importorskip("mcp")


def _server_params(env: Env, audit: Path) -> Any:
    from mcp.client.stdio import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "capgate", "mcp", "--workspace", str(env.ws), "--policy", str(write_policy(env)),
              "--allow-user-expansion", "--audit-log", str(audit)],
        env={"HOME": str(env.home), "PATH": "/usr/bin:/bin"},
        cwd=str(env.ws),
    )


async def _session_run(env: Env, audit: Path, errlog: Any) -> dict[str, Any]:
    from mcp import ClientSession
    from mcp.client.stdio import stdio_client

    out: dict[str, Any] = {"hostile": {}, "benign": {}}
    async with stdio_client(_server_params(env, audit), errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            out["tools"] = {t.name: t.input_schema for t in listed.tools}
            for case in HOSTILE:
                result = await session.call_tool(case.tool, case.build(env))
                out["hostile"][case.id] = (result.is_error, [c.text for c in result.content], case)
            out["bad-arguments"] = await session.call_tool("read_file", {"path": 7})
            out["unknown"] = await session.call_tool("rm_rf", {})
            for case in BENIGN:
                result = await session.call_tool(case.tool, case.build(env))
                out["benign"][case.id] = (result.is_error, result.structured_content)
            out["after"] = [t.name for t in (await session.list_tools()).tools]
    return out


def test_mcp_server_over_stdio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = layout(tmp_path)
    server = LoopbackHTTPServer()
    env = Env(base.ws, base.home, base.tmp, server.port)
    audit = tmp_path / "audit" / "mcp.jsonl"

    errfile = tmp_path / "server-stderr.txt"
    try:
        with errfile.open("w") as err:
            out = asyncio.run(asyncio.wait_for(_session_run(env, audit, err), 120))
    finally:
        server.close()
    banner = errfile.read_text()
    assert "capgate mcp: serving read_file, write_file, list_dir, fetch, run_command" in banner
    assert f"audit log {audit}" in banner
    assert set(out["tools"]) == {"read_file", "write_file", "list_dir", "fetch", "run_command"}
    assert out["tools"]["read_file"]["required"] == ["path"]
    for case_id, (is_error, texts, case) in out["hostile"].items():
        assert is_error is True, case_id
        error = json.loads(texts[0])
        assert error["kind"] in ("denied", "invalid_arguments"), (case_id, error)
        assert SECRET not in texts[0]
        if case.after is not None:
            case.after(env)
    assert out["bad-arguments"].is_error and "invalid_arguments" in out["bad-arguments"].content[0].text
    assert out["unknown"].is_error and "unknown_tool" in out["unknown"].content[0].text
    for case_id, (is_error, structured) in out["benign"].items():
        assert is_error is False, (case_id, structured)
        benign_expectation(case_id, structured, env)
    assert out["after"] == list(out["tools"])  # still serving after every hostile call
    lines = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    events = {line.get("event") for line in lines}
    assert {"mcp.start", "mcp.end"} <= events
    denials = [line for line in lines if line.get("decision") == "deny"]
    assert len(denials) >= 10
    assert any(d.get("target", "").endswith("id_rsa") for d in denials)


def test_mcp_refuses_an_audit_log_inside_a_write_root(tmp_path: Path) -> None:
    import subprocess

    base = dataclasses.replace(layout(tmp_path), port=8080)
    proc = subprocess.run(
        [sys.executable, "-m", "capgate", "mcp", "--workspace", str(base.ws), "--policy", str(write_policy(base)),
         "--allow-user-expansion", "--audit-log", str(base.ws / "audit.jsonl")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "write root" in proc.stderr
    assert not (base.ws / "audit.jsonl").exists()



_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"}}}
_CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "read_file", "arguments": {"path": "src/app.py"}}}


def test_mcp_stdio_transport_survives_garbage_and_huge_lines(tmp_path: Path) -> None:
    """The wire itself (the server's event-loop stdio transport, on pipes): a request after a
    line that is not JSON and after a 1 MiB line is still answered, and only protocol
    messages reach stdout. stdin stays open until the answers are in (the SDK ends the
    session at end of input without waiting for requests in flight)."""
    import subprocess
    import threading

    base = dataclasses.replace(layout(tmp_path), port=8080)
    proc = subprocess.Popen(
        [sys.executable, "-m", "capgate", "mcp", "--workspace", str(base.ws), "--policy", str(write_policy(base)),
         "--allow-user-expansion", "--audit-log", str(tmp_path / "audit.jsonl")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=base.ws,
        env={"HOME": str(base.home), "PATH": "/usr/bin:/bin"})
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for line in (json.dumps(_INIT).encode(), b"this is not json",
                     json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode(),
                     b"[" * (1 << 20), json.dumps(_CALL).encode()):
            proc.stdin.write(line + b"\n")
        proc.stdin.flush()
        answers: dict[int, dict[str, Any]] = {}
        while 2 not in answers:
            raw = proc.stdout.readline()
            assert raw, f"the server ended the wire early; answers so far: {answers}"
            message = json.loads(raw)  # every stdout line is a protocol message
            if "id" in message:
                answers[int(message["id"])] = message
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        watchdog.cancel()
        proc.kill()
    assert answers[1]["result"]["serverInfo"]["name"] == "capgate"
    assert answers[2]["result"]["isError"] is False, answers[2]
    assert answers[2]["result"]["structuredContent"]["content"] == WS_FILE


def test_mcp_event_loop_transport_only_for_pipes_and_sockets(tmp_path: Path) -> None:
    """The server waits on stdin/stdout in its event loop only where epoll can (a pipe, a
    socket); a regular file or a terminal keeps the SDK's threaded transport (a terminal's
    description, shared with the shell, must not be left non-blocking)."""
    import os
    import socket

    from capgate.wrappers.mcp import _streamable

    regular = tmp_path / "f"
    regular.write_text("x")
    r, w = os.pipe()
    a, b = socket.socketpair()
    with regular.open() as fh:
        try:
            assert _streamable(r) and _streamable(w) and _streamable(a.fileno())
            assert not _streamable(fh.fileno())
            null = os.open(os.devnull, os.O_RDONLY)
            assert not _streamable(null)  # a character device (as a terminal is)
            os.close(null)
        finally:
            os.close(r)
            os.close(w)
            a.close()
            b.close()
