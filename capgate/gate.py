"""``Gate``: the one place that answers allow or deny.

A gate holds a frozen ``Policy``, the compiled rule tables, the audit log and the per-run
counters (output quota). ``with gate:`` makes it the current gate for ``capgate.fs``,
``capgate.net`` and ``capgate.proc`` in this context (a ``contextvars`` variable: asyncio
tasks started inside inherit it, nesting restores the outer gate, and ``threading.Thread``,
``_thread.start_new_thread`` and ``ThreadPoolExecutor`` work started inside run under it — see
``_gate_threads``). A thread that reaches no gate is refused (rule ``gate.thread``) instead of
being handed the ambient gate while any gate is active, and — in any thread but the main
thread — ever after a gate has been activated in the process: a thread made by C code inside
``with gate:`` starts with an empty context that cannot say where it was started, so once gates
are in use only the main thread may still fall back to the ambient gate.

``check(op, target)`` never raises for a denial: any exception while deciding *is* a denial
(rule ``gate.error``). The acting modules resolve the target themselves (open the file, look
up the host, find the binary), then call ``decide_*`` with what they are about to use.
"""

from __future__ import annotations

import contextvars
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from capgate import _gate_threads, ops
from capgate.decision import Decision
from capgate.errors import PermissionDenied
from capgate.paths import PathRules, canonicalize, coerce_path, display

if TYPE_CHECKING:
    from capgate.audit import AuditLog
    from capgate.policy.model import Policy

__all__ = ["Gate", "current_gate", "hard_link_denial"]

_current: contextvars.ContextVar[Gate | None] = contextvars.ContextVar("capgate_gate", default=None)
_ambient: Gate | None = None
_ambient_lock = threading.Lock()
# Gates activated by ``with`` in any thread, with their nesting counts: while one is, a thread
# that reaches none is refused rather than handed the ambient gate (another policy).
_active: weakref.WeakKeyDictionary[Gate, int] = weakref.WeakKeyDictionary()
# Whether any gate has ever been activated by ``with`` in this process: from then on only the
# main thread may fall back to the ambient gate (see the module docstring).
_activated = False
# This context's open ``with`` blocks, innermost last, each with the gate that was current
# before it. A context variable, not a per-thread stack: the asyncio tasks of one thread each
# run in their own context, and each must leave only the blocks it entered.
_entries: contextvars.ContextVar[tuple[tuple[Gate, Gate | None], ...]] = contextvars.ContextVar(
    "capgate_gate_entries", default=()
)


