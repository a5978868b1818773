"""An MCP ``read_file`` round trip: ``capgate mcp`` against the official reference filesystem
server (``@modelcontextprotocol/server-filesystem``) on the same file, both driven by the
``mcp`` SDK's stdio client in one run, interleaved (target: no slower). Each round trip is a
``tools/call`` request written to the server's stdin and its result read back: JSON-RPC
framing, argument validation, the path check (capgate: the gate's decision, one audit line;
the reference: its own allowed-directory check) and the read. Prints one JSON line.

The reference server is Node.js and is not installed by capgate (never vendored here): install
it anywhere outside the repository and say where, or put its bin on PATH:

    cd /tmp && npm install @modelcontextprotocol/server-filesystem
    MCP_SERVER_FILESYSTEM=/tmp/node_modules/.bin/mcp-server-filesystem .venv/bin/python benchmarks/bench_mcp.py

Without it (or without node, or without the ``mcp`` SDK) the script says what is missing and
exits 0 without measuring.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import report

N = 100  # calls per batch
ROUNDS = 9
WARMUP = 50
FILE_BYTES = 4096
INSTALL = "cd /tmp && npm install @modelcontextprotocol/server-filesystem, then " \
          "MCP_SERVER_FILESYSTEM=/tmp/node_modules/.bin/mcp-server-filesystem"


def _reference_server() -> str | None:
    """The reference server's executable: $MCP_SERVER_FILESYSTEM, else ``mcp-server-filesystem``
    on PATH, else the conventional ``/tmp/node_modules`` install."""
    for candidate in (os.environ.get("MCP_SERVER_FILESYSTEM"), shutil.which("mcp-server-filesystem"),
                      "/tmp/node_modules/.bin/mcp-server-filesystem"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _skip(why: str) -> None:
    print(f"bench_mcp: skipped: {why}", file=sys.stderr)
    raise SystemExit(0)


async def _batches(calls: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, dict[str, float]]:
    """Per-call microseconds (median and p95 of the batch means) for each server, the batches
    alternating between them so machine noise hits both alike."""
    for call in calls.values():
        for _ in range(WARMUP):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(N):
                await call()
            samples[name].append((time.perf_counter() - start) / N * 1e6)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {"median_us": round(statistics.median(values), 1),
                     "p95_us": round(values[min(len(values) - 1, int(len(values) * 0.95))], 1)}
    return out


async def _run(reference: str, tmp: Path) -> dict[str, dict[str, float]]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    ws, home = tmp / "ws", tmp / "home"
    (ws / "src").mkdir(parents=True)
    home.mkdir()
    target = ws / "src" / "notes.txt"
    line = "capgate benchmark line: the same file for both servers.\n"
    target.write_text((line * (FILE_BYTES // len(line) + 1))[:FILE_BYTES])
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    servers = {
        "capgate": StdioServerParameters(
            command=sys.executable,
            args=["-m", "capgate", "mcp", "--workspace", str(ws), "--audit-log", str(tmp / "audit" / "mcp.jsonl")],
            env=env, cwd=str(ws)),
        "reference": StdioServerParameters(command=reference, args=[str(ws)], env=env, cwd=str(ws)),
    }
    expected = target.read_text()
    calls: dict[str, Callable[[], Awaitable[object]]] = {}
    async with AsyncExitStack() as stack:
        devnull = stack.enter_context(open(os.devnull, "w"))
        for name, params in servers.items():
            read, write = await stack.enter_async_context(stdio_client(params, errlog=devnull))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            calls[name] = _caller(session, str(target))
            text = await _text_of(calls[name])
            assert expected in text, f"{name} did not return the file: {text[:200]!r}"
        return await _batches(calls)


def _caller(session: Any, path: str) -> Callable[[], Awaitable[object]]:
    async def call() -> object:
        result = await session.call_tool("read_file", {"path": path})
        if result.is_error:
            raise RuntimeError(f"read_file failed: {result.content}")
        return result

    return call


async def _text_of(call: Callable[[], Awaitable[object]]) -> str:
    import json

    result: Any = await call()
    text = result.content[0].text
    try:
        return str(json.loads(text)["content"])  # capgate's text is the JSON result
    except (ValueError, KeyError, TypeError):
        return str(text)


def main() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError:
        _skip("the mcp SDK is not installed: pip install 'capgate[mcp]'")
    if shutil.which("node") is None:
        _skip("node is not installed (the reference filesystem server is Node.js)")
    reference = _reference_server()
    if reference is None:
        _skip(f"the reference filesystem server is not installed: {INSTALL} {sys.executable} {__file__}")
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(_run(str(reference), Path(tmp)))
    report(
        "mcp_read_file_round_trip",
        n=N,
        rounds=ROUNDS,
        file_bytes=FILE_BYTES,
        capgate_median_us=results["capgate"]["median_us"],
        capgate_p95_us=results["capgate"]["p95_us"],
        reference_median_us=results["reference"]["median_us"],
        reference_p95_us=results["reference"]["p95_us"],
        ratio=round(results["capgate"]["median_us"] / results["reference"]["median_us"], 3),
        target_ratio_max=1.0,
    )


if __name__ == "__main__":
    main()
