"""``capgate audit [FILE]``: the summary of one run's JSON-lines audit log, and the pruning of
old run logs.

A run log holds ``run.start`` (command, backend, policy), one ``decision`` line per decision
(``decision: allow|deny``, ``op``, ``target``, ``rule``) and ``run.end`` (exit status, duration,
limits that fired). The summary reads those; a line that is not JSON is counted, never fatal
(a log cut short by a full disk still summarizes).

Pruning: the default log directory keeps the newest ``CAPGATE_AUDIT_KEEP_RUNS`` run logs
(default 100) and at most ``CAPGATE_AUDIT_KEEP_MB`` MiB of them (default 100); older ones are
removed when a run starts. A log named with ``--audit-log`` is never pruned.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["audit_command", "default_audit_dir", "prune_run_logs", "summarize"]

DEFAULT_KEEP_RUNS = 100
DEFAULT_KEEP_MB = 100


def default_audit_dir(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")
    state = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(state, "capgate", "audit")


def _run_logs(directory: str) -> list[tuple[float, int, str]]:
    """``(mtime, size, path)`` of the run logs in ``directory``, newest first."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith("run-") and entry.name.endswith(".jsonl"):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_file(follow_symlinks=False):
                out.append((st.st_mtime, st.st_size, entry.path))
    out.sort(reverse=True)
    return out


def _setting(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def prune_run_logs(directory: str, environ: Mapping[str, str] | None = None, *,
                   keep_room_for_one: bool = False) -> list[str]:
    """Remove the oldest run logs beyond the limits; return what was removed.
    ``keep_room_for_one``: a new log is about to be written, so keep one fewer."""
    env = os.environ if environ is None else environ
    keep = _setting(env, "CAPGATE_AUDIT_KEEP_RUNS", DEFAULT_KEEP_RUNS) - (1 if keep_room_for_one else 0)
    budget = _setting(env, "CAPGATE_AUDIT_KEEP_MB", DEFAULT_KEEP_MB) * 1024 * 1024
    removed = []
    total = 0
    for index, (_mtime, size, path) in enumerate(_run_logs(directory)):
        total += size
        if index >= keep or (total > budget and index > 0):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def summarize(lines: Any) -> dict[str, Any]:
    """The summary of a run log's lines (an iterable of text lines)."""
    denials: collections.Counter[tuple[str, str, str]] = collections.Counter()
    allowed = denied = unreadable = 0
    start: dict[str, Any] = {}
    end: dict[str, Any] = {}
    warnings: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if not isinstance(entry, dict):
            unreadable += 1
            continue
        event = entry.get("event")
        if event == "decision":
            if entry.get("decision") == "deny":
                denied += 1
                denials[(str(entry.get("op")), str(entry.get("target")), str(entry.get("rule")))] += 1
            else:
                allowed += 1
        elif event == "run.start":
            start = entry
        elif event in ("run.end", "run.failed", "run.refused"):
            end = {**end, **entry}
        elif entry.get("level") == "warning":
            warnings.append(str(event))
    return {
        "command": start.get("command"),
        "backend": start.get("backend"),
        "started": start.get("timestamp"),
        "auditAllowed": start.get("audit_allowed", True),
        "exitStatus": end.get("returncode"),
        "signal": end.get("signal"),
        "timedOut": end.get("timed_out"),
        "durationSeconds": end.get("duration_s"),
        "limitsFired": end.get("limits_fired") or [],
        "finished": bool(end),
        "failure": end.get("reason") or end.get("refused"),
        "allowed": end.get("allowed", allowed) if isinstance(end.get("allowed"), int) else allowed,
        "denied": end.get("denied", denied) if isinstance(end.get("denied"), int) else denied,
        "denials": [{"op": op, "target": target, "rule": rule, "count": count}
                    for (op, target, rule), count in denials.most_common()],
        "unreadableLines": unreadable,
    }


def _format(path: str, data: dict[str, Any]) -> str:
    command = " ".join(data["command"]) if isinstance(data["command"], list) else "(unknown)"
    lines = [f"capgate audit: {path}", f"  command: {command}",
             f"  backend: {data['backend'] or '(unknown)'}   started: {data['started'] or '(unknown)'}"]
    if data["finished"] and data["exitStatus"] is None:
        lines.append(f"  the run failed: {data['failure'] or 'no exit status recorded'}")
    elif data["finished"]:
        status = f"exit status {data['exitStatus']}"
        if data["signal"]:
            status += f" (stopped by {data['signal']})"
        duration = data["durationSeconds"]
        lines.append(f"  {status}   duration: {'?' if duration is None else f'{duration} s'}")
    else:
        lines.append("  the run has not finished (or its log was cut short): no run.end line")
    fired = ", ".join(data["limitsFired"]) or "none"
    lines.append(f"  limits that fired: {fired}{' (wall time)' if data['timedOut'] else ''}")
    allowed = f"{data['allowed']} allowed" + ("" if data["auditAllowed"] else " (not logged one by one)")
    lines.append(f"  decisions: {data['denied']} denied, {allowed}")
    if data["denials"]:
        width = max(len("operation"), *(len(d["op"]) for d in data["denials"]))
        lines.append(f"  {'count':>5}  {'operation':<{width}}  target (rule)")
        lines += [f"  {d['count']:>5}  {d['op']:<{width}}  {d['target']} ({d['rule']})" for d in data["denials"]]
    if data["unreadableLines"]:
        lines.append(f"  ({data['unreadableLines']} lines were not JSON and were skipped)")
    return "\n".join(lines) + "\n"


def audit_command(path: str | None, *, as_json: bool = False, environ: Mapping[str, str] | None = None,
                  stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``capgate audit [FILE]``: 0 printed, 2 no log or an unreadable one."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if path is None:
        directory = default_audit_dir(environ)
        logs = _run_logs(directory)
        if not logs:
            err.write(f"capgate: no run logs in {directory} (name one: capgate audit FILE)\n")
            return 2
        path = logs[0][2]
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            data = summarize(fh)
    except OSError as exc:
        err.write(f"capgate: cannot read audit log {path}: {exc.strerror or exc}\n")
        return 2
    if as_json:
        out.write(json.dumps({"file": path, **data}) + "\n")
    else:
        out.write(_format(path, data))
    return 0
