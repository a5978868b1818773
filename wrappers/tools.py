"""Ready-made agent tools under the gate, with JSON-schema definitions for model APIs.

    from capgate.wrappers import tools

    tools.specs(format="openai")        # the "tools" list for the Chat Completions/Responses API
    tools.specs(format="anthropic")     # the "tools" list for the Messages API
    result = tools.call("read_file", {"path": "src/app.py"})   # always a dict, never raises

The tools are ``read_file``, ``write_file``, ``list_dir``, ``fetch`` and ``run_command``; each is
a thin layer over ``capgate.fs``, ``capgate.net`` or ``capgate.proc`` under the current gate, so
they decide exactly as the embedded API does (same rules, same audit lines).

``call(name, arguments)`` is what an agent loop feeds a model's tool call to. Arguments are
validated strictly (pydantic strict mode, unknown keys refused: ``"1"`` is not a number and a
string is not an argv list). Whatever happens, it returns a dict: ``{"ok": True, "result":
...}`` or ``{"ok": False, "error": {"kind": ..., "message": ...}}`` where ``kind`` is
``denied`` (with the denial's ``op``, ``target``, ``reason`` and ``rule``), ``invalid_arguments``,
``unknown_tool`` or ``failed`` (file not found, timeout, ...). A refusal is something the model
reads and works around, not an exception that ends the loop. Text longer than ``max_output``
characters (default 100,000; each text field on its own) is cut and ends with the marker
``[capgate: output truncated after N characters]``; such a result also carries ``"truncated": true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capgate import fs, net, proc
from capgate.errors import PermissionDenied

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "TOOL_NAMES",
    "call",
    "fetch",
    "list_dir",
    "read_file",
    "run_command",
    "specs",
    "write_file",
]

DEFAULT_MAX_OUTPUT = 100_000
"""Characters of text a tool result may carry before it is cut (a model's context is finite)."""

MAX_LIST_ENTRIES = 2_000


# ---------------------------------------------------------------------------------------------
# The tools as plain functions (they raise, as capgate.fs/net/proc do)
# ---------------------------------------------------------------------------------------------


def read_file(path: str, *, max_bytes: int = DEFAULT_MAX_OUTPUT) -> dict[str, Any]:
    """Read a text file the policy lets the agent read; at most ``max_bytes + 1`` bytes are read
    (a huge file is never loaded whole; ``call`` cuts the text and marks it), undecodable bytes
    replaced. Raises ``PermissionDenied``, ``OSError``."""
    with fs.open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    return {"path": path, "content": data.decode("utf-8", errors="replace"), "truncated": len(data) > max_bytes}


def write_file(path: str, content: str) -> dict[str, Any]:
    """Write (create or replace, atomically) a file the policy lets the agent write."""
    written = fs.write_text(path, content)
    return {"path": path, "bytes_written": written}


def list_dir(path: str = ".") -> dict[str, Any]:
    """Names in a directory the policy lets the agent read, sorted."""
    names = sorted(fs.listdir(path))
    truncated = len(names) > MAX_LIST_ENTRIES
    return {"path": path, "entries": names[:MAX_LIST_ENTRIES], "truncated": truncated}


def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    max_bytes: int = DEFAULT_MAX_OUTPUT,
) -> dict[str, Any]:
    """Fetch an http(s) URL through ``capgate.net.fetch`` (every redirect hop decided)."""
    try:
        response = net.fetch(url, method=method, headers=headers, data=body, max_bytes=max_bytes)
        truncated = False
    except net.ResponseTooLarge:
        # A body over the cap is not read at all: say so instead of returning part of it.
        return {"url": url, "status": None, "headers": {}, "body": "", "truncated": True,
                "note": f"response body larger than {max_bytes} bytes; not returned"}
    return {
        "url": response.url,
        "status": response.status,
        "headers": dict(response.headers),
        "body": response.text(),
        "truncated": truncated,
    }


def run_command(
    argv: list[str], *, cwd: str | None = None, timeout: float | None = None, stdin: str | None = None
) -> dict[str, Any]:
    """Run an allowed command (an argv list, never a shell line) with ``capgate.proc.run``."""
    result = proc.run(argv, cwd=cwd, timeout=timeout, input=stdin.encode("utf-8") if stdin is not None else None)
    return {
        "returncode": result.returncode,
        "stdout": result.stdout.decode("utf-8", errors="replace"),
        "stderr": result.stderr.decode("utf-8", errors="replace"),
        "timed_out": bool(getattr(result, "timed_out", False)),
        "truncated": bool(getattr(result, "truncated", False)),
    }


# ---------------------------------------------------------------------------------------------
# Arguments (strict) and their JSON schemas
# ---------------------------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ReadFileArgs(_Args):
    path: str = Field(description="File to read: relative to the workspace, or absolute.", min_length=1)


class WriteFileArgs(_Args):
    path: str = Field(description="File to create or replace: relative to the workspace, or absolute.", min_length=1)
    content: str = Field(description="The whole new content of the file (UTF-8 text).")


class ListDirArgs(_Args):
    path: str = Field(default=".", description="Directory to list: relative to the workspace, or absolute.",
                      min_length=1)


class FetchArgs(_Args):
    url: str = Field(description="An http:// or https:// URL.", min_length=1)
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = Field(default="GET", description="HTTP method.")
    headers: dict[str, str] | None = Field(default=None, description="Extra request headers.")
    body: str | None = Field(default=None, description="Request body (UTF-8 text).")


