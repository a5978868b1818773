"""The launcher behind ``capgate run``, ``policy``, ``check`` and ``init`` (``cli.py`` parses).

``run`` (launcher mode, on the host):

1. Refuse inside a sandbox (``AGENT_IN_SANDBOX=1``): no recursion, no second launcher that
   could widen what it was given. Elsewhere inside a sandbox (``policy``, ``check``) the policy
   starts from the effective one in ``CAPGATE_POLICY`` and a user file can only restrict it.
2. Load, validate and merge the policy (``--policy FILE``, else ``<workspace>/agent-permissions.json``
   if present, else the defaults), restrict-only unless ``--allow-user-expansion``.
3. Pick the backend: ``SOFT_SANDBOX`` = ``1``/``yes``/``true`` (any case) forces soft, and
   with an explicit ``--backend`` other than soft is a usage error (exit 2), as is a value
   that is none of those nor ``0``/``no``/``false``/empty; ``auto`` = container if it can
   run, else soft; ``container`` that cannot run refuses (exit 125).
4. Add what the soft sandbox itself needs and say so: runtime *read* roots (the interpreter,
   its stdlib and site-packages, certificates, ``/etc/hosts``…; ``--dev`` adds toolchains),
   and the run's private ``TMPDIR``, sandbox ``HOME`` and ``/dev/null`` as write roots. The
   effective policy file and the audit log become protected files.
5. Print first, on stderr: backend, expansion status, ``SOFT_SANDBOX=true`` (a seat belt, not
   isolation), what the child gets (hooks for Python; process-level controls only otherwise).
6. ``--dry-run-policy``: print the effective policy JSON (redacted, runtime roots marked) and
   exit 0 without running anything.
7. Run, forward the child's decisions into the audit log, print the denial summary, return
   the child's exit code.

Exit codes: the child's own; 2 for usage and policy errors (the message names the key);
``EXIT_SANDBOX_REFUSED`` (125, as podman and docker use) when the sandbox refuses to start —
a backend that cannot run, a recursive launch, a Python command line that would skip the
hooks. A child killed by signal N gives 128+N.

Audit log: ``--audit-log PATH`` or ``$XDG_STATE_HOME/capgate/audit/run-<UTC time>-<pid>.jsonl``
(``~/.local/state`` without XDG_STATE_HOME). It must lie outside every write root; it is a
protected file, written only by the launcher.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from capgate.errors import BackendUnavailable, PermissionDenied, PolicyError, StagingError
from capgate.policy.sources import Grants
from capgate.soft import is_python_command

if TYPE_CHECKING:
    from capgate.audit import AuditLog
    from capgate.policy.model import Policy

__all__ = [
    "EXIT_SANDBOX_REFUSED",
    "EXIT_USAGE",
    "SYSTEM_FILES",
    "RunInterrupted",
    "RunOptions",
    "UsageError",
    "check_command",
    "default_audit_path",
    "init_command",
    "is_python_command",
    "policy_command",
    "run",
    "runtime_read_roots",
    "soft_sandbox_forced",
    "system_files",
    "system_read_roots",
]

EXIT_USAGE = 2
EXIT_SANDBOX_REFUSED = 125

_DEV_ROOTS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/lib", "/usr/lib64", "/lib", "/lib64",
              "/usr/libexec", "/usr/local", "/usr/include", "/usr/share", "/opt")
# Reviewed system files every toolchain reads, holding no secret: read by both layers (the
# hooks' runtime read roots and Landlock), for every child. A file is only added when it is
# world-readable (an administrator who made one private, e.g. a pip.conf with an index token,
# keeps it private); a missing one is still listed, so that probing for it (``distro`` tries
# every distribution's release file) fails with ENOENT, as under Landlock, not as a denial.
# Never here: /etc/shadow, gshadow, sudoers, ssh/, ssl/private, pki/*/private, machine-id.
SYSTEM_FILES: tuple[str, ...] = (
    # what the system is (platform, distro, pip's user agent)
    "/etc/os-release", "/usr/lib/os-release", "/etc/lsb-release", "/etc/debian_version", "/etc/system-release",
    "/etc/alpine-release", "/etc/SuSE-release", "/etc/altlinux-release", "/etc/arch-release",
    "/etc/base-release", "/etc/centos-release", "/etc/fedora-release", "/etc/gentoo-release",
    "/etc/mageia-release", "/etc/mandrake-release", "/etc/mandriva-release", "/etc/mandrivalinux-release",
    "/etc/manjaro-release", "/etc/oracle-release", "/etc/redhat-release", "/etc/rocky-release",
    "/etc/sl-release", "/etc/slackware-version",
    # host, name service, time, locale-independent tables
    "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf",
    "/etc/services", "/etc/protocols", "/etc/localtime", "/etc/timezone", "/usr/share/zoneinfo",
    "/etc/mime.types", "/etc/apache2/mime.types", "/etc/httpd/mime.types", "/etc/ld.so.cache", "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    # pip's system-wide configuration (and what it names: constraints files live beside it)
    "/etc/pip.conf", "/etc/xdg/pip",
    # certificates (public) and the OpenSSL configuration, never the private key directories
    "/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/ca-certificates.conf",
    "/usr/share/ca-certificates", "/etc/pki/tls/certs", "/etc/pki/tls/cert.pem", "/etc/pki/tls/openssl.cnf",
    "/etc/pki/ca-trust",
)
_DEVICES_READ = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


# Directories of SYSTEM_FILES not looked into file by file (large, and public by what they
# are): package-managed trees under /usr and the certificate stores (their private keys live
# in ssl/private and pki/*/private, which are never listed).
_PUBLIC_TREES = ("/usr/", "/etc/ssl/certs", "/etc/pki/ca-trust", "/etc/pki/tls/certs", "/etc/ca-certificates")


def system_files() -> tuple[str, ...]:
    """``SYSTEM_FILES`` as canonical paths, without the existing ones other users cannot read.
    A directory holding a private file (``/etc/xdg/pip/pip.conf`` mode 0600) is replaced by its
    world-readable files, listed one by one (not looked into: the large, package-managed
    trees in ``_PUBLIC_TREES``)."""
    out: list[str] = []
    for path in SYSTEM_FILES:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append(path)  # (a probe for it gets ENOENT, from both layers)
            continue
        except OSError:
            continue
        if not st.st_mode & 0o004:
            continue
        real = os.path.realpath(path)
        readable = [real]
        if stat.S_ISDIR(st.st_mode) and not real.startswith(_PUBLIC_TREES):
            readable = _world_readable_files(real)
        out += [r for r in readable if r not in out]
    return tuple(out)


def _world_readable_files(directory: str) -> list[str]:
    """``[directory]`` when everything beneath it is world-readable, else the files that are
    (what an administrator made private stays private)."""
    found: list[str] = []
    private = False
    for top, dirs, files in os.walk(directory):
        for name in files + dirs:
            path = os.path.join(top, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not st.st_mode & 0o004:
                private = True
                if name in dirs:
                    dirs.remove(name)
            elif stat.S_ISREG(st.st_mode):
                found.append(os.path.realpath(path))
    return found if private else [directory]


class SandboxRefused(Exception):
    """The sandbox will not start (exit 125)."""


@dataclass(frozen=True)
class RunOptions:
    """What ``capgate run`` was asked to do (the parsed command line)."""

    command: tuple[str, ...]
    workspace: str | None = None
    policy: str | None = None
    allow_user_expansion: bool = False
    backend: str = "auto"
    dry_run_policy: bool = False
    dev: bool = False
    audit_log: str | None = None
    grants: Grants = field(default_factory=Grants)
    quiet: bool = False
    internal: bool = False  # --dry-run-policy prints the compiled policy, not the file format
    audit_allowed: bool = True  # False: allowed decisions are left out of the audit log
    runtime: str | None = None  # container backend: podman or docker (None: podman, else docker)
    image: str | None = None  # container backend: the image (None: the one `capgate image build` makes)
    upstream_ca: tuple[str, ...] = ()  # extra roots for the proxy's TLS to inspected hosts
    staged: bool = False  # --staged: every change to the workspace lands in a staging layer
    on_exit: str = "keep"  # --on-exit keep|apply|discard (staged runs)


# ---------------------------------------------------------------------------------------
# policy helpers shared by run / policy / check
# ---------------------------------------------------------------------------------------
def _in_sandbox(environ: Mapping[str, str]) -> bool:
    return environ.get("AGENT_IN_SANDBOX") == "1"


def _policy_file(policy: str | None, workspace: str) -> str | None:
    if policy is not None:
        return policy
    from capgate.policy.defaults import POLICY_FILE_NAME

    candidate = os.path.join(workspace, POLICY_FILE_NAME)
    return candidate if os.path.isfile(candidate) else None


def _load(policy_path: str | None, workspace: str | None, allow_user_expansion: bool,
          environ: Mapping[str, str], protected: Sequence[str] = (), grants: Grants | None = None) -> Policy:
    """The effective policy, from every source in the design's order: defaults, the user-level
    file (when it exists), the command-line grants, the workspace file (or ``--policy``)."""
    from capgate.policy import load_effective_policy, load_policy
    from capgate.policy.sources import user_config_path

    base = None
    user_file: str | None = None
    if _in_sandbox(environ):
        inherited = environ.get("CAPGATE_POLICY")
        if not inherited:
            raise PolicyError("inside a sandbox (AGENT_IN_SANDBOX=1) without CAPGATE_POLICY: refusing to guess",
                              "CAPGATE_POLICY")
        base = load_effective_policy(inherited)
        allow_user_expansion = False  # never widen what the sandbox was given
        if grants is not None and any((grants.read, grants.write, grants.net, grants.run, grants.env,
                                       grants.credential, grants.resolve)):
            raise PolicyError("inside a sandbox (AGENT_IN_SANDBOX=1) the --allow-* grants are refused: nothing "
                              "widens the policy a sandbox was given", "--allow-*")
        workspace = base.workspace
    else:
        candidate = user_config_path(environ)
        if os.path.lexists(candidate):
            user_file = candidate
    ws = os.path.realpath(workspace or os.getcwd())
    path = _policy_file(policy_path, ws)
    return load_policy(path, workspace=ws, allow_user_expansion=allow_user_expansion, base=base,
                       protected_paths=protected, user_file=user_file, grants=grants)


def _expansion(policy: Policy) -> str:
    text = {"defaults": "defaults only (no workspace policy file)", "restrict-only": "restrict-only",
            "expanded": "expanded (--allow-user-expansion)"}.get(policy.origin, policy.origin)
    if policy.widened:
        count = len(policy.widened)
        text += f"; {count} widening entr{'y' if count == 1 else 'ies'} from trusted sources" \
            if policy.origin != "expanded" else f"; {count} widening entr{'y' if count == 1 else 'ies'}"
    return text


def policy_error_text(exc: PolicyError) -> str:
    """A ``PolicyError`` for the terminal: ``capgate: policy error:`` and the message, one
    error per line; a one-line message keeps the key path it names at the end."""
    text = str(exc)
    if "\n" not in text and exc.key and not text.startswith(f"{exc.key}:"):
        text += f" (key: {exc.key})"
    return f"capgate: policy error: {text}\n"


BANNER_WIDTH = 100
"""The launcher's own lines fit this many columns (issue 14): a longer message goes on
``capgate:   `` continuation lines. Only a single word longer than that (a long path) can
still overflow: it is never broken, so it can be copied."""


def banner_text(message: str, width: int = BANNER_WIDTH) -> str:
    """``message`` as the launcher prints it: its first line after ``capgate: ``, wrapped
    at ``width`` onto ``capgate:   `` continuation lines (a reader sees where each message
    starts); later lines (the summary's table, which wraps its own note) are kept as they are."""
    first, sep, rest = message.partition("\n")
    prefix = "capgate: "
    tail = f"{rest}\n" if sep else ""
    if len(prefix) + len(first) <= width:  # (the common case: no textwrap import)
        return f"{prefix}{first}\n{tail}"
    import textwrap

    lead = first[: len(first) - len(first.lstrip())]  # (an indented item continues deeper than itself)
    lines = textwrap.wrap(first, width=width, initial_indent=prefix, subsequent_indent=prefix + lead + "  ",
                          break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) + "\n" + tail


def _home_relative(path: str, home: str) -> str:
    """``path`` with the user's HOME as ``~`` (the default audit log is under it): the banner
    line stays short, and a shell expands it back when the line is copied."""
    if home != "/" and path.startswith(home.rstrip("/") + "/"):
        return "~" + path[len(home.rstrip("/")):]
    return path


def _widening_lines(policy: Policy) -> list[str]:
    """One line per widening entry and where it came from (design.md: every run says)."""
    return [f"  widened: {entry} (from {origin})" for entry, origin in policy.widened]


def _existing(paths: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in paths:
        if p and os.path.exists(p):
            real = os.path.realpath(p)
            if real not in out:
                out.append(real)
    return tuple(out)


def runtime_read_roots(*, dev: bool = False, extra: Sequence[str] = (),
                       exclude: Callable[[Sequence[str]], set[str]] | None = None) -> tuple[str, ...]:
    """Read-only roots the soft sandbox adds so that the interpreter itself works: prefixes,
    stdlib, site-packages and the other import paths of this Python, capgate's own package,
    certificates, name-service files, ``/dev/null`` and the random devices. ``exclude``: given
    the candidates, those to leave out (before nested roots are merged into their parents, so
    the narrower ones inside an excluded root stay)."""
    import site  # loaded at start-up already (``sysconfig`` is not: ~5 ms, and sys.path has its paths)

    candidates: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates.append(os.path.dirname(os.__file__))  # the stdlib
    try:
        candidates.extend(site.getsitepackages())
    except AttributeError:
        pass
    cwd = os.path.realpath(os.getcwd())
    for entry in sys.path:
        if entry and os.path.isabs(entry) and os.path.realpath(entry) != cwd:
            candidates.append(entry)
    candidates.append(os.path.dirname(os.path.realpath(sys.executable)))
    candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + "/capgate")
    candidates.extend(_wrappers_dirs())
    try:
        import _ssl  # the C half only: ``import ssl`` costs ~15 ms of start-up

        cafile_env, cafile, capath_env, capath = _ssl.get_default_verify_paths()
        candidates.extend(p for p in (os.environ.get(cafile_env), cafile, os.environ.get(capath_env), capath) if p)
    except (ImportError, ValueError):
        pass
    candidates.extend(_DEVICES_READ)
    if dev:
        candidates.extend(_DEV_ROOTS)
    candidates.extend(extra)
    roots = list(_existing(candidates))
    if exclude is not None:
        left_out = exclude(roots)
        roots = [r for r in roots if r not in left_out]
    roots += [f for f in system_files() if f not in roots]  # last: most reads match earlier roots
    # Drop roots nested in another root: shorter list, same meaning.
    return tuple(r for r in roots if not any(r != o and (r.startswith(o.rstrip("/") + "/")) for o in roots))


def _wrappers_dirs() -> list[str]:
    """Where ``capgate.wrappers`` is imported from. Installed, it is ``capgate/wrappers``
    (inside the root above); in a development (editable) install it is the repository's
    ``wrappers/`` folder, mapped by the install's import finder, which the child must read too
    to use the wrappers. Found through the import system (the finder's own answer, ~0.1 ms),
    never by guessing a sibling folder: ``site-packages/wrappers`` may be another package."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("capgate.wrappers")
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    return [os.path.realpath(p) for p in spec.submodule_search_locations or ()]


MIN_CHILD_PYTHON = (3, 10)


def _interpreter_roots(exe: str) -> list[str]:
    """What a Python child that is not this interpreter needs to read to start: its own
    installation (where its stdlib and ``libpython`` are: the real binary's prefix, when
    that holds ``lib/python3.N/os.py``) and, for a virtual environment, the environment
    (``pyvenv.cfg`` beside its ``bin``). capgate itself reaches it through the boot directory
    (``_prepare_run_dir``), never through this interpreter's site-packages.

    Nothing of the interpreter is run to find this out: its ``pyvenv.cfg``, ``.pth`` files
    and stdlib may lie in the workspace, where the agent can write, and the launcher runs
    outside the sandbox. Raises ``SandboxRefused`` for a Python older than
    ``MIN_CHILD_PYTHON`` (known by its file name): the hooks need 3.10's audit events."""
    real = os.path.realpath(exe)
    for name in (os.path.basename(real), os.path.basename(exe)):
        version = name[len("python"):] if name.startswith("python") else ""
        parts = version.split(".")
        if len(parts) >= 2 and all(p.isdecimal() for p in parts[:2]):
            if (int(parts[0]), int(parts[1])) < MIN_CHILD_PYTHON:
                raise SandboxRefused(
                    f"{exe} is Python {parts[0]}.{parts[1]}; the soft sandbox's hooks need CPython "
                    f"{MIN_CHILD_PYTHON[0]}.{MIN_CHILD_PYTHON[1]} or newer: run the agent with a newer "
                    f"interpreter (e.g. {sys.executable})")
            break
    xy = _python_version(real) or _python_version(exe)
    roots: list[str] = [real]  # the binary itself, not the directory it is in (~/bin)
    prefix = os.path.dirname(os.path.dirname(real))
    if prefix != "/" and _holds_stdlib(prefix):
        roots += _installation_files(prefix, xy)
    venv = os.path.dirname(os.path.dirname(os.path.abspath(exe)))
    if venv != "/" and os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        # The environment's own files (its configuration and site-packages), not the
        # directory holding it: a venv made in HOME itself would otherwise open all of HOME.
        roots.append(os.path.join(venv, "pyvenv.cfg"))
        roots += _installation_files(venv, xy)
    return roots


def _python_version(path: str) -> str | None:
    """``3.N`` from an interpreter's file name (``python3.11``), or None."""
    name = os.path.basename(path)
    parts = name[len("python"):].split(".") if name.startswith("python") else []
    return f"{parts[0]}.{parts[1]}" if len(parts) >= 2 and parts[0].isdecimal() and parts[1].isdecimal() else None


def _installation_files(prefix: str, version: str | None) -> list[str]:
    """What an interpreter installed under ``prefix`` reads from it: each ``lib*/python3.N``
    (the stdlib, with ``lib-dynload`` and ``site-packages`` inside; only version ``version``
    when known), its zipped stdlib, ``libpython3*`` beside it, and Debian's
    ``lib/python3/dist-packages`` — never the prefix itself (``--prefix=$HOME`` is HOME)."""
    import glob

    base = glob.escape(prefix)
    wanted = f"python{version}" if version else "python3.*"
    out = [d for d in sorted(glob.glob(os.path.join(base, "lib*", wanted))) if os.path.isdir(d)]
    for d in list(out):
        tail = os.path.basename(d)[len("python"):].replace(".", "")
        out.append(os.path.join(os.path.dirname(d), f"python{tail}.zip"))
    out += sorted(glob.glob(os.path.join(base, "lib*", "libpython3*")))
    out.append(os.path.join(prefix, "lib", "python3", "dist-packages"))
    return out


def _literal_root(pattern: str) -> str | None:
    """The directory an absolute deny pattern lies beneath (its components before the first
    one with a wildcard), or None for a pattern that is not absolute."""
    if not pattern.startswith("/"):
        return None
    parts: list[str] = []
    for part in pattern.split("/")[1:]:
        if any(c in part for c in "*?[\\"):
            break
        parts.append(part)
    return "/" + "/".join(parts) if parts else None


def _broad_roots(roots: Sequence[str], policy: Policy, user_home: str) -> list[tuple[str, str]]:
    """(root, what it would open) for every runtime read root that equals or contains the
    launching user's HOME or a path the policy denies reading: the kernel layer (Landlock,
    which has no deny patterns) would let every native program in the tree read it."""
    from capgate.paths import is_within

    guarded = [(os.path.realpath(user_home), "your HOME")]
    for pattern in policy.filesystem.deny_read:
        for anchored in pattern.anchored:
            literal = _literal_root(anchored)
            if literal is not None and literal != "/":
                guarded.append((literal, f"{literal} (filesystem.denyRead: {pattern.source})"))
    out = []
    for root in roots:
        for path, what in guarded:
            if path and path != "/" and (root == path or is_within(path, root)):
                out.append((root, what))
                break
    return out


def _holds_stdlib(prefix: str) -> bool:
    import glob

    return bool(glob.glob(os.path.join(glob.escape(prefix), "lib*", "python3.*", "os.py")))


def default_audit_path(environ: Mapping[str, str], home: str) -> str:
    state = environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(state, "capgate", "audit", f"run-{stamp}-{os.getpid()}.jsonl")


def _python_script(argv: Sequence[str]) -> int | None:
    """Check a Python command line; return the index of the script path it runs (if any).

    Raises SandboxRefused for -I, -E and -S, which would skip the soft sandbox's boot (the
    same check ``capgate.soft`` makes for a Python program the child starts)."""
    from capgate.soft import HookSkippingOption, python_script_index

    try:
        return python_script_index(argv)
    except HookSkippingOption as exc:
        raise SandboxRefused(str(exc)) from None


def _resolve_command(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """Find the program the user typed, on *their* PATH (absolute entries only)."""
    name = argv[0]
    if "/" in name:
        path = os.path.abspath(name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise SandboxRefused(f"{name}: not an executable file")
        return path
    search = ":".join(p for p in environ.get("PATH", os.defpath).split(":") if os.path.isabs(p))
    found = shutil.which(name, path=search)
    if found is None:
        raise SandboxRefused(f"{name}: command not found on PATH")
    return found


# ---------------------------------------------------------------------------------------
# capgate run
# ---------------------------------------------------------------------------------------
def run(options: RunOptions, *, environ: Mapping[str, str] | None = None,
        stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``capgate run``: see the module docstring. Returns the exit code.

    Every way out of here is a return with one message: no process the launcher started
    (the spawner) is left to write after it, and ``SIGTERM``/``SIGINT``/``SIGHUP`` (what
    ``timeout``, ``docker stop``, CI cancellation, Ctrl-C and a closed terminal send) stop
    the run like the end of the child does — tree killed, ``run.end`` last in the audit log,
    summary printed, run directory removed — and return 128+N (``_StopOnSignals``)."""
    env = dict(os.environ if environ is None else environ)
    out = stdout or sys.stdout
    err = stderr or sys.stderr

    def say(line: str) -> None:
        err.write(banner_text(line))
        err.flush()

    if _in_sandbox(env) and not options.dry_run_policy:
        say("refusing to start: already in a capgate sandbox (AGENT_IN_SANDBOX=1); "
            "sandboxes do not nest")
        return EXIT_SANDBOX_REFUSED
    if not options.command and not options.dry_run_policy:
        say("nothing to run: give the command after --, e.g. capgate run -- python agent.py")
        return EXIT_USAGE
    try:
        soft_sandbox_forced(env, options.backend)  # (a usage error before anything starts)
        if options.on_exit != "keep" and not options.staged:
            raise UsageError(f"--on-exit {options.on_exit} is for staged runs: add --staged")
        if options.on_exit not in ("keep", "apply", "discard"):
            raise UsageError(f"--on-exit {options.on_exit!r}: keep, apply or discard")
    except UsageError as exc:
        say(f"usage error: {exc}")
        return EXIT_USAGE
    # (not for --backend container: the runtime starts the tree, a spawner would only cost CPU)
    prestarted = (bool(options.command) and not options.dry_run_policy and sys.platform.startswith("linux")
                  and options.backend != "container")
    with _StopOnSignals() as stop:
        run_dir: _RunDir | None = None
        try:
            if prestarted:
                from capgate._sys import spawner

                # The supervisor's spawner interpreter starts now, in parallel with loading the
                # policy; the warm-up thread hands it its limits and Landlock plan (``configure``).
                spawner.prestart()
            run_dir = _RunDir.create()
            return _run(options, env, out, say, run_dir.path, stop, err)
        except PolicyError as exc:
            err.write(policy_error_text(exc))
            err.flush()
            return EXIT_USAGE
        except (SandboxRefused, BackendUnavailable) as exc:
            say(f"sandbox refused to start: {exc}")
            return EXIT_SANDBOX_REFUSED
        except UsageError as exc:
            say(f"usage error: {exc}")
            return EXIT_USAGE
        except StagingError as exc:
            say(f"cannot stage this run: {exc}")
            return EXIT_USAGE
        except RunInterrupted as exc:  # before the audit log existed: nothing ran
            say(f"stopped by {exc.name} before the child started")
            return exc.exit_code
        finally:
            stop.disarm()
            if prestarted:
                from capgate._sys import spawner

                spawner.discard_prestarted()  # (a no-op once a run configured it)
            if run_dir is not None:
                run_dir.remove()


class RunInterrupted(BaseException):
    """A stopping signal reached the launcher (``_StopOnSignals``). A ``BaseException``, as
    ``KeyboardInterrupt`` is: no ``except Exception`` on the way may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StopOnSignals:
    """While armed, ``SIGTERM``, ``SIGINT`` and ``SIGHUP`` raise ``RunInterrupted`` in the main
    thread (wherever it waits: the supervisor's poll, the policy load), so the ``finally``
    blocks on the way kill the tree and the launcher ends the run the normal way. The first
    signal disarms: one more while cleaning up is ignored (the clean-up is bounded), and so is
    one after ``disarm`` (the run is over; only its files are being removed). Off the main
    thread (the embedded ``launcher.run``) nothing is installed."""

    _SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")

    def __init__(self) -> None:
        self.armed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignals:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        self.armed = True
        for name in self._SIGNALS:
            num = getattr(signal, name)
            self._previous[num] = signal.signal(num, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        if self.armed:
            self.armed = False
            raise RunInterrupted(signum)

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *_exc: object) -> None:
        import signal

        self.armed = False
        for num, previous in self._previous.items():
            signal.signal(num, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


class _RunDir:
    """The launcher's run directory (boot files, policy copy, sandbox HOME and TMPDIR):
    ``capgate-run-<pid>-<random>`` in the temp directory, ``flock``-ed by the launcher for
    the whole run.

    A launcher killed by ``SIGKILL`` cannot remove it; the next ``capgate run`` does
    (``sweep``): a directory whose lock is free *and* whose owner pid is gone is a dead run's.
    The lock alone would race with a launcher between ``mkdtemp`` and ``flock``; the pid
    alone could be recycled (then the directory waits for a later sweep) or belong to another
    pid namespace sharing the temp directory (then its lock is held)."""

    PREFIX = "capgate-run-"

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def create(cls) -> _RunDir:
        import fcntl

        parent = tempfile.gettempdir()
        cls.sweep(parent)
        path = tempfile.mkdtemp(prefix=f"{cls.PREFIX}{os.getpid()}-", dir=parent)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fresh: nobody else can hold it
        return cls(path, fd)

    def remove(self) -> None:
        _remove_tree(self.path)
        os.close(self._lock_fd)

    @classmethod
    def sweep(cls, parent: str) -> None:
        """Remove the run directories of launchers that died without cleaning up."""
        import fcntl

        me = os.geteuid()
        try:
            entries = list(os.scandir(parent))
        except OSError:
            return
        for entry in entries:
            owner = _run_dir_owner(entry.name, cls.PREFIX)
            if owner is None or owner == os.getpid():
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != me or not entry.is_dir(follow_symlinks=False):
                    continue
                os.kill(owner, 0)
                continue  # the owner lives: its run
            except ProcessLookupError:
                pass
            except OSError:
                continue  # (EPERM: another user's process lives with that pid)
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # held: a live launcher (in another pid namespace) owns it
            try:
                _remove_tree(entry.path)
            finally:
                os.close(fd)


def _run_dir_owner(name: str, prefix: str) -> int | None:
    """The launcher pid in a run directory's name (``capgate-run-<pid>-<random>``), else None.
    (The spawner's private directories, ``capgate-run-<pid>-<16 hex>``, match too: a dead
    owner's ones are as removable.)"""
    if not name.startswith(prefix):
        return None
    pid, sep, rest = name[len(prefix):].partition("-")
    if not sep or not rest or not pid.isdigit() or len(pid) > 10:
        return None
    return int(pid)


def _remove_tree(path: str) -> None:
    """Remove ``path`` and everything in it, as its owner: directories the run made
    unwritable (the ``0500`` boot directory, a child's ``chmod 000``) are opened up first.
    ``shutil.rmtree`` works on descriptors, so a planted symlink is removed, never followed.
    Only directories inside ``path`` are ever opened up: a failure on ``path`` itself (gone
    already: another launcher's sweep removed it) must not touch its parent (``/tmp``)."""
    top = os.path.abspath(path)

    def reopen(_func: Any, failed: str, exc: Any) -> None:
        failed = os.path.abspath(failed)
        parent = os.path.dirname(failed)
        if isinstance(exc, FileNotFoundError) or (isinstance(exc, tuple) and exc[0] is FileNotFoundError):
            return  # (already gone: nothing to open up)
        if failed == top or not (parent == top or parent.startswith(top + os.sep)):
            return
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=reopen)


class UsageError(Exception):
    """The command line and the environment ask for things that cannot both hold (exit 2)."""


_SOFT_SANDBOX_ON = frozenset({"1", "yes", "true"})
_SOFT_SANDBOX_OFF = frozenset({"", "0", "no", "false"})


def soft_sandbox_forced(env: Mapping[str, str], requested: str) -> bool:
    """Read ``SOFT_SANDBOX``: ``1``/``yes``/``true`` (any case) force the soft backend; unset,
    empty, ``0``/``no``/``false`` leave the choice to ``--backend``. Any other value, and a
    forced soft backend with an explicit ``--backend`` other than soft, is a ``UsageError``
    naming both (design.md, launcher step 3: never a silent override, never a silent guess)."""
    raw = env.get("SOFT_SANDBOX")
    value = (raw or "").strip().lower()
    if value in _SOFT_SANDBOX_OFF:
        return False
    if value not in _SOFT_SANDBOX_ON:
        raise UsageError(f"SOFT_SANDBOX={raw!r} is not understood: 1, yes or true (any case) force the soft "
                         "backend; 0, no, false, empty or unset leave the choice to --backend")
    if requested not in ("auto", "soft"):
        raise UsageError(f"SOFT_SANDBOX={raw} forces the soft backend, but --backend {requested} asks for "
                         f"another: unset SOFT_SANDBOX or drop --backend {requested}")
    return True


def _choose_backend(requested: str, env: Mapping[str, str], *, runtime: str | None = None,
                    image: str | None = None) -> tuple[str, str, Any]:
    """(backend name, why, the container backend when chosen: it knows the runtime and image it found)."""
    from capgate.backends import get_backend  # (soft, namespace)

    def container(auto: bool = False) -> Any:
        from capgate.backends.container import ContainerBackend

        return ContainerBackend(runtime=runtime, image=image, auto=auto)

    if soft_sandbox_forced(env, requested):
        return "soft", f"SOFT_SANDBOX={env.get('SOFT_SANDBOX')} in the environment forces the soft backend", None
    if requested == "soft":
        return "soft", "requested with --backend soft", None
    if requested == "namespace":
        ok, why = get_backend("namespace").available()
        if not ok:
            raise BackendUnavailable(f"--backend namespace: {why}")
        return "namespace", "requested with --backend namespace", None
    if requested == "container":
        backend = container()
        ok, why = backend.available()
        if not ok:
            raise BackendUnavailable(f"--backend container: {why}")
        return "container", f"requested with --backend container: {backend.describe()}", backend
    backend = container(auto=True)
    ok, why = backend.available()
    if ok:
        return "container", f"auto: a container runtime answers and the image is built ({backend.describe()})", backend
    ns_ok, ns_why = get_backend("namespace").available()
    if ns_ok:
        return "namespace", f"auto: user namespaces work here; no container backend ({why})", None
    return "soft", f"auto: no container backend ({why}); no namespace backend ({ns_why})", None


def _choose_staged_backend(requested: str, env: Mapping[str, str], *, runtime: str | None = None,
                           image: str | None = None) -> tuple[str, str, Any]:
    """The backend for ``--staged``: as ``_choose_backend``, but ``auto`` takes the first one
    that can stage, and one that cannot is a usage error (exit 2) that says why."""
    from capgate.backends import get_backend

    if requested == "auto" and not soft_sandbox_forced(env, requested):
        reasons = []
        for name in ("container", "namespace"):
            backend = get_backend(name, runtime=runtime, image=image) if name == "container" else get_backend(name)
            refusal = getattr(backend, "staging_refusal", "it cannot stage writes")
            if refusal is not None:  # (asked first: probing a runtime costs tens of ms)
                reasons.append(f"{name}: {refusal}")
                continue
            ok, why = backend.available()
            if ok:
                return name, f"auto, --staged: {name} can stage writes", backend if name == "container" else None
            reasons.append(f"{name}: {why}")
        raise UsageError("--staged needs a backend that can stage writes, and none can run here ("
                         + "; ".join(reasons) + ")")
    name, why, chosen = _choose_backend(requested, env, runtime=runtime, image=image)
    backend = chosen if chosen is not None else get_backend(name)
    refusal = getattr(backend, "staging_refusal", "it cannot stage writes")
    if refusal is not None:
        raise UsageError(f"--staged: {refusal}")
    return name, why, chosen


def _staged_policy(policy: Policy) -> Policy:
    """The policy of a staged run: the workspace is a write root (its writes land in the
    staging layer), everything else as it was; deny lists untouched. The workspace must be
    readable as a whole: the overlay shows all of it."""
    from capgate.paths import is_within

    fs = policy.filesystem
    ws = policy.workspace
    if not any(is_within(ws, root) for root in fs.read):
        raise UsageError(f"--staged: the workspace {ws} is not a read root of the policy (filesystem.read), and a "
                         "staged run shows all of it; read the whole workspace or run without --staged")
    if ws in fs.write:
        return policy
    return dataclasses.replace(policy, filesystem=dataclasses.replace(fs, write=(*fs.write, ws)))


def _run(options: RunOptions, env: dict[str, str], out: IO[str], say: Any, run_dir: str,
         stop: _StopOnSignals, err: IO[str] | None = None) -> int:
    from capgate.policy.model import Policy  # noqa: F401  (type only, imported for dataclasses.replace)

    backend_name, why_backend, chosen = (
        _choose_staged_backend(options.backend, env, runtime=options.runtime, image=options.image) if options.staged
        else _choose_backend(options.backend, env, runtime=options.runtime, image=options.image))
    namespace = backend_name == "namespace"
    container = backend_name == "container"

    home_real = os.path.realpath(env.get("HOME") or os.path.expanduser("~"))
    audit_path = os.path.abspath(options.audit_log) if options.audit_log else default_audit_path(env, home_real)
    policy_file = os.path.join(run_dir, "policy.json")
    boot_dir = os.path.join(run_dir, "boot")
    sandbox_home = os.path.join(run_dir, "home")
    tmpdir = os.path.join(run_dir, "tmp")

    # Resolve the command first: a Python script the user named is a runtime read root.
    argv: tuple[str, ...] = ()
    python_child = False
    script_roots: list[str] = []
    if options.command:
        if container:
            # Resolved inside, on the image's PATH (the entrypoint): the image's programs are
            # what runs. A path is made absolute: the workspace is at the same path inside.
            exe = os.path.abspath(options.command[0]) if "/" in options.command[0] else options.command[0]
        else:
            exe = _resolve_command(options.command, env)
        args = [exe, *options.command[1:]]
        python_child = is_python_command(exe)
        if python_child:
            if not container:
                script_roots.extend(_interpreter_roots(exe))  # (raises SandboxRefused below 3.10)
            index = _python_script(options.command)
            if index is not None:
                # The user named the script relative to where they typed the command; the
                # child runs in the workspace, so pass it absolute. Reading it is allowed
                # (exactly that file): the user chose to run it.
                script_path = os.path.realpath(args[index])
                if os.path.isfile(script_path):
                    args[index] = script_path
                    script_roots.append(script_path)
        argv = tuple(args)

    policy = _load(options.policy, options.workspace, options.allow_user_expansion, env,
                   protected=(os.path.realpath(audit_path), policy_file), grants=options.grants)
    from capgate.backends.container import IMAGE_ROOT

    if options.staged:
        policy = _staged_policy(policy)
    policy = _soft_policy(policy, dev=options.dev, boot_dir=boot_dir, home=sandbox_home, tmpdir=tmpdir,
                          extra_read=script_roots, user_home=home_real,
                          image_roots=(IMAGE_ROOT,) if container else ())
    credentials = _take_credentials(policy, env, resolve=bool(options.command) and not options.dry_run_policy)
    _check_outside_writes(policy, audit_path, "the audit log (--audit-log)",
                          exempt=(sandbox_home, tmpdir, "/dev/null"))
    _check_outside_writes(policy, run_dir, "the launcher's run directory (TMPDIR)",
                          exempt=(sandbox_home, tmpdir, "/dev/null"))
    if options.staged:
        from capgate.staging.store import staging_root

        _check_outside_writes(policy, staging_root(env), "the staging directory ($XDG_STATE_HOME/capgate/staging)",
                              exempt=(sandbox_home, tmpdir, "/dev/null"))
    warmup = None
    container_plan: Any = None
    if options.command and not options.dry_run_policy and container:
        _make_write_roots(policy, sandbox_home, tmpdir, staged=options.staged)
        # No spawner: the runtime starts the tree. The command is added inside (the entrypoint
        # resolves it in the image); the plan covers everything else, as for soft.
        container_plan = soft_plan(policy, (), extra_read=(run_dir,))
    elif options.command and not options.dry_run_policy:
        # The kernel layer under the hooks (soft_plan) is worked out on the warm-up thread,
        # which then starts the supervisor's spawner under it while we finish here.
        _make_write_roots(policy, sandbox_home, tmpdir, staged=options.staged)
        # (policy.json, boot/: the child reads them.) In the namespace backend, the spawner
        # itself stays unconfined: bubblewrap must mount, and ns_exec applies the plan inside.
        warmup = _SpawnerWarmup(policy, argv, extra_read=(run_dir,), confine_spawner=not namespace)

    # -- first lines ------------------------------------------------------------------
    # -q keeps the warnings and the soft backend's seat-belt line (design.md, launcher step 4).
    note = (lambda _line: None) if options.quiet else say
    source = policy.source or "built-in defaults"
    note(f"backend: {backend_name} ({why_backend})")
    if container:
        note("container sandbox: no network, read-only root, no capabilities, no new privileges; the child "
             "sees the image, the read roots (read-only), the write roots, a private /tmp and HOME; what the "
             "policy denies in them is covered up; the gate runs again inside (AGENT_IN_SANDBOX=1)")
    elif namespace:
        note("namespace sandbox: new user, mount, pid, network, ipc and uts namespaces; the child sees only "
             "the read roots (read-only), the write roots, a private /tmp and HOME and the system's files; "
             "what the policy denies in them is covered up; no host sockets or processes")
    else:
        say("SOFT_SANDBOX=true: a seat belt, not isolation: it reduces accidental damage, it does not "
            "contain a determined attacker (use the container backend for that)")
    note(f"policy: {source} — {_expansion(policy)}")
    if options.staged:
        note("staged: the workspace is writable inside the run, but every change lands in a staging layer under "
             "your state directory; the real workspace is not touched until capgate apply (deny lists and the "
             f"mandatory write-deny list still hold; --on-exit {options.on_exit})")
    for line in _widening_lines(policy):
        note(line)
    for line in _inspection_lines(policy):
        note(line)
    if options.command:
        if python_child:
            note(f"child: Python ({argv[0]}): its file, network and process actions go through the gate "
                 "(audit hooks), plus process-level controls")
        elif namespace or container:
            note(f"child: not Python ({argv[0]}): the gate does not check its actions one by one; it sees "
                 f"only the {backend_name} view, under the kernel layer, resource limits, wall-time kill and a "
                 "clean environment (Python programs it starts are checked by the gate)")
        else:
            note(f"child: not Python ({argv[0]}): process-level controls only (resource limits, wall-time "
                 "kill, clean environment, private TMPDIR, sandbox HOME, the kernel layer when there is "
                 "one); the gate does NOT check its file, network and process actions (Python programs "
                 "it starts, it does)")
    if options.dry_run_policy:
        if options.internal:
            _print_dry_run(out, policy, backend_name, audit_path, sandbox_home, tmpdir)
        else:
            note(f"runtime read roots (added so the interpreter works; read-only): "
                 f"{len(policy.filesystem.runtime_read)} paths (--internal lists them)")
            note(f"audit log would be: {audit_path}")
            _print_policy_file(out, policy)
        return 0

    confine = warmup.plan() if warmup is not None else container_plan
    if confine is None:
        say("WARNING: kernel layer: none (no Landlock on this kernel): the hooks are the only file and "
            "process checks")
    else:
        note("kernel layer (Landlock): the whole tree writes only in the write roots, reads only in the "
             "read roots and the system's files, connects (TCP) only to the egress proxy, signals "
             "nothing outside itself"
             + (", runs only the command and the allowed commands" if confine.restricts_exec else ""))
    note(f"audit log: {_home_relative(audit_path, home_real)}")
    from capgate.audit import AuditLog
    from capgate.backends import LaunchRequest, get_backend

    os.makedirs(os.path.dirname(audit_path), mode=0o700, exist_ok=True)
    if not options.audit_log:
        from capgate.audit_summary import prune_run_logs

        prune_run_logs(os.path.dirname(audit_path), env, keep_room_for_one=True)
    audit = AuditLog(audit_path, log_allowed=options.audit_allowed)
    _prepare_run_dir(run_dir, policy, policy_file, boot_dir, sandbox_home, tmpdir)
    audit.event("run.start", backend=backend_name, soft_sandbox=backend_name == "soft", backend_reason=why_backend,
                expansion=policy.origin, policy_source=source, command=list(argv), python_child=python_child,
                widened=[{"entry": e, "from": o} for e, o in policy.widened], audit_allowed=options.audit_allowed,
                landlock={"write": bool(confine and confine.restricts_write),
                          "exec": bool(confine and confine.restricts_exec),
                          "read": bool(confine and confine.restricts_read),
                          "connect": bool(confine and confine.restricts_connect),
                          "signals": bool(confine and confine.scoped)},
                os=_os_info(), python=_python_info(), policy=policy.to_dict(redact=True))
    staged_run = staged_lock = None
    if options.staged:
        from capgate.staging.store import create_run

        staged_run, staged_lock = create_run(policy.workspace, policy.to_json(), backend=backend_name, environ=env)
        audit.event("staging.start", run=staged_run.run_id, staging=staged_run.path)
        note(f"staging: {_home_relative(staged_run.path, home_real)} (run {staged_run.run_id})")
    request = LaunchRequest(argv=argv, policy=policy, policy_file=policy_file, run_dir=run_dir,
                            home=sandbox_home, tmpdir=tmpdir, python_child=python_child, environ=env,
                            confine=confine, mount_read=tuple(script_roots) if container else (),
                            credentials=credentials, upstream_ca=options.upstream_ca,
                            on_misuse=_run_ender(policy, audit, stop, say), staging=staged_run,
                            staging_lock=staged_lock)
    backend = chosen if chosen is not None else get_backend(backend_name)

    def finish_staged(returncode: int, clean_end: bool) -> int | None:
        if staged_run is None or staged_lock is None:
            return None
        from capgate.staging.report import finish_staged_run

        try:
            return finish_staged_run(staged_run, staged_lock, policy, audit, on_exit=options.on_exit,
                                     returncode=returncode, clean_end=clean_end, environ=env,
                                     err=err or sys.stderr, say=say)
        except (OSError, StagingError) as exc:
            say(f"staged run {staged_run.run_id}: {exc}; the staging is kept at {staged_run.path}")
            return None

    try:
        if warmup is not None:
            warmup.join(timeout=5.0)
        result = backend.launch(request, audit)
        stop.disarm()  # the child's tree is gone: what is left is writing its end down
    except RunInterrupted as exc:  # the tree was killed on the way out of launch()
        audit.event("run.end", returncode=exc.exit_code, signal=exc.name, timed_out=False,
                    duration_s=None, limits_fired=[], child_activated=None, denied=audit.denied,
                    allowed=audit.allowed)
        say(f"stopped by {exc.name}: the child's process tree was killed")
        finish_staged(exc.exit_code, False)
        say(_summary(audit, argv, python_child, _native_execs(backend)))
        audit.close()
        return exc.exit_code
    except PermissionDenied as exc:  # the command itself was refused (a hostile .git/config)
        audit.event("run.end", returncode=EXIT_SANDBOX_REFUSED, refused=str(exc), timed_out=False,
                    duration_s=0.0, limits_fired=[], child_activated=False, denied=audit.denied,
                    allowed=audit.allowed)
        say(f"sandbox refused to start: {exc}")
        finish_staged(EXIT_SANDBOX_REFUSED, False)
        say(_summary(audit, argv, True, 0, None))  # (nothing ran: the table is all there is)
        audit.close()
        return EXIT_SANDBOX_REFUSED
    except BackendUnavailable as exc:
        audit.event("run.refused", reason=str(exc))
        finish_staged(EXIT_SANDBOX_REFUSED, False)
        audit.close()
        raise
    except OSError as exc:  # the supervising side failed mid-run (e.g. the child killed its spawner)
        audit.event("run.failed", reason=str(exc))
        say(f"the run was stopped: the sandbox's supervision failed ({exc}); the child's process tree was "
            "killed")
        finish_staged(EXIT_SANDBOX_REFUSED, False)
        say(_summary(audit, argv, python_child, _native_execs(backend)))
        audit.close()
        return EXIT_SANDBOX_REFUSED
    audit.event("run.end", returncode=result.returncode, timed_out=result.timed_out,
                duration_s=round(result.duration, 3), limits_fired=list(result.limits_fired),
                child_activated=result.child_activated, denied=audit.denied, allowed=audit.allowed)
    if python_child and not result.child_activated:
        say("WARNING: the Python child never reported that its hooks were active (it may have exited "
            "before start-up finished, or run with a Python that could not load capgate)")
    if result.timed_out:
        say(f"the child was killed at the wall-time limit ({policy.limits.wall_time_seconds} s)")
    for fired in result.limits_fired:
        if fired not in ("wall_time", "wallTimeSeconds"):  # (said just above)
            say(f"limit reached: {fired}")
    clean = not result.timed_out and not result.limits_fired and not (staged_run and staged_run.quota_exceeded)
    instead = finish_staged(result.returncode, clean)
    if not options.quiet or audit.denied:
        say(_summary(audit, argv, python_child, result.native_execs, result.child_activated))
    audit.close()
    return result.returncode if instead is None or result.returncode != 0 else instead


def _take_credentials(policy: Policy, env: dict[str, str], *, resolve: bool) -> Any:
    """The run's live credentials (``capgate.credentials``), or None. Their values are read
    from ``env`` (or their files) here, and every variable that held one leaves ``env`` (what
    the backends build the child's environment from), ``os.environ`` and this process's
    ``/proc/<pid>/environ`` before any child starts (``capgate._sys.secret_env``). Without
    ``capgate[proxy-tls]`` a credential or request rule is a ``PolicyError`` naming the extra."""
    net = policy.network
    if not (net.credentials or net.request_rules):
        return None
    from capgate.inspection import require_extra

    require_extra(net.credentials[0].key if net.credentials else net.request_rules[0].key)
    if not resolve or not net.credentials:
        return None
    from capgate._sys.secret_env import drop_secret_variables
    from capgate.credentials import resolve_credentials

    # (read even with the network off: the same checks, and then the variables go whatever
    # happens — an --allow-env of the same name must not hand the value over an offline run)
    live = resolve_credentials(policy, env)
    names = live.source_env_names()
    for name in names:
        env.pop(name, None)
    drop_secret_variables(names)
    return live if net.enabled else None


def _run_ender(policy: Policy, audit: AuditLog, stop: _StopOnSignals, say: Callable[[str], None]) -> Any:
    """With ``network.endRunOnCredentialMisuse``: what the proxy calls when a placeholder went
    to another host — the run ends as on SIGTERM (tree killed, summary, ``run.end``), which is
    how this launcher already stops a run from any thread. None otherwise."""
    if not policy.network.end_run_on_credential_misuse:
        return None
    import signal

    def end(reason: str) -> None:
        if not stop.armed:
            return
        audit.event("run.ending", reason=f"network.endRunOnCredentialMisuse: {reason}")
        say(f"ending the run (network.endRunOnCredentialMisuse): {reason}")
        os.kill(os.getpid(), signal.SIGTERM)

    return end


def _inspection_lines(policy: Policy) -> list[str]:
    """What the proxy inspects, and which placeholders the child holds (design.md: say so)."""
    net = policy.network
    if not net.enabled:
        return []
    lines = [f"  credential: ${c.child_env} holds a placeholder; the egress proxy puts the real value into the "
             f"{c.header} header of requests to {c.host}:{c.port} only ({c.key})" for c in net.credentials]
    hosts = sorted({f"{c.host}:{c.port}" for c in net.credentials} | {f"{r.host}:{r.port}" for r in net.request_rules})
    if hosts:
        lines.append(f"  TLS inspected (run CA, Host/SNI checked, requests logged) for: {', '.join(hosts)}; every "
                     "other host is a plain tunnel")
    return lines


def _native_execs(backend: Any) -> int | None:
    count = getattr(backend, "native_execs", None)
    return count() if callable(count) else None


def _summary(audit: AuditLog, argv: Sequence[str], python_child: bool, native_execs: int | None,
             activated: bool | None = None) -> str:
    """The denial summary, honest about what the launcher could not see (design.md,
    launcher step 6): refusals by the kernel layer (Landlock) to a process that is not Python
    never reach the audit log. So "no denials" is said only when every process of the tree
    was Python code under the hooks (or the count of others is unknown: then it says that)."""
    table = audit.format_summary().removeprefix("capgate: ")
    if python_child and native_execs == 0 and activated is not False:
        return table
    if python_child and activated is False:
        blind = "the Python child never activated its hooks, so nothing it did was observable"
    elif not python_child:
        blind = (f"{os.path.basename(argv[0]) if argv else 'the command'} is not Python: refusals by the kernel "
                 "layer to it and to the native programs it starts are not observable")
    elif native_execs is None:
        blind = ("refusals by the kernel layer to native (non-Python) processes of the tree, if it started any, "
                 "are not observable")
    else:
        blind = (f"refusals by the kernel layer to native processes ({native_execs} exec"
                 f"{'s' if native_execs != 1 else ''} of non-Python programs) are not observable")
    if audit.denied == 0:
        seen = "seen from Python code" if python_child else "seen"
        return f"no denials {seen} ({audit.allowed} allowed); {blind}"
    import textwrap  # (the note under the table wraps like the launcher's own lines)

    note = textwrap.wrap(f"({blind})", width=BANNER_WIDTH, initial_indent="  ", subsequent_indent="   ",
                         break_long_words=False, break_on_hyphens=False)
    return table + "\n" + "\n".join(note)


class _SpawnerWarmup:
    """Work out the kernel layer (``soft_plan``) and start the supervisor's spawner process
    under it (``capgate._sys.spawner``: ~20 ms to come up) on a thread, in parallel with the
    rest of the launcher's start-up, leaving the spawner idle in the pool where ``supervise``
    picks it up; also keeps cgroup migration warm for the child's start. The spawner part is
    best effort (a pool-key mismatch only means ``supervise`` starts its own); the plan is
    not: ``plan()`` computes it here if the thread could not."""

    def __init__(self, policy: Policy, argv: Sequence[str], extra_read: Sequence[str] = (),
                 *, confine_spawner: bool = True) -> None:
        import threading

        self._confine_spawner = confine_spawner
        self._policy = policy
        self._argv = tuple(argv)
        self._extra_read = tuple(extra_read)
        self._plan: Any = None
        self._planned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capgate-spawner-warmup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            from capgate._sys.cgroup import keep_migrations_warm

            keep_migrations_warm(0.5)  # the child's cgroup join is then ~30 us, not a grace period
            self._plan = soft_plan(self._policy, self._argv, extra_read=self._extra_read)
            self._planned.set()
            from capgate import supervisor
            from capgate._sys import spawner
            from capgate._sys.rlimits import limit_table

            limits = self._policy.limits
            table = limit_table(limits)
            carriable = getattr(supervisor, "_carriable", None)
            fast = limits.max_processes >= 2 and carriable is not None and carriable(table)
            spawner.release(spawner.acquire(tuple((row[0], row[1], row[2]) for row in table) if fast else None,
                                            self._plan if self._confine_spawner else None))
            # The child's pids cgroup too (mkdir in cgroupfs, pids.max, the control files
            # supervise() uses), left empty in the spare pool where supervise() takes it.
            from capgate._sys.cgroup import create_pids_cgroup

            group = create_pids_cgroup(limits.max_processes)
            if group is not None:
                group.procs_fd()
                group.current_fd()
                group.max_hits()
                group.release()
        except Exception:  # an optimisation only: supervise() starts a spawner itself
            pass

    def plan(self) -> Any:
        """The Landlock plan for the child tree (None: no Landlock here), once worked out."""
        if self._planned.wait(5.0):
            return self._plan
        # the thread failed or hangs: never run without the plan
        return soft_plan(self._policy, self._argv, extra_read=self._extra_read)

    def join(self, timeout: float) -> None:
        """Wait for the spawner to be idle in the pool (else supervise would start a second)."""
        self._thread.join(timeout)


def _soft_policy(policy: Policy, *, dev: bool, boot_dir: str, home: str, tmpdir: str,
                 extra_read: Sequence[str], user_home: str | None = None, image_roots: Sequence[str] = ()) -> Policy:
    """The policy with the soft sandbox's runtime read roots and write roots added.
    ``extra_read`` (the child interpreter's files, the script) must not open ``user_home``
    or a denied path (``SandboxRefused``); a root of this interpreter's own that would (one
    installed with ``--prefix=$HOME``) is left out, its stdlib and site-packages stay."""
    fs = policy.filesystem
    if user_home is not None:
        broad = _broad_roots(_existing(extra_read), policy, user_home)
        if broad:
            root, what = broad[0]
            raise SandboxRefused(f"the child's interpreter would make {root} readable to the whole tree, which "
                                 f"holds {what}: install that Python outside HOME (or in a virtual environment "
                                 "there), or run the agent with another interpreter")
    def too_broad(roots: Sequence[str]) -> set[str]:
        return set() if user_home is None else {root for root, _what in _broad_roots(roots, policy, user_home)}

    runtime = runtime_read_roots(dev=dev, extra=extra_read, exclude=too_broad)
    # (image_roots: the container image's own capgate, which exists only inside it)
    runtime = tuple(dict.fromkeys((*fs.runtime_read, *runtime, boot_dir, *image_roots)))
    write = tuple(dict.fromkeys((*fs.write, home, tmpdir, "/dev/null")))
    return dataclasses.replace(policy, filesystem=dataclasses.replace(fs, runtime_read=runtime, write=write))


def _make_write_roots(policy: Policy, home: str, tmpdir: str, *, staged: bool = False) -> None:
    """Create the sandbox HOME and TMPDIR, and write roots missing inside the workspace whose
    parent exists.

    Landlock can only allow writes beneath a directory that exists when the ruleset is made;
    the hooks would let the child ``mkdir output`` itself (the root is writable), the kernel
    layer would not. A root whose parent is missing (``.cache/agent`` without ``.cache``)
    could not be made by the child either, so it is left alone; roots outside the workspace
    are never created here."""
    from capgate.paths import is_within

    os.makedirs(home, mode=0o700, exist_ok=True)
    os.makedirs(tmpdir, mode=0o700, exist_ok=True)
    if staged:
        return  # (the real workspace is not written; the child makes them in its overlay)
    for root in policy.filesystem.write:
        if (root != policy.workspace and is_within(root, policy.workspace) and not os.path.lexists(root)
                and os.path.isdir(os.path.dirname(root))):
            try:
                os.makedirs(root, exist_ok=True)
            except OSError:
                pass  # left to the child (and the gate) as before


# What any program needs to read to run at all (libraries, locale, name service, devices,
# /proc). Outside these and the policy's roots nothing is readable to the tree: the real
# HOME, other users, other temp dirs. /etc is listed entry by entry, without these:
_SYSTEM_READ_ROOTS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/opt", "/proc", "/sys",
                      "/dev", "/run/systemd/resolve")
_ETC_SECRETS = frozenset({"shadow", "shadow-", "gshadow", "gshadow-", "sudoers", "sudoers.d", "ssh", "ssl",
                          "pki", "security", "credstore", "credstore.encrypted", "libvirt", "machine-id",
                          "krb5.keytab", "docker", "containers", "wireguard", "NetworkManager", "ppp", "openvpn"})


def system_read_roots() -> list[str]:
    """Landlock's read roots for the system: the directories above and /etc entry by entry
    without ``_ETC_SECRETS``, plus the reviewed ``SYSTEM_FILES`` (the public parts of the
    secret directories, such as the certificates in /etc/ssl and /etc/pki). Every file the
    hooks allow as a system file is readable here too (``SYSTEM_FILES`` feeds both)."""
    roots = list(_SYSTEM_READ_ROOTS)
    try:
        roots += [os.path.join("/etc", name) for name in os.listdir("/etc") if name not in _ETC_SECRETS]
    except OSError:
        pass
    roots += [f for f in system_files() if os.path.exists(f)]
    return roots


def soft_plan(policy: Policy, argv: Sequence[str], *, extra_read: Sequence[str] = ()) -> Any:
    """The Landlock plan for a soft-sandboxed tree (None without Landlock): write only beneath
    ``filesystem.write`` (never device nodes); read only beneath the read roots, the runtime
    read roots, the write roots and the system's own files (``system_read_roots``); no TCP
    connect (the proxy's port is added by the backend when the network is on); no signals to
    processes outside the tree; with ``allowShell: false`` ``execve`` only of the command
    itself (and what its exec needs: loader, ``#!`` interpreter) and the allowed commands.

    The read deny lists *inside* the roots (``.env``, ``*.pem`` in the workspace) are the
    hooks' alone: Landlock can only allow."""
    from capgate._sys.landlock import exec_dependencies, plan
    from capgate.cmdrules import CommandRules

    command = (os.path.realpath(argv[0]),) if argv else ()
    launched = (*command, *(exec_dependencies(command[0]) if command else ()))  # the file and its loader
    exec_allow = CommandRules(policy).exec_allowlist()
    if exec_allow is not None:
        exec_allow = (*exec_allow, *launched)
    fs = policy.filesystem
    reads = [*fs.read, *fs.runtime_read, *system_read_roots(), *extra_read, *launched]
    return plan(exec_allow, fs.write, read_roots=reads, connect_ports=(), scope=True)


def _check_outside_writes(policy: Policy, path: str, what: str, exempt: Sequence[str]) -> None:
    from capgate.paths import is_within

    real = os.path.realpath(path)
    for root in policy.filesystem.write:
        if root in exempt:
            continue
        if is_within(real, root):
            raise PolicyError(f"{what} {real} lies inside the write root {root}; the child could tamper with "
                              "it. Choose a path outside every write root", "filesystem.write")


def _prepare_run_dir(run_dir: str, policy: Policy, policy_file: str, boot_dir: str, home: str,
                     tmpdir: str) -> None:
    from capgate._soft_boot import SITECUSTOMIZE

    os.chmod(run_dir, 0o711)  # noqa: S103  (traversable, not listable: the child runs as this user)
    os.makedirs(boot_dir, mode=0o700)
    with open(os.path.join(boot_dir, "sitecustomize.py"), "x", encoding="utf-8") as fh:
        fh.write(SITECUSTOMIZE)
    os.chmod(os.path.join(boot_dir, "sitecustomize.py"), 0o400)
    from capgate._node_boot import NODE_PRELOAD, NODE_PRELOAD_NAME

    with open(os.path.join(boot_dir, NODE_PRELOAD_NAME), "x", encoding="utf-8") as fh:
        fh.write(NODE_PRELOAD)
    os.chmod(os.path.join(boot_dir, NODE_PRELOAD_NAME), 0o400)
    # capgate itself, for a child interpreter that is not the one capgate is installed in
    # (the system python3, another version): this package alone, never its site-packages
    # neighbours (the hooks import only the standard library).
    os.symlink(os.path.dirname(os.path.realpath(__file__)), os.path.join(boot_dir, "capgate"))
    os.chmod(boot_dir, 0o500)
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.makedirs(tmpdir, mode=0o700, exist_ok=True)
    fd = os.open(policy_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(policy.to_json())


def _print_dry_run(out: IO[str], policy: Policy, backend: str, audit_path: str, home: str, tmpdir: str) -> None:
    data = {
        "backend": backend,
        "softSandbox": backend == "soft",
        "expansion": policy.origin,
        "policySource": policy.source,
        "widened": [{"entry": entry, "from": origin} for entry, origin in policy.widened],
        "runtimeReadRoots": {"note": "added by the soft sandbox so the interpreter works; read-only",
                             "paths": list(policy.filesystem.runtime_read)},
        "runtimeWriteRoots": {"note": "added by the soft sandbox: private TMPDIR, sandbox HOME, /dev/null "
                                      "(fresh per run)", "paths": [home, tmpdir, "/dev/null"]},
        "auditLog": audit_path,
        "policy": policy.to_dict(redact=True),
    }
    out.write(json.dumps(data, indent=2) + "\n")
    out.flush()


def _print_policy_file(out: IO[str], policy: Policy) -> None:
    """The effective policy in the policy file's own format (a file ``policy validate`` accepts)."""
    from capgate.policy.dump import policy_to_file_dict

    out.write(json.dumps(policy_to_file_dict(policy), indent=2, ensure_ascii=False) + "\n")
    out.flush()


# os.uname and sys rather than ``platform``: the same values, without ~2 ms of import on
# every ``capgate run``'s start-up.
_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy", "graalpy": "GraalVM", "ironpython": "IronPython"}


def _os_info() -> dict[str, str]:
    uname = os.uname()
    return {"system": uname.sysname, "release": uname.release, "machine": uname.machine}


def _python_info() -> dict[str, str]:
    name = sys.implementation.name
    return {"version": sys.version.split()[0], "implementation": _IMPLEMENTATIONS.get(name, name),
            "executable": sys.executable}


# ---------------------------------------------------------------------------------------
# capgate policy / check / init
# ---------------------------------------------------------------------------------------
def policy_command(action: str, *, policy: str | None, workspace: str | None,
                   allow_user_expansion: bool = False, environ: Mapping[str, str] | None = None,
                   stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                   grants: Grants | None = None, internal: bool = False) -> int:
    """``capgate policy validate|show``."""
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        effective = _load(policy, workspace, allow_user_expansion, env, grants=grants)
    except PolicyError as exc:
        err.write(policy_error_text(exc))
        return EXIT_USAGE
    if action == "validate":
        out.write(banner_text(f"policy OK: {effective.source or 'built-in defaults'} — {_expansion(effective)}"))
        for line in _widening_lines(effective):
            out.write(banner_text(line))
        for warning in ineffective_entries(effective):
            err.write(banner_text(f"warning: {warning}"))
        return 0
    if internal:
        out.write(effective.to_json(redact=True) + "\n")
    else:
        _print_policy_file(out, effective)
    return 0


def ineffective_entries(policy: Policy) -> list[str]:
    """Entries that can never take effect as the policy stands: hosts while the network is
    off, commands that are not on the sanitized PATH (or not executable files)."""
    from capgate._sys.clean_env import sanitized_path_dirs

    warnings: list[str] = []
    net = policy.network
    if not net.enabled:
        for i, entry in enumerate(net.allowed_domains):
            warnings.append(f"network.allowedDomains[{i}] {json.dumps(entry)} has no effect: network.enabled is "
                            "false (set it to true, or grant --allow-net)")
        for i, entry in enumerate(net.allowed_addresses):
            warnings.append(f"network.allowedAddresses[{i}] {json.dumps(entry)} has no effect: network.enabled is "
                            "false")
    dirs = sanitized_path_dirs(policy)
    for i, entry in enumerate(policy.process.allowed_commands):
        if entry.startswith("/"):
            if not (os.path.isfile(entry) and os.access(entry, os.X_OK)):
                warnings.append(f"process.allowedCommands[{i}] {json.dumps(entry)} has no effect: not an "
                                "executable file")
        elif not any(os.path.isfile(os.path.join(d, entry)) and os.access(os.path.join(d, entry), os.X_OK)
                     for d in dirs):
            warnings.append(f"process.allowedCommands[{i}] {json.dumps(entry)} has no effect: not found on the "
                            f"sanitized PATH ({':'.join(dirs)})")
    return warnings


def check_command(op: str, target: str | Sequence[str], *, policy: str | None, workspace: str | None,
                  allow_user_expansion: bool = False, environ: Mapping[str, str] | None = None,
                  stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                  grants: Grants | None = None, as_json: bool = False) -> int:
    """``capgate check OP TARGET...``: prints the decision and the rule; 0 allowed, 1 denied.
    ``proc.exec`` with more than one word decides the whole command line as ``proc.run``
    would (argument rules, ``sh -c`` and ``env``/``timeout`` wrappers, git's config)."""
    from capgate import ops

    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    words = [target] if isinstance(target, str) else list(target)
    if op not in ops.ALL_OPS:
        err.write(f"capgate: unknown operation {op!r}; one of {', '.join(sorted(ops.ALL_OPS))}\n")
        return EXIT_USAGE
    if not words or (len(words) > 1 and op != ops.PROC_EXEC):
        err.write(f"capgate: {op} takes one TARGET (only proc.exec takes a whole command line)\n")
        return EXIT_USAGE
    try:
        effective = _load(policy, workspace, allow_user_expansion, env, grants=grants)
    except PolicyError as exc:
        err.write(policy_error_text(exc))
        return EXIT_USAGE
    import io

    from capgate.audit import AuditLog
    from capgate.gate import Gate

    gate = Gate(effective, audit=AuditLog(io.StringIO()))
    if len(words) > 1:
        from capgate.proc import decide_command_line

        decision = decide_command_line(words, gate=gate)
    else:
        decision = gate.check(op, words[0])
    verdict = "allow" if decision.allowed else "deny"
    shown = " ".join(words)
    if as_json:
        out.write(json.dumps({"op": op, "target": words[0] if len(words) == 1 else words, "allowed": decision.allowed,
                              "reason": decision.reason, "rule": decision.rule}) + "\n")
    else:
        out.write(f"{verdict}: {op} {shown}\n  reason: {decision.reason}\n  rule: {decision.rule}\n")
    return 0 if decision.allowed else 1


def _write_new_file(target: str, text: str, *, force: bool, mode: int, err: IO[str]) -> bool:
    """Write ``text`` to ``target``, never over an existing file unless ``force``; on failure
    say why on ``err`` and return False (the caller exits with a usage error)."""
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if force else os.O_EXCL)
        fd = os.open(target, flags, mode)
    except FileExistsError:
        err.write(f"capgate: {target} exists; use --force to overwrite\n")
        return False
    except OSError as exc:
        err.write(f"capgate: cannot write {target}: {exc.strerror}\n")
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


def init_command(path: str | None = None, *, force: bool = False, stdout: IO[str] | None = None,
                 stderr: IO[str] | None = None) -> int:
    """``capgate init``: write the policy template (loads as the defaults)."""
    from capgate.init_template import TEMPLATE
    from capgate.policy.defaults import POLICY_FILE_NAME

    out, err = stdout or sys.stdout, stderr or sys.stderr
    target = path or POLICY_FILE_NAME
    if not _write_new_file(target, TEMPLATE, force=force, mode=0o644, err=err):
        return EXIT_USAGE
    out.write(f"capgate: wrote {target} (the built-in defaults; narrow it here; widen in "
              "~/.config/capgate/permissions.json or with the --allow-* grants)\n")
    return 0


def import_command(source_format: str, path: str, *, output: str | None = None, force: bool = False,
                   workspace: str | None = None, stdout: IO[str] | None = None,
                   stderr: IO[str] | None = None) -> int:
    """``capgate policy import --from srt FILE``: the converted policy on stdout (or ``-o``,
    never over an existing file without ``--force``), and on stderr what it cannot express."""
    from capgate.policy.srt_import import import_srt_settings

    out, err = stdout or sys.stdout, stderr or sys.stderr
    if source_format != "srt":  # pragma: no cover - argparse's choices come first
        err.write(f"capgate: usage error: cannot import from {source_format!r} (known: srt)\n")
        return EXIT_USAGE
    try:
        with open(path, "rb") as fh:
            raw = fh.read(1 << 20)
        data = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        err.write(f"capgate: cannot read {path}: {exc.strerror}\n")
        return EXIT_USAGE
    except (UnicodeDecodeError, ValueError) as exc:
        err.write(f"capgate: {path}: not a JSON file ({exc})\n")
        return EXIT_USAGE
    try:
        result = import_srt_settings(data, workspace=workspace)
    except PolicyError as exc:
        err.write(f"capgate: {path}: {exc}\n")
        return EXIT_USAGE
    text = result.to_json()
    if output is None:
        out.write(text)
    elif not _write_new_file(output, text, force=force, mode=0o600, err=err):
        return EXIT_USAGE
    err.write(banner_text(f"imported {path} (srt settings); what capgate cannot express as srt does:"))
    for note in result.notes:
        err.write(banner_text(f"- {note}"))
    if output is not None:
        err.write(banner_text(f"wrote {output}: it widens the defaults, so use it as the user-level file "
                              "(~/.config/capgate/permissions.json) or with --allow-user-expansion"))
    return 0


# ---------------------------------------------------------------------------------------
# capgate image build
# ---------------------------------------------------------------------------------------
def image_command(runtime: str, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``capgate image build``: the container backend's default image, without a registry
    (``capgate.container_shim.build``); prints its name. 125 when the runtime refuses."""
    from capgate.backends.container import _shim_build

    build_image = _shim_build().build_image
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        name = build_image(runtime)
    except BackendUnavailable as exc:
        err.write(banner_text(f"image build failed: {exc}"))
        return EXIT_SANDBOX_REFUSED
    out.write(name + "\n")
    return 0
