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

import json
import os
import sys
import time
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
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    try:
        with Gate(effective, audit=audit):
            anyio.run(serve)
    finally:
        summary = audit.summary()
        audit.event("mcp.end", denials=[list(item) for item in summary])
        audit.close()
    return 0
