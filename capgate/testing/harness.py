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
from pathlib import Path, PurePath
from typing import Any

import capgate
from capgate.audit import AuditLog

__all__ = [
    "ARGUMENTS",
    "CANARY",
    "KINDS",
    "Finding",
    "Findings",
    "assert_denied",
    "build_workspace",
    "corpus",
    "gate_for",
    "run_attack_corpus",
]

CANARY = "capgate-canary-7c1e9d-SECRET"


@dataclass(frozen=True)
class Finding:
    """One hostile input the tool let through: ``kind`` (paths, net, shell), the input as
    given to the tool, ``outcome`` and what came back (``detail``).

    Outcomes: ``leaked`` — the canary secret came back in the result (the worst);
    ``allowed`` — the tool returned normally and the gate recorded no denial;
    ``error`` — the tool raised something other than ``PermissionError`` without the gate
    denying anything (not a leak, but the tool did not stay inside on purpose: look at it)."""

    kind: str
    input: object
    outcome: str
    detail: str


class Findings(list[Finding]):
    """The findings of one ``run_attack_corpus`` call: a list (``== []`` means the tool stayed
    inside) whose repr, and pytest's assertion message, is a table: input, outcome, what came
    back. ``leaked`` / ``allowed`` / ``errors`` select by outcome."""

    @property
    def leaked(self) -> list[Finding]:
        return [f for f in self if f.outcome == "leaked"]

    @property
    def allowed(self) -> list[Finding]:
        return [f for f in self if f.outcome == "allowed"]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self if f.outcome == "error"]

    skipped: dict[str, str]
    """Kinds not run because they make no sense for the tool's argument, and why."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.skipped = {}

    def table(self) -> str:
        note = "".join(f"\n(kind {k} skipped: {why})" for k, why in self.skipped.items())
        if not self:
            return "no findings: every hostile input was denied" + note
        rows = [(f.kind, repr(f.input)[:60], f.outcome, f.detail.replace("\n", " ")[:80]) for f in self]
        widths = [max(len(r[i]) for r in [("kind", "input", "outcome", "what came back"), *rows]) for i in range(3)]
        head = f"{'kind':<{widths[0]}}  {'input':<{widths[1]}}  {'outcome':<{widths[2]}}  what came back"
        lines = [f"{len(self)} finding(s): {len(self.leaked)} leaked, {len(self.allowed)} allowed, "
                 f"{len(self.errors)} error", head]
        lines += [f"{k:<{widths[0]}}  {i:<{widths[1]}}  {o:<{widths[2]}}  {d}" for k, i, o, d in rows]
        return "\n".join(lines) + note

    def __repr__(self) -> str:
        return self.table()

    __str__ = __repr__


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
        try:
            loaded = capgate.load_policy(path, workspace=workspace, allow_user_expansion=True)
        except capgate.PolicyError as exc:  # (the temp file's name means nothing to the test's author)
            raise capgate.PolicyError(str(exc).replace(f"{os.path.realpath(path)}: ", ""), exc.key) from None
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


KINDS = ("paths", "net", "shell")


ARGUMENTS = {"path": "paths", "url": "net", "command": "shell"}
"""What a tool's argument can be (``run_attack_corpus(argument=...)``) and the one corpus kind
that makes sense for it: ``url`` covers host names and URLs (the ``net`` corpus)."""


def _argument_of(tool: Callable[[Any], object]) -> str | None:
    """The tool's argument kind where its signature says so unambiguously: a first parameter
    annotated ``pathlib.PurePath`` (``Path``) or ``os.PathLike`` is a path. Anything else
    (``str``, no annotation, a name like ``url``) is not guessed: a wrong guess would skip
    inputs that can hurt the tool."""
    import inspect
    import typing

    try:
        params = [p for p in inspect.signature(tool).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        hints = typing.get_type_hints(tool)
    except Exception:  # builtins, callable objects, unresolvable annotations: no guess (run every kind)
        return None
    if not params or params[0].name not in hints:
        return None
    hint = hints[params[0].name]
    if isinstance(hint, type) and (issubclass(hint, PurePath) or hint is os.PathLike):
        return "path"
    if typing.get_origin(hint) is os.PathLike:
        return "path"
    return None


def run_attack_corpus(
    tool: Callable[[Any], object], kinds: Sequence[str] | None = None, *, gate: capgate.Gate | None = None,
    argument: str | None = None,
) -> Findings:
    """Feed ``tool`` each hostile input under the active gate; return what was not denied.

    Runs only under a gate a test activated (the ``capgate_gate`` / ``capgate_fast_fs``
    fixtures, or ``gate=``): the corpus plants symlinks and reads secrets, and must never do
    that against the real HOME with the ambient default gate.

    ``argument`` (``path``, ``url`` or ``command``; else read from a ``Path``/``os.PathLike``
    annotation of the tool's first parameter) says what the tool takes: the kinds that make no
    sense for it are skipped, not counted as findings (a URL handed to a file reader is a
    missing file, not an attack on it), and listed in ``Findings.skipped``. ``kinds`` defaults
    to the argument's own kind, else ``("paths",)``. Kinds that would all be skipped are a
    ``ValueError``: a run that tests nothing must not pass."""
    if kinds is None:
        kinds = ("paths",)
        if argument in ARGUMENTS:
            kinds = (ARGUMENTS[argument],)
    unknown = [k for k in kinds if k not in KINDS]
    if isinstance(kinds, str) or unknown:
        raise ValueError(f"unknown attack kind(s) {unknown or [kinds]!r}: the kinds are {', '.join(KINDS)}")
    if argument is not None and argument not in ARGUMENTS:
        raise ValueError(f"unknown argument {argument!r}: it is one of {', '.join(ARGUMENTS)}")
    takes = argument or _argument_of(tool)
    applies = ARGUMENTS[takes] if takes is not None else None
    skipped = tuple(k for k in kinds if applies is not None and k != applies)
    if takes is not None and len(skipped) == len(kinds):
        raise ValueError(f"the tool takes a {takes}: none of the kinds {list(kinds)!r} applies to it "
                         f"(use {applies!r})")
    if gate is None:
        from capgate.gate import _current

        active = _current.get()
        if active is None:
            raise RuntimeError("run_attack_corpus needs an active gate: use the capgate_gate (or capgate_fast_fs) "
                               "fixture, or pass gate=; it will not attack the real HOME under the default gate")
        gate = active
    ws = Path(gate.policy.workspace)
    home = Path(gate.policy.home)
    findings = Findings()
    findings.skipped = {k: f"the tool takes a {takes}" for k in skipped}
    fds: list[int] = []
    try:
        with gate:
            for kind in (k for k in kinds if k not in skipped):
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
