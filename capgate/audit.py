"""The audit log: one JSON line per decision or event, plus a bounded denial summary.

Every decision goes through ``AuditLog.record``: allowed ones at ``info``, denials at
``warning``. Lines are structlog's JSON lines (UTC ISO timestamps; the same keys and order as
its ``add_log_level`` + JSON renderer chain), written here directly (``_JsonLines``):
importing structlog costs ~40 ms (it pulls in asyncio), which every ``capgate run`` paid, on
a background thread competing with the child and then waited for at exit. ``record_many``
writes the same lines for a batch with one timestamp and one write. The summary keeps a
count per (operation, target) — at most ``MAX_DISTINCT`` distinct pairs, the rest counted
in ``overflow`` — so a hostile loop of denials cannot grow memory without bound.

Where lines go: an explicit path or stream; else ``$CAPGATE_AUDIT_LOG`` (all decisions, as
JSON lines); else the standard ``logging`` logger ``capgate``, denials only, at ``WARNING``
(an embedded gate should be loud about denials, quiet about the thousands of allowed reads,
and go where the application's own logging goes). Each such record carries the decision's
fields as ``record.capgate`` (a dict).
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from capgate.decision import Decision

__all__ = ["LOGGER_NAME", "MAX_DISTINCT", "AuditLog", "DenialCount"]

LOGGER_NAME = "capgate"

MAX_DISTINCT = 1000
# The standard logging levels by name (``logging``'s numbers, as structlog's filtering
# logger takes), without importing ``logging`` (~3 ms) on the launcher's start-up path.
_LEVELS = {"notset": 0, "debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50,
           "fatal": 50}

DenialCount = tuple[str, str, int]

# One encoder for every line: ``json.dumps(..., default=repr)`` builds a new encoder per
# call (~3 us), and a child's forwarded decisions are written one line each.
_dumps = json.JSONEncoder(default=repr).encode


_quote = json.encoder.encode_basestring_ascii  # (C) how json.dumps writes a string, ensure_ascii


def _entry(op: str, target: str, allowed: bool, rule: str, reason: str,
           extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(level, fields) of one decision line, as ``record`` logs it."""
    return ("info" if allowed else "warning",
            {"op": op, "target": target, "decision": "allow" if allowed else "deny", "rule": rule,
             "reason": reason, **extra})


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class _JsonLines:
    """What structlog's ``wrap_logger(WriteLogger(stream), processors=[add_log_level,
    <stamp unless stamped>, JSONRenderer()], wrapper_class=make_filtering_bound_logger(level))``
    writes — ``{**fields, "event", "level", "timestamp"}`` as ``json.dumps`` renders it, one
    line each, flushed — without importing structlog (``tests/unit/test_audit_lines.py``
    compares the two line for line)."""

    def __init__(self, stream: IO[str], level: int) -> None:
        self._stream = stream
        self._level = level

    def _log(self, level: str, name: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < self._level:
            return
        event = {**fields, "event": name, "level": level}
        event.setdefault("timestamp", _now())
        self._stream.write(_dumps(event) + "\n")
        self._stream.flush()

    def info(self, name: str, **fields: Any) -> None:
        self._log("info", name, fields)

    def warning(self, name: str, **fields: Any) -> None:
        self._log("warning", name, fields)


class _LoggingStream:
    """A text stream that hands each JSON line it is given to the ``capgate`` logger: a
    denial as ``"fs.read denied: /path (reason) [rule]"`` at WARNING, other lines at their
    own level, every field in ``record.capgate``."""

    def __init__(self) -> None:
        import logging

        self._logger = logging.getLogger(LOGGER_NAME)
        self._levels = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                        "error": logging.ERROR, "critical": logging.CRITICAL}

    def write(self, text: str) -> int:
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            level = self._levels.get(str(entry.get("level")), 20)
            if entry.get("event") == "decision":
                verdict = "denied" if entry.get("decision") == "deny" else "allowed"
                message = f"{entry.get('op')} {verdict}: {entry.get('target')} ({entry.get('reason')}) " \
                          f"[{entry.get('rule')}]"
            else:
                message = str(entry.get("event"))
            self._logger.log(level, "%s", message, extra={"capgate": entry})
        return len(text)

    def flush(self) -> None:
        pass


