"""The tool-author harness: hostile workspaces, policy overrides, the attack corpus runner.

``run_attack_corpus(tool)`` feeds ``tool`` every hostile input of the shared corpus
(``capgate/testing/corpus/*.json`` — the same lists capgate's own attack tests use) under the
active gate and returns a ``Finding`` for each input that was *not* denied: the tool neither
raised ``PermissionError`` nor caused the gate to record a denial, or the canary secret came
back in its result. An empty list means the tool stayed inside the policy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import capgate
from capgate.audit import AuditLog
from capgate.gate import current_gate

__all__ = ["CANARY", "Finding", "assert_denied", "build_workspace", "corpus", "gate_for", "run_attack_corpus"]

CANARY = "capgate-canary-7c1e9d-SECRET"


@dataclass(frozen=True)
class Finding:
    """One hostile input the tool let through: ``kind`` (paths, hosts, shell), the input as
    given to the tool, ``outcome`` (``allowed`` or ``leaked``) and what came back."""

    kind: str
    input: object
    outcome: str
    detail: str


def build_workspace(ws: Path, home: Path, *, hard_links: bool = True) -> Path:
    """A workspace with a source file and ``output/``, and a HOME holding canary secrets."""
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "id_rsa").write_text(CANARY)
    (home / ".aws").mkdir(exist_ok=True)
    (home / ".aws" / "credentials").write_text(CANARY)
    (ws / "src").mkdir(parents=True, exist_ok=True)
    (ws / "src" / "app.py").write_text("print('hello')\n")
    (ws / "output").mkdir(exist_ok=True)
    (ws / ".env").write_text(CANARY)
    return ws


def gate_for(workspace: Path, policy: dict[str, Any] | None = None, *, audit: AuditLog | None = None) -> capgate.Gate:
    """A gate on ``workspace``: the defaults, or ``policy`` (file form, expansion allowed)."""
    if policy is None:
        loaded = capgate.load_policy(None, workspace=workspace)
    else:
        body = {"version": 1, **policy}
        path = workspace.parent / f".capgate-test-policy-{os.getpid()}.json"
        path.write_text(json.dumps(body))
        loaded = capgate.load_policy(path, workspace=workspace, allow_user_expansion=True)
    return capgate.Gate(loaded, audit=audit if audit is not None else AuditLog(open(os.devnull, "w"), level="warning"))


def assert_denied(
    fn: Callable[..., object], *args: object, op: str | None = None, **kwargs: object
) -> capgate.PermissionDenied:
    """Call ``fn`` and fail unless the gate denied it (optionally: this operation)."""
    try:
        result = fn(*args, **kwargs)
    except capgate.PermissionDenied as exc:
        if op is not None and exc.op != op:
            raise AssertionError(f"denied as {exc.op}, expected {op}: {exc}") from exc
        return exc
    raise AssertionError(f"not denied: {getattr(fn, '__name__', fn)}{args!r} returned {str(result)[:200]!r}")


def corpus(kind: str) -> list[dict[str, Any]]:
    """The shared hostile inputs of one kind (``paths``, ``net``, ``shell``)."""
    text = resources.files("capgate.testing").joinpath(f"corpus/{kind}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    entries = data["inputs"] if isinstance(data, dict) and "inputs" in data else data
    out = []
    for entry in entries:
        out.append(entry if isinstance(entry, dict) else {"input": entry})
    return out


_LINK = re.compile(r"\{(link|hardlink):([^>]+)->([^}]+(?:\}[^}]*)?)\}")


def _materialize_path(template: str, ws: Path, home: Path, fds: list[int]) -> str:
    text = template.replace("{home}", str(home)).replace("{ws}", str(ws))
    if "{fd}" in text:
        fd = os.open(home / ".ssh" / "id_rsa", os.O_RDONLY)
        fds.append(fd)
        text = text.replace("{fd}", str(fd))
    match = _LINK.search(text)
    if match:
        kind, name, target = match.group(1), match.group(2), match.group(3).rstrip("}")
        link = ws / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(link):
            (os.symlink if kind == "link" else os.link)(target, link)
        text = text[: match.start()] + name + text[match.end() :]
    return text


def _inputs(kind: str, ws: Path, home: Path, fds: list[int]) -> Iterable[object]:
    for entry in corpus(kind):
        value = entry.get("input", entry.get("url", entry.get("argv", entry.get("target"))))
        if kind == "paths" and isinstance(value, str):
            secret_file = re.search(r"\{(?:link|hardlink)", value) is None and value.startswith(("config/", "certs/"))
            if secret_file:
                dest = ws / value
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(CANARY)
            yield _materialize_path(value, ws, home, fds)
        elif kind == "paths":
            continue
        elif entry.get("expect", entry.get("expected", "deny")) in ("deny", "denied", False):
            yield value


def run_attack_corpus(
    tool: Callable[[Any], object], kinds: Sequence[str] = ("paths",), *, gate: capgate.Gate | None = None
) -> list[Finding]:
    """Feed ``tool`` each hostile input under the active gate; return what was not denied."""
    gate = gate if gate is not None else current_gate()
    ws = Path(gate.policy.workspace)
    home = Path(gate.policy.home)
    findings: list[Finding] = []
    fds: list[int] = []
    try:
        with gate:
            for kind in kinds:
                for value in _inputs(kind, ws, home, fds):
                    before = gate.audit.denied
                    try:
                        result = tool(value)
                    except PermissionError:
                        continue
                    except Exception as exc:  # the tool failed some other way: not a leak, but say so
                        if gate.audit.denied == before:
                            findings.append(Finding(kind, value, "error", f"{type(exc).__name__}: {exc}"[:300]))
                        continue
                    shown = str(result)
                    if CANARY in shown:
                        findings.append(Finding(kind, value, "leaked", shown[:300]))
                    elif gate.audit.denied == before:
                        findings.append(Finding(kind, value, "allowed", shown[:300]))
    finally:
        for fd in fds:
            os.close(fd)
    return findings
