"""``capgate mcp``: the ready-made tools (``capgate.wrappers.tools``) as a Model Context Protocol
server over stdio, on the official ``mcp`` SDK (``pip install capgate[mcp]``).

    capgate mcp --workspace ~/proj [--policy FILE] [--allow-user-expansion] [--audit-log PATH]

- The policy is loaded exactly as ``capgate run`` loads it (same options, same defaults); every
  tool call is decided by one gate built from it, and every decision goes to the audit log
  (default ``$XDG_STATE_HOME/capgate/audit/mcp-<time>-<pid>.jsonl``, which must lie outside
  every write root so no tool can rewrite it).
- A banner on stderr (stdout is the protocol) names the workspace, the expansion status, the
  audit log and the tools.
- A denial, bad arguments or a failure is a tool result with ``isError: true`` whose text is
  the JSON error (kind, reason, rule): the model reads it; the server stays up.

What it is not: a sandbox around this process. The gate runs in the server itself (the
embedded API); the tools are the only way the client acts, and each is gated.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from typing import IO, Any

from capgate.errors import PolicyError

from . import tools

__all__ = ["build_server", "main"]


def build_server(name: str = "capgate") -> Any:
    """The SDK's low-level ``Server`` serving the tools under the current gate."""
    import mcp.types as types
    from mcp.server.lowlevel import Server

    listing = types.ListToolsResult(tools=[
        types.Tool(name=spec["name"], description=spec["description"], input_schema=spec["inputSchema"])
        for spec in tools.specs(format="mcp")
    ])

    async def on_list_tools(ctx: Any, params: Any) -> Any:
        return listing

    async def on_call_tool(ctx: Any, params: Any) -> Any:
        # Synchronous, in the thread and context that entered the gate: a tool call is short
        # (bounded reads, capped fetches, supervised commands with a wall time).
        result = tools.call(params.name, params.arguments)
        payload = result["result"] if result["ok"] else result["error"]
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(payload, ensure_ascii=False))],
            structured_content=payload,
            is_error=not result["ok"],
        )

    from capgate import __version__

    return Server(name, version=__version__, on_list_tools=on_list_tools, on_call_tool=on_call_tool)


class _LineReader:
    """The protocol's input: newline-delimited JSON-RPC messages read on the event loop itself.

    The SDK's default ``stdio_server`` wraps stdin and stdout with ``anyio.wrap_file``: every
    line read, every write and every flush is a hop to a worker thread (three per round trip,
    most of the server's own time per call). For a pipe or a socket, which is what an MCP client
    starts the server with, the event loop can wait on the descriptor directly."""

    LIMIT = 64 * 1024 * 1024  # one message; a longer line is answered as a parse error

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _LineReader:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise StopAsyncIteration from None
            line = exc.partial
        except asyncio.LimitOverrunError as exc:
            await self._discard_line(exc.consumed)
            return ""  # not JSON: the SDK reports it to the session and reads on
        return line.decode("utf-8", errors="replace")

    async def _discard_line(self, consumed: int) -> None:
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as more:
                await self._reader.readexactly(more.consumed)
            except asyncio.IncompleteReadError:
                return


class _LineWriter:
    """The protocol's output on the event loop (see ``_LineReader``): ``write`` queues the
    bytes, ``flush`` waits until the pipe has taken them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _streamable(fd: int) -> bool:
    """A pipe or a socket: the event loop can wait on it (not a regular file, and not a
    terminal, whose shared description must not be left non-blocking for the shell)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextlib.asynccontextmanager
async def _loop_stdio() -> AsyncIterator[tuple[Any, Any] | None]:
    """The protocol's private copies of stdin and stdout as event-loop streams, with fd 0 then
    pointing at the null device and fd 1 at stderr (as the SDK does: a stray ``print`` or a
    child's output never lands on the wire); both are restored on exit. ``None`` when either
    is not a pipe or socket: the caller then uses the SDK's own transport."""
    if not (_streamable(0) and _streamable(1)):
        yield None
        return
    loop = asyncio.get_running_loop()
    saved_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    saved_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    transports: list[asyncio.BaseTransport] = []
    try:
        reader = asyncio.StreamReader(limit=_LineReader.LIMIT)
        read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                         os.fdopen(wire_in, "rb", buffering=0))
        transports.append(read_transport)
        write_transport, write_protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                                        os.fdopen(wire_out, "wb", buffering=0))
        transports.append(write_transport)
        writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
        yield _LineReader(reader), _LineWriter(writer)
    finally:
        for transport in transports:
            transport.close()
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


def _default_audit_path(home: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(state, "capgate", "audit", f"mcp-{stamp}-{os.getpid()}.jsonl")


def main(*, workspace: str | None, policy: str | None, allow_user_expansion: bool, audit_log: str | None,
         stderr: IO[str] | None = None, grants: Any = None) -> int:
    """Serve until the client closes stdin. 0 on a clean end, 2 for a policy error."""
    from capgate import launcher
    from capgate.audit import AuditLog
    from capgate.gate import Gate

    err = stderr or sys.stderr
    try:
        effective = launcher._load(policy, workspace, allow_user_expansion, os.environ, grants=grants)
        home = os.path.realpath(os.environ.get("HOME") or os.path.expanduser("~"))
        audit_path = os.path.abspath(audit_log) if audit_log else _default_audit_path(home)
        launcher._check_outside_writes(effective, audit_path, "the audit log", ())
    except PolicyError as exc:
        err.write(f"capgate: policy error: {exc}" + (f" (key: {exc.key})" if exc.key else "") + "\n")
        return launcher.EXIT_USAGE
    try:
        import anyio
        from mcp.server.stdio import stdio_server
    except ImportError:
        err.write("capgate: the MCP server needs the mcp SDK: pip install 'capgate[mcp]'\n")
        return launcher.EXIT_USAGE
    os.makedirs(os.path.dirname(audit_path), mode=0o700, exist_ok=True)
    audit = AuditLog(audit_path)
    audit.event("mcp.start", workspace=effective.workspace, expansion=effective.origin,
                policy=effective.to_dict(redact=True), tools=list(tools.TOOL_NAMES))
    err.write(f"capgate mcp: serving {', '.join(tools.TOOL_NAMES)} over stdio\n"
              f"capgate mcp: workspace {effective.workspace}; policy: {launcher._expansion(effective)}\n"
              f"capgate mcp: audit log {audit_path}\n"
              "capgate mcp: the gate runs inside this server (embedded): every tool call is decided; "
              "the server process itself is not sandboxed\n")
    err.flush()
    server = build_server()

    async def serve() -> None:
        async with _loop_stdio() as streams:
            stdin, stdout = streams if streams is not None else (None, None)
            async with stdio_server(stdin, stdout) as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())

    try:
        with Gate(effective, audit=audit):
            anyio.run(serve)
    finally:
        summary = audit.summary()
        audit.event("mcp.end", denials=[list(item) for item in summary])
        audit.close()
    return 0
