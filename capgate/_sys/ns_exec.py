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
``landlock.Plan.encode()`` string, or ``-`` for none). Standard library and the sibling
``landlock`` module only: it starts in ~10 ms.
"""

from __future__ import annotations

import os
import sys


def _die(message: str) -> None:
    os.write(2, f"capgate: namespace sandbox: {message}\n".encode())
    os._exit(125)


def _report_started() -> None:
    """Tell the launcher the view came up (one event line on the child's audit pipe): without
    it, a non-zero exit is bubblewrap's refusal to build the view, not the child's status."""
    fd = os.environ.get("CAPGATE_AUDIT_FD", "")
    if fd.isdigit():
        try:
            os.write(int(fd), b'{"event":"namespace.started","pid":%d}\n' % os.getpid())
        except OSError:
            pass


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
    if plan_text != "-":
        import landlock  # type: ignore[import-not-found]  # the sibling stdlib-only module

        try:
            plan = landlock.Plan.decode(plan_text)
            ruleset = landlock.Ruleset(plan)
            failed = ruleset.restrict_self()
        except (OSError, ValueError) as exc:
            _die(f"cannot apply the Landlock plan: {exc}")
        if failed:
            _die(f"cannot apply the Landlock plan: {os.strerror(failed)}")
        if plan.restricts_write:
            # The hooks of a Python child may rely on it (capgate._sys.frozen_dirs.CONFINED_ENV):
            # said only now that the plan is in force for this process and all it starts.
            os.environ["CAPGATE_LANDLOCK"] = "writes"
    _report_started()
    try:
        os.execv(command[0], command)  # noqa: S606 (the agent command, already decided by the launcher)
    except OSError as exc:
        _die(f"cannot run {command[0]}: {exc.strerror or exc}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv)