class RunCommandArgs(_Args):
    argv: list[str] = Field(description="The command and its arguments as a list (no shell).", min_length=1)
    cwd: str | None = Field(default=None, description="Working directory (default: the workspace root).")
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the command is killed.")
    stdin: str | None = Field(default=None, description="Text sent to the command's standard input.")


_Runner = Callable[[Any, int], dict[str, Any]]

_TOOLS: dict[str, tuple[str, type[_Args], _Runner]] = {
    "read_file": (
        "Read a UTF-8 text file inside what the sandbox policy allows.",
        ReadFileArgs,
        lambda a, cap: read_file(a.path, max_bytes=cap),
    ),
    "write_file": (
        "Create or replace a text file inside the policy's write roots.",
        WriteFileArgs,
        lambda a, cap: write_file(a.path, a.content),
    ),
    "list_dir": (
        "List the names in a directory the policy lets you read.",
        ListDirArgs,
        lambda a, cap: list_dir(a.path),
    ),
    "fetch": (
        "Fetch an http(s) URL allowed by the policy's network rules; returns status, headers and body.",
        FetchArgs,
        lambda a, cap: fetch(a.url, method=a.method, headers=a.headers, body=a.body, max_bytes=cap),
    ),
    "run_command": (
        "Run an allowed command given as an argv list (no shell); returns exit code, stdout and stderr.",
        RunCommandArgs,
        lambda a, cap: run_command(list(a.argv), cwd=a.cwd, timeout=a.timeout, stdin=a.stdin),
    ),
}

TOOL_NAMES: tuple[str, ...] = tuple(_TOOLS)


def _schema(model: type[_Args]) -> dict[str, Any]:
    """The model's JSON schema without pydantic's ``title`` noise (every vendor accepts it)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    schema: dict[str, Any] = clean(model.model_json_schema())
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def specs(format: Literal["openai", "anthropic", "mcp"] = "openai") -> list[dict[str, Any]]:
    """The tools' definitions in a vendor's format.

    - ``openai``: ``{"type": "function", "function": {"name", "description", "parameters"}}``
    - ``anthropic``: ``{"name", "description", "input_schema"}``
    - ``mcp``: ``{"name", "description", "inputSchema"}`` (a ``tools/list`` entry)
    """
    out: list[dict[str, Any]] = []
    for name, (description, model, _run) in _TOOLS.items():
        schema = _schema(model)
        if format == "openai":
            out.append({"type": "function", "function": {"name": name, "description": description,
                                                         "parameters": schema}})
        elif format == "anthropic":
            out.append({"name": name, "description": description, "input_schema": schema})
        elif format == "mcp":
            out.append({"name": name, "description": description, "inputSchema": schema})
        else:
            raise ValueError(f"unknown spec format {format!r} (openai, anthropic or mcp)")
    return out


# ---------------------------------------------------------------------------------------------
# call: one tool call in, one result dict out
# ---------------------------------------------------------------------------------------------


def _error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": {"kind": kind, "message": message, **extra}}


def _truncate(value: Any, limit: int) -> tuple[Any, bool]:
    """Cut every string in ``value`` longer than ``limit`` characters, ending it with a marker."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value, False
        return value[:limit] + f"\n[capgate: output truncated after {limit} characters]", True
    if isinstance(value, dict):
        cut_any = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], cut = _truncate(item, limit)
            cut_any = cut_any or cut
        return out, cut_any
    if isinstance(value, list):
        items = []
        cut_any = False
        for item in value:
            new, cut = _truncate(item, limit)
            items.append(new)
            cut_any = cut_any or cut
        return items, cut_any
    return value, False


def call(name: str, arguments: dict[str, Any] | None, *, max_output: int = DEFAULT_MAX_OUTPUT) -> dict[str, Any]:
    """Run tool ``name`` with ``arguments`` (the parsed JSON of a model's tool call).

    Never raises for anything the model can cause: see the module docstring for the shape.
    """
    entry = _TOOLS.get(name) if isinstance(name, str) else None
    if entry is None:
        return _error("unknown_tool", f"unknown tool {str(name)[:100]!r}; tools: {', '.join(TOOL_NAMES)}")
    _description, model, run = entry
    try:
        args = model.model_validate(arguments if arguments is not None else {})
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(arguments)", "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        return _error("invalid_arguments", f"invalid arguments for {name}", problems=problems)
    try:
        result = run(args, max_output)
    except PermissionDenied as exc:
        return _error("denied", str(exc), op=exc.op, target=exc.target, reason=exc.reason, rule=exc.rule)
    except (ValueError, TypeError) as exc:  # e.g. a header capgate refuses to send
        return _error("invalid_arguments", f"{name}: {exc}")
    except OSError as exc:
        detail = exc.strerror or str(exc) or type(exc).__name__
        target = exc.filename if isinstance(exc.filename, str) else None
        return _error("failed", f"{name}: {detail}" + (f": {target}" if target else ""),
                      exception=type(exc).__name__)
    except Exception as exc:  # a tool bug must not end the agent loop either
        return _error("failed", f"{name}: {type(exc).__name__}: {exc}", exception=type(exc).__name__)
    cut_result, cut = _truncate(result, max_output)
    if cut:
        cut_result["truncated"] = True
    return {"ok": True, "result": cut_result}
