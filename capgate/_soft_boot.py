"""Activation of the soft sandbox inside a Python child, before any user code runs.

How it gets to run first, unmodified programs included: the launcher writes a one-file
directory ``<run dir>/boot`` holding ``sitecustomize.py`` and puts *only that directory* on
the child's ``PYTHONPATH``. ``site`` imports ``sitecustomize`` at interpreter start-up, after
the standard paths are set and before ``-c``, ``-m`` or the script runs; it calls ``boot()``.

Why this ``PYTHONPATH`` is safe when the clean environment otherwise strips the variable: it
is set by the launcher, not inherited; it points at a directory the launcher created (mode
0500, file 0400, outside the workspace and every write root, and a runtime *read* root in the
policy so the gate refuses writes to it). ``-I``, ``-E`` and ``-S`` would skip it, so the
launcher refuses Python command lines that carry them — and so do the hooks, for a Python
program the child starts, whose environment must also carry the launcher's ``PYTHONPATH``,
``CAPGATE_POLICY`` and the other start-up variables unchanged (``capgate.soft``). The policy
file itself must look like the launcher's (``check_launcher_file``: a read-only regular file,
outside every write root of the policy it holds), and no file the loaded policy lets this
process write is accepted as ``CAPGATE_POLICY``. If ``boot()`` fails for any reason
the process exits with 125 before user code runs (fail closed) — a Python that cannot import
capgate refuses to run under the soft sandbox rather than running unguarded.

Environment read here: ``CAPGATE_POLICY`` (effective policy JSON), ``CAPGATE_AUDIT_FD`` (the
write end of the launcher's audit pipe; removed from the environment so grandchildren do not
see a number that means nothing to them), ``CAPGATE_PROXY`` (``host:port`` of the egress proxy
when the network is on).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from capgate.decision import Decision

_quote = json.encoder.encode_basestring_ascii

__all__ = ["SITECUSTOMIZE", "ChildAudit", "boot"]

# Written by the launcher as <boot dir>/sitecustomize.py.
SITECUSTOMIZE = '''\
# Written by the capgate launcher (capgate/_soft_boot.py): activates the soft sandbox before
# any user code. If activation fails the process stops here instead of running unguarded.
# Plain syntax on purpose: ``site`` only *warns* about a sitecustomize that does not compile
# and runs the program anyway, so even Python 2 must reach the refusal below.
try:
    import sys as _sys
    if getattr(getattr(_sys, "implementation", None), "name", "") != "cpython" or _sys.version_info < (3, 10):
        raise RuntimeError("the hooks need CPython 3.10 or newer; this is %s %s (%s): run the agent with a newer "
                           "Python" % (getattr(getattr(_sys, "implementation", None), "name", "python"),
                                       _sys.version.split()[0], _sys.executable))
    import capgate._soft_boot
    capgate._soft_boot.boot()
except BaseException as _exc:  # noqa: BLE001
    import os as _os, sys as _sys
    _sys.stderr.write("capgate: the soft sandbox could not activate in this Python "
                      "(%s: %s); refusing to run unguarded\\n" % (type(_exc).__name__, _exc))
    _sys.stderr.flush()
    _os._exit(125)
'''

_PIPE_BUF = 4096
_RESERVED = frozenset({"op", "target", "decision", "rule", "reason", "pid"})
_FLUSH_AT = 32 * 1024


class ChildAudit:
    """The child side of the audit log: decisions as JSON lines on the launcher's pipe.

    Denials are written at once (they survive a kill); allowed decisions are buffered and
    written in chunks cut at line boundaries below ``PIPE_BUF`` so lines from forked
    processes sharing the pipe never interleave. Without a pipe, denials go to stderr.
    Same interface as ``capgate.audit.AuditLog`` for what the gate calls.
    """

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.allowed = 0
        self.denied = 0
        self.overflow = 0
        self._buffer: list[bytes] = []
        self._size = 0
        self._denials: dict[tuple[str, str], int] = {}
        self._dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

    def encode(self, op: str, target: str, decision: Decision, **extra: Any) -> bytes:
        """The line ``record`` writes for this decision (``capgate.soft`` keeps the line of
        an allowed decision and hands it back to ``append_allowed`` when it recurs)."""
        # What json.dumps(..., ensure_ascii=True, separators=(",", ":")) gives, built directly.
        line = (f'{{"op":{_quote(op)},"target":{_quote(target)},'
                f'"decision":"{"allow" if decision.allowed else "deny"}",'
                f'"rule":{_quote(decision.rule)},"reason":{_quote(decision.reason)},"pid":{os.getpid()}')
        for key, value in extra.items():
            if key in _RESERVED:
                continue
            if isinstance(value, bool):
                line += f',{_quote(key)}:{"true" if value else "false"}'
            elif isinstance(value, int):
                line += f",{_quote(key)}:{int(value)}"
            elif isinstance(value, str):
                line += f",{_quote(key)}:{_quote(value)}"
        return (line + "}\n").encode()

    def append_allowed(self, line: bytes) -> None:
        """Log an allowed decision already encoded by ``encode``. Buffered: an allowed line
        written just before the process is SIGKILLed can be lost (denials never are)."""
        self.allowed += 1
        if self.fd is None:
            return
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_AT:
            self.flush()

    # The launcher's log holds every decision of the child, allowed ones included.
    logs_allowed = True

    def count_allowed(self) -> None:
        self.allowed += 1

    def record(self, op: str, target: str, decision: Decision, **extra: Any) -> None:
        line = self.encode(op, target, decision, **extra)
        if decision.allowed:
            self.append_allowed(line)
            return
        self.denied += 1
        key = (op, target)
        if key in self._denials or len(self._denials) < 1000:
            self._denials[key] = self._denials.get(key, 0) + 1
        else:
            self.overflow += 1
        if self.fd is None:
            try:
                sys.stderr.write("capgate: " + line.decode())
            except Exception:
                pass
            return
        self._buffer.append(line)
        self.flush()

    def event(self, name: str, **fields: Any) -> None:
        if self.fd is not None:
            self._buffer.append(self._dumps({"event": name, "pid": os.getpid(), **fields}).encode() + b"\n")
            self.flush()

    def warning(self, name: str, **fields: Any) -> None:
        self.event(name, **fields)

    def flush(self) -> None:
        if self.fd is None or not self._buffer:
            return
        lines, self._buffer, self._size = self._buffer, [], 0
        chunk = b""
        for line in lines:
            line = line[: _PIPE_BUF - 1].rstrip(b"\n") + b"\n" if len(line) >= _PIPE_BUF else line
            if len(chunk) + len(line) > _PIPE_BUF:
                self._write(chunk)
                chunk = b""
            chunk += line
        if chunk:
            self._write(chunk)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)  # type: ignore[arg-type]
        except OSError:
            self.fd = None  # launcher gone: keep deciding, report on stderr

    def after_fork_in_child(self) -> None:
        self._buffer, self._size = [], 0

    def summary(self) -> list[tuple[str, str, int]]:
        return [(op, t, n) for (op, t), n in sorted(self._denials.items(), key=lambda kv: -kv[1])]

    def format_summary(self) -> str:
        rows = self.summary()
        return "\n".join(f"{n:>5}  {op}  {t}" for op, t, n in rows) or "no denials"

    def close(self) -> None:
        self.flush()


def _audit_fd() -> int | None:
    text = os.environ.pop("CAPGATE_AUDIT_FD", None)
    if not text:
        return None
    try:
        fd = int(text)
        import stat

        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except (ValueError, OSError):
        return None
    return fd


def _proxy() -> tuple[str, int] | None:
    text = os.environ.get("CAPGATE_PROXY")
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def boot() -> None:
    """Load the effective policy, build the gate, install the hooks. Raises on any problem
    (the ``sitecustomize`` stub turns that into exit 125)."""
    from capgate import soft
    from capgate.gate import Gate
    from capgate.policy.dump import check_launcher_file, load_effective_policy

    if soft.installed() is not None:
        return
    path = os.environ.get("CAPGATE_POLICY")
    if not path:
        raise RuntimeError("CAPGATE_POLICY is not set")
    policy = load_effective_policy(path)
    check_launcher_file(path, policy)
    audit = ChildAudit(_audit_fd())
    gate = Gate(policy, audit=audit)  # type: ignore[arg-type]
    from capgate import ops

    if gate.peek_path(ops.FS_WRITE, os.path.realpath(path)).allowed:
        raise RuntimeError(f"CAPGATE_POLICY {path} is a file the policy it holds lets this process write; "
                           "it is not the launcher's")
    import capgate.gate as gate_module

    gate_module._ambient = gate  # capgate.fs/net/proc in the child use this same gate
    import atexit

    atexit.register(audit.close)
    os.register_at_fork(before=audit.flush, after_in_child=audit.after_fork_in_child)
    # The environment the launcher gave us (CAPGATE_AUDIT_FD already removed): a Python
    # program this one starts must carry its start-up variables (see capgate.soft).
    soft.install(gate, proxy=_proxy(), python_env=dict(os.environ))
    audit.event("soft.activated", python=sys.version.split()[0], executable=sys.executable)
    audit.flush()
