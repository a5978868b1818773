"""The first program inside the namespace backend's view: confine, then become the agent.

bubblewrap builds the view (mounts need a process Landlock does not yet restrict: a
Landlock domain may not mount), then runs this; it puts itself under the run's Landlock plan
(the same plan as the soft backend: writes, reads, TCP connects, signals and, with
``allowShell: false``, execs) and ``execve``s the command, so the whole tree is under both the
view and the plan. With the network on, it first forks the egress forwarder (``--forward``):
the view's network namespace holds only loopback, so the launcher's proxy is reached through
its Unix socket, bound into the view, and offered on the loopback port the child's
``HTTP_PROXY`` names.

Run as ``python -I -S ns_exec.py PLAN [--forward PORT SOCKET] -- COMMAND...`` (``PLAN``: a
``landlock.Plan.encode()`` string, or ``-`` for none).

It is on every namespace run's start-up path, so it imports as little as it can: ``posix``
(built in) instead of ``os``, and the plan is applied through ``_ctypes`` directly
(``_apply``: ~3 ms less than ``import os, ctypes``), the same system calls with the same
arguments as ``landlock.Ruleset``, which stays the reference and the fallback should
``_ctypes`` lack what this needs.
"""

from __future__ import annotations

import posix
import sys

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38
_WRITE_FILE = 1 << 1  # landlock.WRITE_FILE: the plan restricts writes
_CONNECT_TCP = 1 << 1  # landlock.CONNECT_TCP
_O_PATH = 0o10000000
_O_CLOEXEC = 0o2000000


def _die(message: str) -> None:
    posix.write(2, f"capgate: namespace sandbox: {message}\n".encode())
    posix._exit(125)


def _report_started() -> None:
    """Tell the launcher the view came up (one event line on the child's audit pipe): without
    it, a non-zero exit is bubblewrap's refusal to build the view, not the child's status."""
    fd = posix.environ.get(b"CAPGATE_AUDIT_FD", b"")
    if fd.isdigit():
        try:
            posix.write(int(fd), b'{"event":"namespace.started","pid":%d}\n' % posix.getpid())
        except OSError:
            pass


def _decode(plan_text: str) -> tuple[int, int, int, list[int], list[tuple[bytes, int]]]:
    """``landlock.Plan.decode``, on bytes: (handled, net_handled, scoped, ports, rules)."""
    head, *fields = bytes.fromhex(plan_text).split(b"\0")
    handled, net_handled, scoped, ports = head.split(b",")
    rules = []
    for field in fields:
        rights, _, path = field.partition(b":")
        rules.append((path, int(rights)))
    return int(handled), int(net_handled), int(scoped), [int(p) for p in ports.split(b"/") if p], rules


def _apply(plan_text: str) -> int:
    """Put this process under the plan; 0 on success, else an errno (``landlock.Ruleset``
    built and ``restrict_self``-ed, without ``ctypes``' Python layer)."""
    import _ctypes

    class Long(_ctypes._SimpleCData):  # type: ignore[type-arg]  # what ctypes.c_long is
        _type_ = "l"

    class Libc:
        _handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]  # RTLD_NOW: this process's libc

    class Function(_ctypes.CFuncPtr):  # what ctypes.CDLL(None, use_errno=True).<name> is
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Long

    syscall = Function(("syscall", Libc()))  # type: ignore[arg-type]  # (anything with a _handle)
    prctl = Function(("prctl", Libc()))  # type: ignore[arg-type]
    handled, net_handled, scoped, ports, rules = _decode(plan_text)
    order = sys.byteorder
    if scoped:  # struct landlock_ruleset_attr grew with the ABI: send the smallest that fits
        attr = handled.to_bytes(8, order) + net_handled.to_bytes(8, order) + scoped.to_bytes(8, order)
    elif net_handled:
        attr = handled.to_bytes(8, order) + net_handled.to_bytes(8, order)
    else:
        attr = handled.to_bytes(8, order)
    ruleset = syscall(Long(_SYS_CREATE_RULESET), attr, Long(len(attr)), Long(0))
    if ruleset < 0:
        return _ctypes.get_errno() or 1
    for path, rights in rules:
        try:
            target = posix.open(path, _O_PATH | _O_CLOEXEC)
        except OSError:
            continue  # gone since the plan was made: nothing to allow there
        rule = rights.to_bytes(8, order) + target.to_bytes(4, order, signed=True)  # (packed: "=Qi")
        failed = syscall(Long(_SYS_ADD_RULE), Long(ruleset), Long(_RULE_PATH_BENEATH), rule, Long(0)) < 0
        posix.close(target)
        if failed:
            return _ctypes.get_errno() or 1
    for port in ports:
        rule = _CONNECT_TCP.to_bytes(8, order) + port.to_bytes(8, order)
        if syscall(Long(_SYS_ADD_RULE), Long(ruleset), Long(_RULE_NET_PORT), rule, Long(0)) < 0:
            return _ctypes.get_errno() or 1
    if prctl(Long(_PR_SET_NO_NEW_PRIVS), Long(1), Long(0), Long(0), Long(0)) != 0:
        return _ctypes.get_errno() or 1
    if syscall(Long(_SYS_RESTRICT_SELF), Long(ruleset), Long(0)) != 0:
        return _ctypes.get_errno() or 1
    posix.close(ruleset)
    return 0


def _apply_with_landlock_module(plan_text: str) -> int:
    import landlock  # type: ignore[import-not-found]  # the sibling stdlib-only module

    ruleset = landlock.Ruleset(landlock.Plan.decode(plan_text))
    return int(ruleset.restrict_self())


def _confine(plan_text: str) -> bool:
    """Apply the plan or die; whether it restricts writes."""
    try:
        try:
            failed = _apply(plan_text)
        except (ImportError, AttributeError, TypeError):  # a _ctypes without what _apply uses
            failed = _apply_with_landlock_module(plan_text)
    except (OSError, ValueError) as exc:
        _die(f"cannot apply the Landlock plan: {exc}")
    if failed:
        _die(f"cannot apply the Landlock plan: {posix.strerror(failed)}")
    return bool(_decode(plan_text)[0] & _WRITE_FILE)


def main(argv: list[str]) -> None:
    if "--" not in argv or len(argv) < 3:
        _die("usage: ns_exec.py PLAN [--forward PORT SOCKET] -- COMMAND...")
    split = argv.index("--")
    head, command = argv[1:split], argv[split + 1 :]
    if not command:
        _die("no command")
    plan_text = head[0]
    if len(head) == 4 and head[1] == "--forward":
        from forwarder import start_forwarder  # type: ignore[import-not-found]  # sibling module

        start_forwarder(int(head[2]), head[3])
    elif len(head) != 1:
        _die(f"unexpected arguments {head[1:]!r}")
    env = dict(posix.environ)
    if plan_text != "-" and _confine(plan_text):
        # The hooks of a Python child may rely on it (capgate._sys.frozen_dirs.CONFINED_ENV):
        # said only now that the plan is in force for this process and all it starts.
        env[b"CAPGATE_LANDLOCK"] = b"writes"
    _report_started()
    try:
        posix.execve(command[0], command, env)  # (the agent command, already decided by the launcher)
    except OSError as exc:
        _die(f"cannot run {command[0]}: {exc.strerror or exc}")


if __name__ == "__main__":
    sys.path.insert(0, __file__.rpartition("/")[0] or ".")
    main(sys.argv)
