"""``capgate changes``, ``capgate apply`` and ``capgate discard`` (``cli.py`` parses).

Exit codes: 0 done; 1 ``apply`` refused or failed (each path named; with a refusal nothing
was applied); 2 usage errors (no such run, a staging directory that is not yours); 125 when
run inside a sandbox — the agent never applies or discards its own changes.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING

from capgate.errors import PolicyError, StagingError
from capgate.staging.changes import Change, compute_changes, iter_lines, safe_name, with_renames
from capgate.staging.store import StagedRun, find_run, remove_run

if TYPE_CHECKING:
    from capgate.gate import Gate

__all__ = ["RUN_ID", "apply_command", "changes_command", "discard_command", "split_run_id"]

RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_IN_SANDBOX = 125


def split_run_id(words: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[RUN_ID] [PATH...]``: the first word is the run id when it is spelled like one."""
    if words and RUN_ID.match(words[0]):
        return words[0], list(words[1:])
    return None, list(words)


def _workspace(workspace: str | None) -> str:
    return os.path.realpath(workspace or os.getcwd())


def _refuse_in_sandbox(env: Mapping[str, str], err: IO[str], what: str) -> bool:
    if env.get("AGENT_IN_SANDBOX") == "1":
        err.write(f"capgate {what}: refused inside a capgate sandbox: the agent does not decide what lands\n")
        return True
    return False


def _find(run_id: str | None, workspace: str | None, env: Mapping[str, str], err: IO[str],
          what: str) -> StagedRun | None:
    try:
        return find_run(run_id, _workspace(workspace), env)
    except (StagingError, OSError) as exc:
        err.write(f"capgate {what}: {exc}\n")
        return None


def summary_line(run: StagedRun, changes: Sequence[Change]) -> str:
    return f"capgate: staged run {run.run_id}: {len(changes)} change{'s' if len(changes) != 1 else ''}"


def changes_command(run_id: str | None, *, workspace: str | None = None, diff: bool = False, as_json: bool = False,
                    environ: Mapping[str, str] | None = None, stdout: IO[str] | None = None,
                    stderr: IO[str] | None = None) -> int:
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    run = _find(run_id, workspace, env, err, "changes")
    if run is None:
        return EXIT_USAGE
    try:
        changes = with_renames(compute_changes(run.upper, run.workspace), run.workspace)
    except (StagingError, OSError) as exc:
        err.write(f"capgate changes: {exc}\n")
        return EXIT_USAGE
    state = run.state()
    if as_json:
        out.write(json.dumps({"run": run.run_id, "workspace": run.workspace, "staging": run.path, "state": state,
                              "changes": [c.to_json() for c in changes]}) + "\n")
        return 0
    out.write(f"{summary_line(run, changes)} ({state}; workspace {run.workspace}; started {run.started})\n")
    if run.quota_exceeded:
        out.write("  (the run was stopped at limits.outputQuotaMb: apply refuses more than the quota)\n")
    for line in iter_lines(changes):
        out.write(line + "\n")
    if diff:
        for change in changes:
            out.write(_diff(run, change))
    return 0


def _diff(run: StagedRun, change: Change) -> str:
    """A unified diff of one text file (``Binary files differ`` otherwise)."""
    import difflib

    if change.kind != "file":
        return ""
    if change.status == "R":
        return f"rename {safe_name(change.source or '')} -> {safe_name(change.path)} (same bytes)\n"
    old = b""
    if change.status in ("M", "D"):
        old = _read_real(run.workspace, change.path)
    new = b""
    if change.status != "D" and change.staged:
        with open(change.staged, "rb") as fh:
            new = fh.read(64 * 1024 * 1024)
    try:
        a, b = old.decode("utf-8"), new.decode("utf-8")
    except UnicodeDecodeError:
        return f"Binary files a/{safe_name(change.path)} and b/{safe_name(change.path)} differ\n"
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                 "/dev/null" if change.status == "A" else f"a/{safe_name(change.path)}",
                                 "/dev/null" if change.status == "D" else f"b/{safe_name(change.path)}")
    return "".join(_visible(line) if line.endswith("\n") else _visible(line) + "\n\\ No newline at end of file\n"
                   for line in lines)


def _visible(line: str) -> str:
    """A diff line with its control characters (not tabs) escaped: the agent wrote the content,
    and ``ESC [1A ESC [2K`` on the line after ``+evil()`` would erase it from the review."""
    body, end = (line[:-1], "\n") if line.endswith("\n") else (line, "")
    if body.isprintable():
        return line
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in body) + end


