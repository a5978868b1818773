"""The ``capgate`` command line. This module only parses; ``capgate.launcher`` does the work.

Exit codes: the child's own for ``run``; 0/1 (allowed/denied) for ``check``; 2 for usage and
policy errors; 125 when the sandbox refuses to start or its supervision fails (as podman and
docker use); 128+N when stopped by signal N.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from capgate.policy.sources import Grants

__all__ = ["build_parser", "console_main", "main"]

_EPILOG_RUN = """\
examples:
  capgate run -- python agent.py
  capgate run --allow-net api.example.com --allow-run git -- python agent.py
  capgate run --workspace ~/proj --policy agent-permissions.json -- python -m mytool
  capgate run --dry-run-policy -- python agent.py      # show the effective policy, run nothing

exit codes:
  N      the command's own exit status
  2      usage or policy error (nothing ran)
  125    the sandbox refused to start, or its supervision failed mid-run
  128+N  the command, or capgate itself, was stopped by signal N: 130 Ctrl-C, 143 SIGTERM,
         137 SIGKILL (the wall-time kill), 152 SIGXCPU (cpuSeconds), 153 SIGXFSZ (maxFileSizeMb)

SOFT_SANDBOX=1|yes|true in the environment forces the soft backend (a seat belt, not isolation);
with another explicit --backend that is a usage error (2). 0|no|false or unset: --backend decides.
"""

_EPILOG_CHECK = """\
examples:
  capgate check fs.read ~/.ssh/id_rsa
  capgate check net.connect https://api.example.com/v1
  capgate check proc.exec git status          # a whole command line, decided as proc.run would
  capgate check proc.exec -- sh -c 'ls'       # (after --, when it holds options)

exit codes: 0 allowed, 1 denied, 2 usage or policy error.
"""

_EPILOG_POLICY = """\
examples:
  capgate policy validate                      # check ./agent-permissions.json and the user-level file
  capgate policy show > effective.json         # the effective policy, in the policy file's format
  capgate policy show --internal               # the compiled form the sandbox is handed
  capgate policy import --from srt ~/.srt-settings.json -o ~/.config/capgate/permissions.json

