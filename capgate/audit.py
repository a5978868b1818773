"""The audit log: one JSON line per decision or event, plus a bounded denial summary.

Every decision goes through ``AuditLog.record``: allowed ones at ``info``, denials at
``warning``. Lines are written by structlog (JSON, UTC ISO timestamps). The summary keeps a
count per (operation, target) — at most ``MAX_DISTINCT`` distinct pairs, the rest counted
in ``overflow`` — so a hostile loop of denials cannot grow memory without bound.

Where lines go: an explicit path or stream; else ``$CAPGATE_AUDIT_LOG`` (all decisions);
else standard error, denials only (an embedded gate should be loud about denials, quiet
about the thousands of allowed reads).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from typing import IO, Any, TextIO, cast

import structlog

from capgate.decision import Decision

__all__ = ["MAX_DISTINCT", "AuditLog", "DenialCount"]

MAX_DISTINCT = 1000

DenialCount = tuple[str, str, int]


class AuditLog:
    """A JSON-lines audit writer with a denial summary. Thread-safe."""

    def __init__(self, sink: str | os.PathLike[str] | IO[str] | None = None, *, level: str = "info") -> None:
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
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(cast("TextIO", stream)),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(sort_keys=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
            cache_logger_on_first_use=True,
        )
        # Allowed decisions are the hot path (every file read): when the log does not keep
        # them, count and return without building an event.
        self._log_allowed = getattr(logging, level.upper()) <= logging.INFO
        self.allowed = 0
        self.denied = 0
        self.overflow = 0
        self._denials: collections.Counter[tuple[str, str]] = collections.Counter()

    @classmethod
    def from_environment(cls) -> AuditLog:
        path = os.environ.get("CAPGATE_AUDIT_LOG")
        if path:
            try:
                return cls(path)
            except OSError:
                pass  # an unwritable log must not stop the gate; fall back to stderr
        return cls(None, level="warning")

    def record(self, op: str, target: str, decision: Decision, **extra: Any) -> None:
        """Log one decision and count it."""
        if decision.allowed and not self._log_allowed:
            with self._lock:
                self.allowed += 1
            return
        with self._lock:
            if decision.allowed:
                self.allowed += 1
            else:
                self.denied += 1
                key = (op, target)
                if key in self._denials or len(self._denials) < MAX_DISTINCT:
                    self._denials[key] += 1
                else:
                    self.overflow += 1
        fields = {
            "op": op,
            "target": target,
            "decision": "allow" if decision.allowed else "deny",
            "rule": decision.rule,
            "reason": decision.reason,
            **extra,
        }
        try:
            if decision.allowed:
                self._logger.info("decision", **fields)
            else:
                self._logger.warning("decision", **fields)
        except (OSError, ValueError):
            pass  # a closed or full log never turns a denial into an allow, nor crashes the caller

    def event(self, name: str, **fields: Any) -> None:
        """A non-decision line (policy loaded, backend chosen, run finished)."""
        try:
            self._logger.info(name, **fields)
        except (OSError, ValueError):
            pass

    def warning(self, name: str, **fields: Any) -> None:
        try:
            self._logger.warning(name, **fields)
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
        if self._owned is not None:
            self._owned.close()
            self._owned = None
