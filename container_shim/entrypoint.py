"""The first program inside a capgate container: wire up, confine, then become the agent.

The runtime has built the container's view (the launcher's mounts of the policy) and runs
this as the container's entrypoint, from the image's ``/opt/capgate/shim`` (run as
``python -I -S entrypoint.py PLAN [--audit FIFO] [--forward PORT SOCKET] [--rlimit-as BYTES]
-- COMMAND...``;
standard library and the sibling ``landlock``, ``ns_exec`` and ``forwarder`` modules only, ~10 ms):

1. ``--audit FIFO``: opens the launcher's audit FIFO (bind-mounted from the run directory)
   for writing and hands the descriptor to the child as ``CAPGATE_AUDIT_FD``: the inner
   gate's decisions (the Python child's, reported by ``capgate._soft_boot``) reach the
   launcher's audit log outside, while the agent's stdout and stderr stay its own.
2. ``--forward PORT SOCKET``: forks the egress forwarder (``forwarder.py``), which offers the
   launcher's proxy socket on ``127.0.0.1:PORT`` (the container has no other network).
3. Resolves the command on the container's ``PATH`` (the image's programs, not the host's)
   and, when the Landlock ``PLAN`` restricts execution (``allowShell: false``), adds exactly
   that program and its loader or ``#!`` interpreter to it; applies the plan.
4. ``--rlimit-as BYTES``: sets ``RLIMIT_AS`` (rootless podman, where the memory cgroup may
   not apply). Then sets ``AGENT_IN_SANDBOX=1`` (a launcher inside refuses to nest) and reports
   ``container.started`` on the audit FIFO, then ``execve``s the command; a Python command
   gets the gate through the image's boot directory (``PYTHONPATH``, set by the launcher).

Any failure before the exec is exit 125 with one line on stderr: nothing runs unconfined.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # (not typing's: ~5 ms of the shim's start-up)
if TYPE_CHECKING:
    from typing import Any


def _die(message: str) -> None:
    os.write(2, f"capgate: container sandbox: {message}\n".encode())
    os._exit(125)


def _resolve(name: str, path: str) -> str:
    if "/" in name:
        return name
    for directory in path.split(":"):
        if not directory.startswith("/"):
            continue
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    _die(f"{name}: command not found in the image (PATH={path})")
    raise AssertionError  # (unreachable)


def _restrict(landlock: Any, plan: Any) -> int:
    """Put this process under ``plan``; 0, else an errno. Through ``ns_exec._apply`` (the
    namespace backend's ``_ctypes`` path, the same system calls: ``ctypes`` is not imported,
    ~2 ms of every container's start), ``landlock.Ruleset`` where ``_ctypes`` lacks it."""
    try:
        import ns_exec  # type: ignore[import-not-found]  # the sibling stdlib-only module

        return int(ns_exec._apply(plan.encode()))
    except (ImportError, AttributeError, TypeError):
        return int(landlock.Ruleset(plan).restrict_self())


def _parse(argv: list[str]) -> tuple[str, str | None, tuple[int, str] | None, int | None, list[str]]:
    if "--" not in argv or len(argv) < 3:
        _die("usage: entrypoint.py PLAN [--audit FIFO] [--forward PORT SOCKET] [--rlimit-as BYTES] -- COMMAND...")
    split = argv.index("--")
    head, command = argv[1:split], argv[split + 1 :]
    if not command:
        _die("no command")
    plan, audit, forward, address_space = head[0], None, None, None
    rest = head[1:]
    while rest:
        if rest[0] == "--audit" and len(rest) >= 2:
            audit, rest = rest[1], rest[2:]
        elif rest[0] == "--rlimit-as" and len(rest) >= 2 and rest[1].isdigit():
            address_space, rest = int(rest[1]), rest[2:]
        elif rest[0] == "--forward" and len(rest) >= 3 and rest[1].isdigit():
            forward, rest = (int(rest[1]), rest[2]), rest[3:]
        else:
            _die(f"unexpected arguments {rest!r}")
    return plan, audit, forward, address_space, command


def main(argv: list[str]) -> None:
    plan_text, audit, forward, address_space, command = _parse(argv)
    env = dict(os.environ)
    env["AGENT_IN_SANDBOX"] = "1"
    fd = -1
    if audit is not None:
        try:
            fd = os.open(audit, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            _die(f"cannot open the launcher's audit pipe {audit}: {exc.strerror or exc}")
        os.set_inheritable(fd, True)
        env["CAPGATE_AUDIT_FD"] = str(fd)
    else:
        env.pop("CAPGATE_AUDIT_FD", None)
    if forward is not None:
        from forwarder import start_forwarder  # type: ignore[import-not-found]  # sibling module

        try:
            start_forwarder(forward[0], forward[1])
        except OSError as exc:
            _die(f"cannot start the egress forwarder: {exc.strerror or exc}")
    program = _resolve(command[0], env.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
    if address_space is not None:
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        except (OSError, ValueError) as exc:
            _die(f"cannot set the memory limit: {exc}")
    if plan_text != "-":
        import landlock  # type: ignore[import-not-found]  # the sibling stdlib-only module

        try:
            plan = landlock.Plan.decode(plan_text)
            if plan.restricts_exec:
                # The launcher could not see the image: the command it names is resolved here.
                real = os.path.realpath(program)
                extra = [(p, (landlock.EXECUTE | landlock.READ_FILE) & plan.handled)
                         for p in (real, *landlock.exec_dependencies(real))]
            else:
                extra = []
            if plan.restricts_read:  # the image's own capgate (its boot directory, this shim)
                own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                extra.append((own, landlock.READ & plan.handled))
            if extra:
                plan = landlock.Plan(plan.handled, (*plan.rules, *extra), plan.net_handled, plan.ports, plan.scoped)
            failed = _restrict(landlock, plan)
        except (OSError, ValueError) as exc:
            _die(f"cannot apply the Landlock plan: {exc}")
        if failed:
            _die(f"cannot apply the Landlock plan: {os.strerror(failed)}")
    if fd >= 0:
        try:
            os.write(fd, b'{"event":"container.started","pid":%d}\n' % os.getpid())
        except OSError:
            pass
    try:
        os.execve(program, command, env)  # noqa: S606 (the agent command, decided by the launcher)
    except OSError as exc:
        _die(f"cannot run {program}: {exc.strerror or exc}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv)