exit codes: 0 valid, 2 usage or policy error.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions to the width; keeps the epilogs' own line breaks."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _HelpFormatter(prog, max_help_position=30, width=min(100, _columns()))


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def build_parser() -> argparse.ArgumentParser:
    from capgate import __version__

    parser = _Parser(prog="capgate", formatter_class=_formatter,
                     description="Run an AI agent with every file, network and process action going through one "
                                 "capability gate (deny by default).",
                     epilog="docs: docs/cli.md (the command line), docs/policy.md (the policy file)")
    parser.add_argument("--version", action="version", version=f"capgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run a command inside the sandbox", epilog=_EPILOG_RUN,
                         formatter_class=_formatter,
                         description="Load and merge the policy, pick a backend, run CMD under the gate, "
                                     "print a denial summary and write an audit log.")
    _policy_args(run)
    run.add_argument("--backend", choices=("auto", "container", "namespace", "soft"), default="auto",
                     help="sandbox backend (default auto: namespace where user namespaces work, else soft)")
    run.add_argument("--dry-run-policy", action="store_true",
                     help="print the effective policy (in the policy file's format) and run nothing")
    run.add_argument("--internal", action="store_true",
                     help="with --dry-run-policy: print the compiled policy the sandbox is handed instead")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print only warnings (the soft backend's seat-belt line is always printed)")
    run.add_argument("--dev", action="store_true",
                     help="also allow reading toolchain paths (/usr/lib, /usr/include, /opt, ...) for debugging")
    run.add_argument("--audit-log", metavar="PATH",
                     help="where to write the JSON-lines audit log (default "
                          "$XDG_STATE_HOME/capgate/audit/run-<time>-<pid>.jsonl); must be outside write roots")
    run.add_argument("--audit-allowed", choices=("on", "off"), default="on",
                     help="off: leave allowed decisions out of the audit log (denials are always logged)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")

    pol = sub.add_parser("policy", help="validate, show or import a policy", epilog=_EPILOG_POLICY,
                         formatter_class=_formatter,
                         description="validate: load every policy source, say what widened the defaults and "
                                     "warn about entries that can never take effect. show: print the effective "
                                     "policy in the policy file's own format. import: convert another "
                                     "sandbox's settings (--from srt FILE) to a policy file, saying on stderr "
                                     "what it cannot express.")
    pol.add_argument("action", choices=("validate", "show", "import"), help="validate, show or import")
    pol.add_argument("file", metavar="FILE", nargs="?", help="import: the settings file to convert")
    pol.add_argument("--internal", action="store_true",
                     help="show: print the compiled policy (the form the sandbox is handed) instead")
    pol.add_argument("--from", dest="import_from", choices=("srt",),
                     help="import: the settings' format (srt: Anthropic sandbox-runtime, ~/.srt-settings.json)")
    pol.add_argument("--output", "-o", metavar="FILE", help="import: write the policy here (default stdout)")
    pol.add_argument("--force", action="store_true", help="import: overwrite an existing --output file")
    _policy_args(pol)

    chk = sub.add_parser("check", help="ask the gate about one operation and print the decision and rule",
                         epilog=_EPILOG_CHECK, formatter_class=_formatter,
                         description="Decide one operation under the effective policy, without doing it.")
    chk.add_argument("op", metavar="OP", help="fs.read, fs.write, fs.delete, net.connect or proc.exec")
    chk.add_argument("target", metavar="TARGET", nargs="+",
                     help="a path, host:port or URL; for proc.exec a command, or a whole command line")
    chk.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    _policy_args(chk)

    mcp = sub.add_parser("mcp", help="serve the gated agent tools over the Model Context Protocol (stdio)",
                         description="An MCP server on stdio (needs capgate[mcp]) serving read_file, write_file, "
                                     "list_dir, fetch and run_command, each decided by the gate; denials are tool "
                                     "results with isError. Banner on stderr; every decision in the audit log.")
    _policy_args(mcp)
    mcp.add_argument("--audit-log", metavar="PATH",
                     help="where to write the JSON-lines audit log (default "
                          "$XDG_STATE_HOME/capgate/audit/mcp-<time>-<pid>.jsonl); must be outside write roots")

    init = sub.add_parser("init", help="write an agent-permissions.json template (the built-in defaults)",
                          formatter_class=_formatter,
                          description="Write the built-in defaults as a policy file to narrow (a workspace file "
                                      "may only narrow; widen in ~/.config/capgate/permissions.json or with "
                                      "the --allow-* grants).")
    init.add_argument("--output", "-o", metavar="FILE", help="where to write it (default ./agent-permissions.json)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    doc = sub.add_parser("doctor", help="report what this machine offers the sandbox and which backend auto picks",
                         formatter_class=_formatter,
                         description="The container runtimes and their versions (warning below the tested "
                                     "minimum), whether a daemon answers, user namespaces (and why not), the "
                                     "Landlock ABI, openat2, the cgroup layout with the pids and memory "
                                     "controllers, the Python, and the backend auto picks and why. Changes nothing.")
    doc.add_argument("--json", action="store_true", help="print the report as one JSON object")

    aud = sub.add_parser("audit", help="summarize a run's audit log (default: the last run)",
                         formatter_class=_formatter,
                         description="Denials by operation and target, limits that fired, the exit status and "
                                     "the duration of one run, from its JSON-lines audit log.")
    aud.add_argument("file", metavar="FILE", nargs="?", help="an audit log (default: the newest under "
                     "$XDG_STATE_HOME/capgate/audit)")
    aud.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def _policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", metavar="DIR", help="workspace root (default: the current directory)")
    parser.add_argument("--policy", metavar="FILE",
                        help="policy file (default: <workspace>/agent-permissions.json if present, else defaults)")
    parser.add_argument("--allow-user-expansion", action="store_true",
                        help="let the workspace policy file add permissions beyond the defaults (deny still wins)")
    grants = parser.add_argument_group(
        "grants", "widen the defaults from the command line (trusted: you typed them; repeatable). The "
        "user-level file $XDG_CONFIG_HOME/capgate/permissions.json (~/.config/capgate/permissions.json) is "
        "the other trusted place; a workspace policy file may then only narrow.")
    grants.add_argument("--allow-read", action="append", default=[], metavar="PATH",
                        help="also allow reading beneath PATH (relative to the current directory)")
    grants.add_argument("--allow-write", action="append", default=[], metavar="PATH",
                        help="also allow writing beneath PATH (relative to the current directory)")
    grants.add_argument("--allow-net", action="append", default=[], metavar="HOST[:PORT]",
                        help="allow connecting to HOST (a name, *.name, or an IP/CIDR); turns the network on")
    grants.add_argument("--allow-run", action="append", default=[], metavar="CMD",
                        help="allow running CMD (a name on the sanitized PATH, or an absolute path)")
    grants.add_argument("--allow-env", action="append", default=[], metavar="NAME",
                        help="pass the environment variable NAME through to the child")
    grants.add_argument("--offline", action="store_true",
                        help="force the network off, whatever a policy file or grant says")


def _grants(args: argparse.Namespace) -> Grants:
    """The grants as the policy needs them: paths made absolute against the current directory
    (a path typed on the command line means what the shell's completion showed)."""
    from capgate.policy.sources import Grants

    return Grants(read=tuple(os.path.abspath(p) for p in args.allow_read),
                  write=tuple(os.path.abspath(p) for p in args.allow_write),
                  net=tuple(args.allow_net), run=tuple(args.allow_run), env=tuple(args.allow_env),
                  offline=args.offline)


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = subparsers.choices[name]
    return found


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an unknown option is reported with the usage of the subcommand it was given to
    (argparse reports it from the top-level parser otherwise)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "policy" and args.file is None and extra[:1] and not extra[0].startswith("-"):
        # (argparse fills the positionals before the options: ``import --from srt FILE`` leaves FILE over)
        args.file, extra = extra[0], extra[1:]
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        hint = ("; a command line with options goes after --: capgate check proc.exec -- CMD ARGS..."
                if args.command == "check" else "")
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from capgate import launcher

    if args.command == "run":
        cmd = list(args.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        options = launcher.RunOptions(
            command=tuple(cmd), workspace=args.workspace, policy=args.policy,
            allow_user_expansion=args.allow_user_expansion, backend=args.backend,
            dry_run_policy=args.dry_run_policy, dev=args.dev, audit_log=args.audit_log,
            grants=_grants(args), quiet=args.quiet, internal=args.internal,
            audit_allowed=args.audit_allowed == "on",
        )
        return launcher.run(options)
    if args.command == "policy" and args.action == "import":
        if not args.import_from or not args.file:
            _subparser("policy").error("policy import needs --from srt and the settings FILE")
        return launcher.import_command(args.import_from, args.file, output=args.output, force=args.force,
                                       workspace=args.workspace)
    if args.command == "policy":
        if args.file or args.import_from or args.output or args.force:
            _subparser("policy").error("FILE, --from, --output and --force are for policy import")
        return launcher.policy_command(args.action, policy=args.policy, workspace=args.workspace,
                                       allow_user_expansion=args.allow_user_expansion, grants=_grants(args),
                                       internal=args.internal)
    if args.command == "check":
        return launcher.check_command(args.op, args.target, policy=args.policy, workspace=args.workspace,
                                      allow_user_expansion=args.allow_user_expansion, grants=_grants(args),
                                      as_json=args.json)
    if args.command == "audit":
        from capgate import audit_summary

        return audit_summary.audit_command(args.file, as_json=args.json)
    if args.command == "doctor":
        from capgate import doctor

        return doctor.doctor_command(as_json=args.json)
    if args.command == "mcp":
        import importlib

        # capgate.wrappers is mapped from the repository's wrappers/ folder (see pyproject.toml).
        server = importlib.import_module("capgate.wrappers.mcp")
        code: int = server.main(workspace=args.workspace, policy=args.policy,
                                allow_user_expansion=args.allow_user_expansion, audit_log=args.audit_log,
                                grants=_grants(args))
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
