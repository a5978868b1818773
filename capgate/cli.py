"""The ``capgate`` command line. This module only parses; ``capgate.launcher`` does the work.

Exit codes: the child's own for ``run``; 0/1 (allowed/denied) for ``check``; 2 for usage and
policy errors; 125 when the sandbox refuses to start or its supervision fails (as podman and
docker use).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["build_parser", "console_main", "main"]

_EPILOG_RUN = """\
examples:
  capgate run -- python agent.py
  capgate run --workspace ~/proj --policy agent-permissions.json -- python -m mytool
  capgate run --dry-run-policy -- python agent.py      # show the effective policy, run nothing

exit codes: the command's own; 2 usage or policy error; 125 the sandbox refused to start
(or its supervision failed mid-run).
SOFT_SANDBOX=1|yes|true in the environment forces the soft backend (a seat belt, not isolation);
with --backend container that is a usage error (2). 0|no|false or unset: --backend decides.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"capgate: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="capgate", description="Run an AI agent with every file, network and process action "
                     "going through one capability gate (deny by default).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run a command inside the sandbox", epilog=_EPILOG_RUN,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Load and merge the policy, pick a backend, run CMD under the gate, "
                                     "print a denial summary and write an audit log.")
    _policy_args(run)
    run.add_argument("--backend", choices=("auto", "container", "namespace", "soft"), default="auto",
                     help="sandbox backend (default auto: container when available, else soft)")
    run.add_argument("--dry-run-policy", action="store_true",
                     help="print the effective policy, the backend and the expansion status; run nothing")
    run.add_argument("--dev", action="store_true",
                     help="also allow reading toolchain paths (/usr/lib, /usr/include, /opt, ...) for debugging")
    run.add_argument("--audit-log", metavar="PATH",
                     help="where to write the JSON-lines audit log (default "
                          "$XDG_STATE_HOME/capgate/audit/run-<time>-<pid>.jsonl); must be outside write roots")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")

    pol = sub.add_parser("policy", help="validate or show the effective policy")
    pol.add_argument("action", choices=("validate", "show"), help="validate: check and summarize; show: print JSON")
    _policy_args(pol)

    chk = sub.add_parser("check", help="ask the gate about one operation and print the decision and rule",
                         description="Exit status 0 when allowed, 1 when denied, 2 on a usage or policy error.")
    chk.add_argument("op", metavar="OP", help="fs.read, fs.write, fs.delete, net.connect or proc.exec")
    chk.add_argument("target", metavar="TARGET", help="a path, host:port or URL, or a command")
    _policy_args(chk)

    mcp = sub.add_parser("mcp", help="serve the gated agent tools over the Model Context Protocol (stdio)",
                         description="An MCP server on stdio (needs capgate[mcp]) serving read_file, write_file, "
                                     "list_dir, fetch and run_command, each decided by the gate; denials are tool "
                                     "results with isError. Banner on stderr; every decision in the audit log.")
    _policy_args(mcp)
    mcp.add_argument("--audit-log", metavar="PATH",
                     help="where to write the JSON-lines audit log (default "
                          "$XDG_STATE_HOME/capgate/audit/mcp-<time>-<pid>.jsonl); must be outside write roots")

    init = sub.add_parser("init", help="write an agent-permissions.json template (the built-in defaults)")
    init.add_argument("--output", "-o", metavar="FILE", help="where to write it (default ./agent-permissions.json)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def _policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", metavar="DIR", help="workspace root (default: the current directory)")
    parser.add_argument("--policy", metavar="FILE",
                        help="policy file (default: <workspace>/agent-permissions.json if present, else defaults)")
    parser.add_argument("--allow-user-expansion", action="store_true",
                        help="let the policy file add permissions beyond the defaults (deny still wins)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from capgate import launcher

    if args.command == "run":
        cmd = list(args.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        options = launcher.RunOptions(
            command=tuple(cmd), workspace=args.workspace, policy=args.policy,
            allow_user_expansion=args.allow_user_expansion, backend=args.backend,
            dry_run_policy=args.dry_run_policy, dev=args.dev, audit_log=args.audit_log,
        )
        return launcher.run(options)
    if args.command == "policy":
        return launcher.policy_command(args.action, policy=args.policy, workspace=args.workspace,
                                       allow_user_expansion=args.allow_user_expansion)
    if args.command == "check":
        return launcher.check_command(args.op, args.target, policy=args.policy, workspace=args.workspace,
                                      allow_user_expansion=args.allow_user_expansion)
    if args.command == "mcp":
        import importlib

        # capgate.wrappers is mapped from the repository's wrappers/ folder (see pyproject.toml).
        server = importlib.import_module("capgate.wrappers.mcp")
        code: int = server.main(workspace=args.workspace, policy=args.policy,
                                allow_user_expansion=args.allow_user_expansion, audit_log=args.audit_log)
        return code
    return launcher.init_command(args.output, force=args.force)


def console_main() -> NoReturn:
    """The ``capgate`` command (console script and ``python -m capgate``): ``main``, then a
    quick exit.

    Why not ``raise SystemExit``: tearing the interpreter down (module globals, pydantic's
    classes, the spawner's ``Popen``) takes 10-30 ms *after* the child has finished, on every
    ``capgate run``. By the time ``main`` returns, every file it wrote is closed, so the
    process does what a normal exit would still do — flushes the standard streams, runs the
    ``atexit`` handlers (spare cgroups are removed there) — and ends with ``os._exit``.
    When a non-daemon thread is still alive (a thread pool's workers: ``capgate check`` of a
    host name resolves it on one), the normal exit runs instead: only the interpreter knows
    how to stop those. An exception from ``main`` (``SystemExit`` from ``--help`` included)
    takes the normal path too.
    """
    code = main()
    me = threading.current_thread()
    if any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate()):
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 120  # what Python itself exits with when the final flush fails
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
