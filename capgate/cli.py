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

_EPILOG_EXPORT = """\
examples:
  capgate export kubernetes --image registry.example/capgate:1 -o k8s/ -- python agent.py
  capgate export kubernetes --image IMG --allow-net api.example.com --egress proxy -o - -- python agent.py
  capgate export kubernetes --image IMG --target agent-sandbox --runtime-class gvisor -o k8s/ -- python serve.py

exit codes: 0 written, 2 usage or policy error (also: a policy the chosen --egress cannot enforce).
"""

_EPILOG_POLICY = """\
examples:
  capgate policy validate                      # check ./agent-permissions.json and the user-level file
  capgate policy show > effective.json         # the effective policy, in the policy file's format
  capgate policy show --internal               # the compiled form the sandbox is handed
  capgate policy import --from srt ~/.srt-settings.json -o ~/.config/capgate/permissions.json

exit codes: 0 valid, 2 usage or policy error.
"""


_EPILOG_STAGED = """\
examples:
  capgate run --staged -- python agent.py     # the agent edits; nothing lands yet
  capgate changes --diff                      # review the last staged run of this workspace
  capgate apply                               # land it (or: capgate apply RUN_ID src/)
  capgate discard                             # drop it

exit codes: 0 done; 1 apply refused or failed (each path named); 2 no such run or usage error;
125 inside a sandbox (the agent does not apply its own changes).
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
                     help="sandbox backend (default auto: container when a runtime answers and the image is "
                          "built, else namespace where user namespaces work, else soft)")
    run.add_argument("--runtime", choices=("podman", "docker"), default=None,
                     help="container backend: the runtime (default: podman, else docker)")
    run.add_argument("--image", metavar="IMAGE", default=None,
                     help="container backend: the image (default: the one `capgate image build` makes)")
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
    run.add_argument("--upstream-ca", action="append", default=[], metavar="FILE",
                     help="also trust these CA certificates (PEM) for the proxy's TLS to inspected hosts "
                          "(private endpoints, tests); the system's store stays trusted")
    run.add_argument("--audit-allowed", choices=("on", "off"), default="on",
                     help="off: leave allowed decisions out of the audit log (denials are always logged)")
    run.add_argument("--staged", action="store_true",
                     help="stage every change to the workspace (namespace backend): nothing lands until "
                          "capgate apply")
    run.add_argument("--on-exit", choices=("keep", "apply", "discard"), default="keep",
                     help="with --staged, at the end: keep the changes for review (default), apply them (only "
                          "after a clean exit 0), or discard them")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")

    img = sub.add_parser("image", help="build the container backend's default image (no registry needed)",
                         formatter_class=_formatter,
                         description="Build the default local image for --backend container from this host's "
                                     "Python and capgate (podman import / docker import of a tar: no registry).")
    img.add_argument("action", choices=("build",), help="build: make the image (and print its name)")
    img.add_argument("--runtime", choices=("podman", "docker"), default="podman",
                     help="the container runtime to build it for (default podman)")

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

    prx = sub.add_parser("proxy", help="serve the egress proxy on its own (for a proxy pod)",
                         formatter_class=_formatter,
                         description="The egress proxy with the policy's network rules, serving until SIGTERM. "
                                     "--listen on a non-loopback address is for a proxy in its own pod "
                                     "(capgate export kubernetes --egress proxy).")
    _policy_args(prx)
    prx.add_argument("--listen", metavar="ADDR:PORT", default="127.0.0.1:3128",
                     help="where to listen (default 127.0.0.1:3128; 0.0.0.0:3128 for a pod, given explicitly)")
    prx.add_argument("--audit-log", metavar="PATH", help="audit log (default: standard error)")

    export = sub.add_parser("export", help="export the effective policy as another system's objects",
                            formatter_class=_formatter, epilog=_EPILOG_EXPORT,
                            description="Export the effective policy as another system's own objects.")
    formats = export.add_subparsers(dest="format", metavar="FORMAT", parser_class=_Parser)
    formats.required = True
    exp = formats.add_parser("kubernetes", help="Kubernetes objects and ENFORCEMENT.md", epilog=_EPILOG_EXPORT,
                             formatter_class=_formatter,
                             description="The effective policy as Kubernetes objects (a Job or an agent-sandbox "
                                         "SandboxTemplate, the policy's ConfigMap, NetworkPolicies) and "
                                         "ENFORCEMENT.md, saying who enforces each policy key.")
    exp.add_argument("--image", metavar="IMAGE", required=True, help="the image (capgate installed, on PATH)")
    exp.add_argument("--target", choices=("job", "agent-sandbox"), default="job", help="default job")
    exp.add_argument("--egress", choices=("none", "proxy", "cilium"), default="none",
                     help="none: no egress (a policy that allows any is refused); proxy: a capgate proxy "
                          "Deployment; cilium: a CiliumNetworkPolicy with toFQDNs")
    exp.add_argument("--runtime-class", metavar="NAME", help="runtimeClassName (gvisor, kata, ...)")
    exp.add_argument("--name", default="capgate-run", help="base name of the objects (DNS-1123 label)")
    exp.add_argument("--namespace", metavar="NS", help="metadata.namespace of every object")
    exp.add_argument("--workspace-claim", metavar="PVC",
                     help="mount this PersistentVolumeClaim as the workspace (default: an emptyDir)")
    exp.add_argument("--proxy-address", metavar="IP",
                     help="with --egress proxy: the proxy Service's fixed cluster IP; the run gets no DNS egress")
    exp.add_argument("--cpus", default="1", help="resources.limits.cpu (default 1)")
    exp.add_argument("--ttl", type=int, default=3600, help="the Job's ttlSecondsAfterFinished (default 3600)")
    exp.add_argument("--warm-pool", type=int, default=1, help="agent-sandbox: SandboxWarmPool replicas")
    exp.add_argument("-o", "--output", default="-", metavar="DIR|-",
                     help="a directory for kubernetes.yaml and ENFORCEMENT.md, or - for the YAML on stdout")
    exp.add_argument("--force", action="store_true", help="overwrite files in the output directory")
    _policy_args(exp)
    exp.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")

    init = sub.add_parser("init", help="write an agent-permissions.json template (the built-in defaults)",
                          formatter_class=_formatter,
                          description="Write the built-in defaults as a policy file to narrow (a workspace file "
                                      "may only narrow; widen in ~/.config/capgate/permissions.json or with "
                                      "the --allow-* grants).")
    init.add_argument("--output", "-o", metavar="FILE", help="where to write it (default ./agent-permissions.json)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    chg = sub.add_parser("changes", help="list the pending changes of a staged run (default: the last one)",
                         formatter_class=_formatter, epilog=_EPILOG_STAGED,
                         description="The changes a staged run (capgate run --staged) made: A added, M modified "
                                     "(content or mode), D deleted, R renamed; path and size. Nothing is applied.")
    chg.add_argument("run_id", metavar="RUN_ID", nargs="?", help="the run (default: the workspace's last staged run)")
    chg.add_argument("--workspace", metavar="DIR", help="workspace root (default: the current directory)")
    chg.add_argument("--diff", action="store_true", help="also print a unified diff of each text file")
    chg.add_argument("--json", action="store_true", help="print the changes as one JSON object")

    app = sub.add_parser("apply", help="apply a staged run's changes to the workspace",
                         formatter_class=_formatter, epilog=_EPILOG_STAGED,
                         description="Re-check every change against the run's policy, refuse conflicts (the real "
                                     "file changed since the run began) unless --force, then write each file "
                                     "atomically, never through a symlink. On any refusal nothing is applied.")
    app.add_argument("words", metavar="[RUN_ID] [PATH...]", nargs="*",
                     help="the run (default: the workspace's last staged run), then the paths to apply (default: all)")
    app.add_argument("--workspace", metavar="DIR", help="workspace root (default: the current directory)")
    app.add_argument("--force", action="store_true",
                     help="apply over conflicts (the policy checks and the no-symlink rule still hold)")

    dis = sub.add_parser("discard", help="remove a staged run's staging (nothing of it lands)",
                         formatter_class=_formatter, epilog=_EPILOG_STAGED)
    dis.add_argument("run_id", metavar="RUN_ID", nargs="?", help="the run (default: the workspace's last staged run)")
    dis.add_argument("--workspace", metavar="DIR", help="workspace root (default: the current directory)")

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
    grants.add_argument("--credential", action="append", default=[], metavar="NAME@HOST[:PORT]/HEADER",
                        help="the egress proxy puts your $NAME into HEADER of HOST's requests; the child's $NAME "
                             "holds only a placeholder (needs capgate[proxy-tls]; docs/credentials.md)")
    grants.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT:ADDR",
                        help="resolve HOST on PORT to ADDR (as curl's); ADDR still passes the address rules")
    grants.add_argument("--offline", action="store_true",
                        help="force the network off, whatever a policy file or grant says")


def _grants(args: argparse.Namespace) -> Grants:
    """The grants as the policy needs them: paths made absolute against the current directory
    (a path typed on the command line means what the shell's completion showed)."""
    from capgate.policy.sources import Grants

    return Grants(read=tuple(os.path.abspath(p) for p in args.allow_read),
                  write=tuple(os.path.abspath(p) for p in args.allow_write),
                  net=tuple(args.allow_net), run=tuple(args.allow_run), env=tuple(args.allow_env),
                  offline=args.offline, credential=tuple(args.credential), resolve=tuple(args.resolve))


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
            audit_allowed=args.audit_allowed == "on", runtime=args.runtime, image=args.image,
            upstream_ca=tuple(os.path.abspath(p) for p in args.upstream_ca),
            staged=args.staged, on_exit=args.on_exit,
        )
        return launcher.run(options)
    if args.command == "image":
        return launcher.image_command(args.runtime)
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
    if args.command in ("changes", "apply", "discard"):
        from capgate.staging import commands

        if args.command == "changes":
            return commands.changes_command(args.run_id, workspace=args.workspace, diff=args.diff, as_json=args.json)
        if args.command == "discard":
            return commands.discard_command(args.run_id, workspace=args.workspace)
        run_id, paths = commands.split_run_id(args.words)
        return commands.apply_command(run_id, paths, workspace=args.workspace, force=args.force)
    if args.command == "audit":
        from capgate import audit_summary

        return audit_summary.audit_command(args.file, as_json=args.json)
    if args.command == "proxy":
        from capgate.proxy_serve import proxy_command

        return proxy_command(args.listen, policy=args.policy, workspace=args.workspace,
                             allow_user_expansion=args.allow_user_expansion, grants=_grants(args),
                             audit_log=args.audit_log)
    if args.command == "export":
        from capgate.export.command import export_command

        cmd = list(args.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        return export_command(args, cmd, grants=_grants(args))
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