class Gate:
    """The capability gate for one policy.

    ``audit``: an ``AuditLog`` (default: ``$CAPGATE_AUDIT_LOG`` or denials on stderr).
    ``resolver``: a callable ``(host, port) -> list[str]`` of IP strings used by ``net``
    (default: the system resolver with a timeout); inject one for tests or your own DNS.
    """

    def __init__(self, policy: Policy, *, audit: AuditLog | None = None, resolver: Any = None) -> None:
        from capgate.policy.model import Policy

        if not isinstance(policy, Policy):
            raise TypeError(f"Gate needs a capgate.Policy, not {type(policy).__name__}")
        self.policy = policy
        if audit is None:
            from capgate.audit import AuditLog  # (on need: most embedders pass their own)

            audit = AuditLog.from_environment()
        self.audit = audit
        self.resolver = resolver
        self._paths = PathRules(policy.filesystem, policy.home)
        self._network_rules: Any = None
        self._command_rules: Any = None
        self._lock = threading.Lock()
        self.bytes_written = 0
        self._workspace_fd: int | None = None

    # -- activation ---------------------------------------------------------------------
    def __enter__(self) -> Gate:
        global _activated
        _gate_threads.install(_current)
        with _ambient_lock:
            _active[self] = _active.get(self, 0) + 1
            _activated = True
        _entries.set((*_entries.get(), (self, _current.get())))
        _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        """Leave this context's innermost block of this gate. Whatever happens, the block no
        longer counts as active (a gate left in ``_active`` would refuse every gateless thread
        forever); leaving a block this context did not enter (another thread, another asyncio
        task) or out of order raises ``RuntimeError`` instead of restoring the wrong gate."""
        try:
            _leave(self)
        finally:
            with _ambient_lock:
                left = _active.get(self, 1) - 1
                if left > 0:
                    _active[self] = left
                else:
                    _active.pop(self, None)

    # -- rule tables (built on first use) -----------------------------------------------
    @property
    def network_rules(self) -> Any:
        if self._network_rules is None:
            from capgate.netrules import NetworkRules

            self._network_rules = NetworkRules(self.policy, resolver=self.resolver)
        return self._network_rules

    @property
    def command_rules(self) -> Any:
        if self._command_rules is None:
            from capgate.cmdrules import CommandRules

            self._command_rules = CommandRules(self.policy)
        return self._command_rules

    @property
    def path_rules(self) -> PathRules:
        """The compiled filesystem rules: what a backend builds its kernel view from, so the
        view holds the gate's own answers (the one decision point)."""
        return self._paths

    # -- questions ----------------------------------------------------------------------
    def show(self, path: str) -> str:
        """A canonical path as shown to people and in the log (home as ``~``)."""
        return display(path, self.policy.home)

    def canonical_path(self, target: object) -> str:
        return canonicalize(target, self.policy.workspace, self.policy.home)

    def check(self, op: str, target: object) -> Decision:
        """Decide ``op`` on ``target`` without acting. Never raises for a denial."""
        shown = _safe_repr(target)
        try:
            if op in ops.FS_OPS:
                try:
                    canonical = self.canonical_path(target)
                except (TypeError, ValueError) as exc:  # the same rule fs raises for it
                    decision = Decision.deny(f"malformed path: {exc}", "fs.path", shown)
                    self.audit.record(op, shown, decision)
                    return decision
                shown = self.show(canonical)
                decision = self._paths.decide(op, canonical)
                if decision.allowed and op == ops.FS_READ:
                    decision = _hard_link_rule(decision, canonical)
            elif op == ops.NET_CONNECT:
                decision, _endpoint = self.network_rules.decide(coerce_path(target))
            elif op == ops.PROC_EXEC:
                decision = self.command_rules.decide(coerce_path(target))
            else:
                decision = Decision.deny(f"unknown operation {op!r}", "gate.op")
        except Exception as exc:  # fail closed: an error while deciding is a denial
            decision = Decision.deny(f"error while deciding: {exc}", "gate.error")
        self.audit.record(op, shown, decision)
        return decision

    def decide_path(self, op: str, canonical: str, **extra: Any) -> Decision:
        """Decide and log ``op`` on an already canonical path (what ``fs`` opened)."""
        try:
            decision = self._paths.decide(op, canonical)
        except Exception as exc:
            decision = Decision.deny(f"error while deciding: {exc}", "gate.error", canonical)
        self.audit.record(op, self.show(canonical), decision, **extra)
        return decision

    def peek_path(self, op: str, canonical: str, *, temp_rule: bool = True) -> Decision:
        """Decide ``op`` on a canonical path *without* logging: ``fs`` peeks, opens, verifies
        the descriptor, then logs the one final decision with ``record``. ``temp_rule=False``
        (the soft hooks): see ``PathRules.decide``."""
        try:
            return self._paths.decide(op, canonical, temp_rule=temp_rule)
        except Exception as exc:
            return Decision.deny(f"error while deciding: {exc}", "gate.error", canonical)

    def record(self, op: str, target: str, decision: Decision, **extra: Any) -> None:
        self.audit.record(op, target, decision, **extra)

    def workspace_fd(self) -> int:
        """An ``O_PATH`` descriptor of the workspace root, opened once: in-workspace paths are
        opened beneath it (``RESOLVE_BENEATH``), so renaming the root cannot redirect them."""
        fd = self._workspace_fd
        if fd is not None:
            return fd
        with self._lock:
            if self._workspace_fd is None:
                self._workspace_fd = os.open(
                    self.policy.workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
                )
            return self._workspace_fd

    def refund_output(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_written = max(0, self.bytes_written - nbytes)

    def __del__(self) -> None:
        fd = getattr(self, "_workspace_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def recursive_delete_root(self, canonical: str) -> str | None:
        return self._paths.recursive_delete_root(canonical)

    def deny(self, op: str, target: str, reason: str, rule: str, **extra: Any) -> PermissionDenied:
        """Log a denial decided by a mechanism (e.g. a hard link, a quota) and return the
        exception to raise: every refusal is in the audit log, whoever noticed it."""
        decision = Decision.deny(reason, rule, target)
        self.audit.record(op, target, decision, **extra)
        return PermissionDenied(op, target, reason, rule)

    def enforce(self, op: str, target: str, decision: Decision) -> None:
        """Raise ``PermissionDenied`` for a denial (already logged)."""
        if not decision.allowed:
            raise PermissionDenied(op, target, decision.reason, decision.rule)

    def charge_output(self, nbytes: int, target: str) -> None:
        """Count bytes written against ``outputQuotaMb``; refuse past the quota."""
        quota = self.policy.limits.output_quota_mb * 1024 * 1024
        with self._lock:
            if self.bytes_written + nbytes > quota:
                raise self.deny(
                    ops.FS_WRITE,
                    target,
                    f"output quota of {self.policy.limits.output_quota_mb} MB would be exceeded",
                    "limits.outputQuotaMb",
                )
            self.bytes_written += nbytes

    def denial_summary(self) -> list[tuple[str, str, int]]:
        """Denials so far as (operation, target, count), most frequent first."""
        return self.audit.summary()


def _leave(gate: Gate) -> None:
    """Remove ``gate``'s innermost entry from this context's stack and restore the gate that
    was current before it."""
    entries = _entries.get()
    index = len(entries) - 1
    while index >= 0 and entries[index][0] is not gate:
        index -= 1
    if index < 0:
        raise RuntimeError(
            "capgate: leaving a gate that was not entered in this context (a 'with gate:' block "
            "entered in another thread or asyncio task and left here); the gate stays current "
            "where it was entered — enter and leave a gate in the same thread or task"
        )
    previous = entries[index][1]
    above = entries[index + 1 :]
    if not above:
        _entries.set(entries[:index])
        _current.set(previous)
        return
    # Out of order: the block entered inside ours now restores what ours would have.
    _entries.set((*entries[:index], (above[0][0], previous), *above[1:]))
    raise RuntimeError("capgate: gates left out of order (an inner 'with gate:' block is still open)")


def _safe_repr(target: object) -> str:
    if isinstance(target, str):
        return target.replace("\x00", "\\x00")
    if isinstance(target, os.PathLike):
        try:
            return _safe_repr(os.fspath(target))
        except Exception:
            return "<unprintable path>"
    return f"<{type(target).__name__}>"


def current_gate() -> Gate:
    """The active gate; with none active, one from ``$CAPGATE_POLICY`` (set by the launcher
    inside a sandbox) or, failing that, the defaults with the current directory as workspace."""
    gate = _current.get()
    if gate is not None:
        return gate
    global _ambient
    with _ambient_lock:
        if _active or (_activated and threading.get_ident() != threading.main_thread().ident):
            raise _no_gate_in_this_thread(list(_active) or ([_ambient] if _ambient is not None else []))
        if _ambient is None:
            from capgate.policy.dump import load_effective_policy
            from capgate.policy.load import load_policy

            path = os.environ.get("CAPGATE_POLICY")
            policy = load_effective_policy(path) if path else load_policy(None, workspace=os.getcwd())
            _ambient = Gate(policy)
        return _ambient


def _no_gate_in_this_thread(logs: list[Gate]) -> PermissionDenied:
    """A thread that inherited no gate while one is (or was) active elsewhere: refused, and
    logged in the active gates' logs, or the ambient gate's when none is active (the ambient
    gate would decide by a policy nobody activated for this thread)."""
    thread = threading.current_thread().name
    reason = (
        "no capgate gate is active in this thread, and gates are in use in this process (only the main "
        "thread falls back to the ambient gate); start the thread inside 'with gate:' (threading.Thread, "
        "_thread.start_new_thread and ThreadPoolExecutor inherit it) or enter a gate in it"
    )
    decision = Decision.deny(reason, "gate.thread", thread)
    for gate in logs:
        gate.audit.record("gate", f"thread {thread}", decision)
    return PermissionDenied("gate", f"thread {thread}", reason, "gate.thread")


def _hard_link_rule(decision: Decision, canonical: str) -> Decision:
    """``check`` answers what ``fs`` would do: a hard-linked regular file is not readable,
    because its other names (perhaps a secret outside every root) cannot be checked."""
    import stat as stat_mod

    try:
        st = os.stat(canonical)
    except OSError:
        return decision
    if stat_mod.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return hard_link_denial(canonical, st.st_nlink)
    return decision


def hard_link_denial(canonical: str, nlink: int) -> Decision:
    """The one answer for a regular file with more than one name (``fs``, ``check`` and the
    soft hooks all give it): its other names, perhaps a secret outside every root, cannot be
    seen, so it is neither read nor changed in place."""
    return Decision.deny(f"hard-linked file (st_nlink={nlink}): its other names cannot be checked",
                         "filesystem.hardLinks", canonical)