def _read_real(workspace: str, rel: str) -> bytes:
    """The real file's bytes, opened beneath the workspace refusing every symlink."""
    from capgate._sys import openat2
    from capgate._sys.nofollow_walk import open_nofollow

    root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_RDONLY | os.O_NONBLOCK
        if openat2.AVAILABLE:
            fd = openat2.openat2(root, rel, flags, openat2.RESOLVE_BENEATH | openat2.RESOLVE_NO_SYMLINKS
                                 | openat2.RESOLVE_NO_MAGICLINKS)
        else:
            fd = open_nofollow(root, rel, flags)
    except OSError:
        return b""
    finally:
        os.close(root)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(64 * 1024 * 1024)


def _apply_gate(run: StagedRun, env: Mapping[str, str]) -> Gate:
    """The gate of the policy the run was given, logging to an audit file of its own."""
    from capgate.audit import AuditLog
    from capgate.gate import Gate
    from capgate.policy import load_effective_policy

    policy = load_effective_policy(run.policy_file)
    if policy.workspace != run.workspace:
        raise StagingError(f"run {run.run_id}: its policy is for {policy.workspace}, not {run.workspace}")
    home = env.get("HOME") or os.path.expanduser("~")
    state = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    audit_dir = os.path.join(state, "capgate", "audit")
    os.makedirs(audit_dir, mode=0o700, exist_ok=True)
    path = os.path.join(audit_dir, f"apply-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.jsonl")
    return Gate(policy, audit=AuditLog(path))


def apply_command(run_id: str | None, paths: Sequence[str] = (), *, workspace: str | None = None,
                  force: bool = False, environ: Mapping[str, str] | None = None, stdout: IO[str] | None = None,
                  stderr: IO[str] | None = None) -> int:
    """``capgate apply``: the run (default: the workspace's last), all of it or ``paths``."""
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if _refuse_in_sandbox(env, err, "apply"):
        return EXIT_IN_SANDBOX
    run = _find(run_id, workspace, env, err, "apply")
    if run is None:
        return EXIT_USAGE
    return apply_run(run, paths, force=force, environ=env, out=out, err=err)


def apply_run(run: StagedRun, paths: Sequence[str] = (), *, force: bool, environ: Mapping[str, str],
              out: IO[str], err: IO[str], own_run: bool = False) -> int:
    """Apply ``run`` and say what happened; ``own_run``: the launcher of this very run
    (``--on-exit apply``), which still holds its lock."""
    from capgate.staging.apply import apply_changes

    if not own_run and run.running():
        err.write(f"capgate apply: run {run.run_id} is still going; apply it when it has ended\n")
        return EXIT_USAGE
    try:
        gate = _apply_gate(run, environ)
        result = apply_changes(run, gate, force=force, only=paths)
    except (StagingError, PolicyError, OSError) as exc:
        err.write(f"capgate apply: {exc}\n")
        return EXIT_USAGE
    if result.refused:
        err.write(f"capgate apply: refused; nothing was applied ({len(result.refused)} "
                  f"problem{'s' if len(result.refused) != 1 else ''}):\n")
        for refusal in result.refused:
            err.write(f"  {safe_name(refusal.path)}: {safe_name(refusal.reason)} [{refusal.rule}]\n")
        return EXIT_REFUSED
    if result.failed is not None:
        path, why = result.failed
        err.write(f"capgate apply: failed at {safe_name(path)}: {safe_name(why)}; {len(result.applied)} change"
                  f"{'s were' if len(result.applied) != 1 else ' was'} applied, each whole (the others are "
                  "untouched and still pending):\n")
        for applied in result.applied:
            err.write(f"  applied: {safe_name(applied)}\n")
        return EXIT_REFUSED
    out.write(f"capgate: applied {len(result.applied)} change{'s' if len(result.applied) != 1 else ''} of staged "
              f"run {run.run_id} to {run.workspace}\n")
    if not paths and result.pending == 0 and not own_run:
        try:
            remove_run(run)
            out.write(f"capgate: staged run {run.run_id} has nothing pending; its staging was removed\n")
        except (StagingError, OSError) as exc:
            err.write(f"capgate apply: the changes are applied, but the staging could not be removed: {exc}\n")
    return 0


def discard_command(run_id: str | None, *, workspace: str | None = None, environ: Mapping[str, str] | None = None,
                    stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if _refuse_in_sandbox(env, err, "discard"):
        return EXIT_IN_SANDBOX
    run = _find(run_id, workspace, env, err, "discard")
    if run is None:
        return EXIT_USAGE
    try:
        remove_run(run)
    except (StagingError, OSError) as exc:
        err.write(f"capgate discard: {exc}\n")
        return EXIT_USAGE
    out.write(f"capgate: discarded staged run {run.run_id}\n")
    return 0