class AuditLog:
    """A JSON-lines audit writer with a denial summary. Thread-safe.

    ``sink``: a path (appended to), a text stream, or None for standard error. ``level``:
    ``info`` writes every decision, ``warning`` only denials. ``log_allowed=False`` leaves
    allowed decisions out (they are still counted). ``AuditLog.from_environment()`` is what a
    ``Gate`` without ``audit=`` uses (see the module docstring)."""

    def __init__(
        self, sink: str | os.PathLike[str] | IO[str] | None = None, *, level: str = "info", log_allowed: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._owned: IO[str] | None = None
        if sink is None:
            stream: IO[str] = sys.stderr
        elif isinstance(sink, (str, os.PathLike)):
            self.path: str | None = os.path.realpath(os.fspath(sink))
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            stream = self._owned = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        else:
            stream = sink
        if not isinstance(sink, (str, os.PathLike)):
            self.path = None
        self._stream = stream
        try:
            self._level = _LEVELS[level.lower()]
        except KeyError:
            raise ValueError(f"unknown audit level {level!r} (one of {', '.join(_LEVELS)})") from None
        self._write_lock = threading.RLock()
        self._logger = _JsonLines(stream, self._level)
        # Allowed decisions are the hot path (every file read): when the log does not keep
        # them, count and return without building an event.
        # (``log_allowed=False``: ``capgate run --audit-allowed off`` — events and denials stay.)
        self._log_allowed = self._level <= _LEVELS["info"] and log_allowed
        self.allowed = 0
        self.denied = 0
        self.overflow = 0
        self._denials: collections.Counter[tuple[str, str]] = collections.Counter()

    def _emit(self, level: str, name: str, fields: dict[str, Any]) -> None:
        with self._write_lock:
            try:
                getattr(self._logger, level)(name, **fields)
            except (OSError, ValueError):
                pass  # a closed or full log never turns a denial into an allow, nor crashes the caller

    @classmethod
    def from_environment(cls) -> AuditLog:
        path = os.environ.get("CAPGATE_AUDIT_LOG")
        if path:
            try:
                return cls(path)
            except OSError:
                pass  # an unwritable log must not stop the gate; fall back to the logger
        return cls(cast("IO[str]", _LoggingStream()), level="warning")

    @property
    def logs_allowed(self) -> bool:
        """Whether allowed decisions are written (level ``info`` or lower), or only counted."""
        return self._log_allowed

    def count_allowed(self) -> None:
        """Count one allowed decision that is not written (``logs_allowed`` is False): what
        ``record`` does for it, for callers that skip building its target and fields."""
        with self._lock:
            self.allowed += 1

    def record(self, op: str, target: str, decision: Decision, **extra: Any) -> None:
        """Log one decision and count it."""
        if decision.allowed and not self._log_allowed:
            with self._lock:
                self.allowed += 1
            return
        self._count(((op, target, decision.allowed),))
        level, fields = _entry(op, target, decision.allowed, decision.rule, decision.reason, extra)
        self._emit(level, "decision", fields)

    def record_many(self, rows: Sequence[tuple[str, str, Decision, dict[str, Any]]]) -> None:
        """Log and count several decisions at once — ``(op, target, decision, extra)`` rows, as
        ``record`` takes them — with one timestamp and one write for the batch. For bulk
        forwarding (a sandboxed child's report): the lines are the ones ``_JsonLines``
        writes for ``record``, built here without its per-call overhead."""
        self._count((op, target, decision.allowed) for op, target, decision, _extra in rows)
        self._write_decisions([_entry(op, target, decision.allowed, decision.rule, decision.reason, extra)
                               for op, target, decision, extra in rows
                               if not decision.allowed or self._log_allowed], _now())

    def _count(self, rows: Iterable[tuple[str, str, bool]]) -> None:
        """Count ``(op, target, allowed)`` decisions (denials per operation and target)."""
        with self._lock:
            for op, target, allowed in rows:
                if allowed:
                    self.allowed += 1
                    continue
                self.denied += 1
                key = (op, target)
                if key in self._denials or len(self._denials) < MAX_DISTINCT:
                    self._denials[key] += 1
                else:
                    self.overflow += 1

    def _write_decisions(self, entries: list[tuple[str, dict[str, Any]]], stamp: str) -> None:
        if not entries:
            return
        with self._write_lock:
            # What ``_JsonLines`` makes of ``record``, with one timestamp for the batch.
            text = "".join(
                _dumps({**fields, "event": "decision", "level": level, "timestamp": stamp}) + "\n"
                for level, fields in entries
            )
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # as in _emit: a closed or full log never turns a denial into an allow

    def record_child(self, rows: Sequence[tuple[str, str, bool, str, str, int | None]]) -> None:
        """``record_many`` for a sandboxed child's forwarded decisions — ``(op, target, allowed,
        rule, reason, child pid)`` rows, already validated by the reader — with the same lines
        (``source: child``, ``child_pid``) rendered from a template: a child that opens files in
        a burst sends one line per open, and this keeps the launcher ahead of it."""
        self._count((op, target, allowed) for op, target, allowed, _rule, _reason, _pid in rows)
        keep = [row for row in rows if not row[2] or self._log_allowed]
        if not keep:
            return
        stamp = _now()
        with self._write_lock:
            tail = '", "timestamp": "' + stamp + '"}\n'
            text = "".join(
                '{"op": ' + _quote(op) + ', "target": ' + _quote(target)
                + (', "decision": "allow", "rule": ' if allowed else ', "decision": "deny", "rule": ')
                + _quote(rule) + ', "reason": ' + _quote(reason) + ', "source": "child", "child_pid": '
                + (str(pid) if type(pid) is int else "null")
                + (', "event": "decision", "level": "info' if allowed else ', "event": "decision", "level": "warning')
                + tail
                for op, target, allowed, rule, reason, pid in keep
            )
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # as in _emit: a closed or full log never turns a denial into an allow

    def event(self, name: str, **fields: Any) -> None:
        """A non-decision line (policy loaded, backend chosen, run finished)."""
        self._emit("info", name, fields)

    def warning(self, name: str, **fields: Any) -> None:
        self._emit("warning", name, fields)

    def flush(self) -> None:
        """Every line is written and flushed as it is logged; kept for callers that flush."""
        with self._write_lock:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def summary(self) -> list[DenialCount]:
        """Denials as (operation, target, count), most frequent first."""
        with self._lock:
            items = self._denials.most_common()
        return [(op, target, count) for (op, target), count in items]

    def format_summary(self) -> str:
        rows = self.summary()
        if not rows:
            return f"capgate: no denials ({self.allowed} allowed)"
        width = max(len(op) for op, _, _ in rows)
        lines = [
            f"capgate: {self.denied} denied, {self.allowed} allowed",
            f"  {'count':>5}  {'operation':<{width}}  target",
        ]
        lines += [f"  {count:>5}  {op:<{width}}  {target}" for op, target, count in rows]
        if self.overflow:
            lines.append(f"  (+{self.overflow} more denials of other targets)")
        return "\n".join(lines)

    def close(self) -> None:
        self.flush()
        if self._owned is not None:
            self._owned.close()
            self._owned = None
