"""The process decision table: which executable may run, with which arguments.

``CommandRules(policy)`` answers two questions, and never raises for a denial:

* ``decide(target)`` — may this command (a bare name or an absolute path) run at all? This is
  what ``Gate.check("proc.exec", target)`` asks.
* ``decide_argv(argv, cwd)`` — may this exact command line run? Returns the decision and the
  **resolved executable** that ``capgate.proc`` must exec (check and use are the same file).

What is enforced:

* **Lookup.** A bare name is searched only on the sanitized PATH
  (``capgate._sys.clean_env.sanitized_path_dirs``): fixed system directories, never the
  workspace, the cwd or a write root, never a directory another user can write. A path with a
  slash must be absolute (``./git``, ``bin/tool`` are refused: they name files the agent may
  have planted). The file found is resolved (symlinks) and must be a regular executable file.
* **Allowlist on the resolved file.** ``process.allowedCommands`` entries (names looked up the
  same way, absolute paths resolved) become a set of allowed *files*. A command runs only when
  its resolved file is in that set *and* the name it is invoked under (``argv[0]``'s base
  name, which multi-call binaries dispatch on) is an allowed name: busybox allowed as ``ls``
  cannot be invoked as ``sh``, and a symlink named ``sneaky`` to an allowed file is refused.
* **Never from a write root.** An executable inside a ``filesystem.write`` root, or writable by
  group/others, is refused even if listed: the agent could rewrite it.
* **Shells.** With ``allowShell: false`` every shell (``sh``, ``bash``, ``dash``, ``zsh``,
  ``ksh``, ``fish``, ``csh``, …) is refused — as the command, as the resolved file's name and
  as the program a trampoline would run — and so is any string command. With
  ``allowShell: true`` the shells count as listed.
* **Trampolines** (``env``, ``xargs``, ``nohup``, ``timeout``, ``nice``, ``stdbuf``, ``sudo``,
  ``su``, ``busybox``, ``find -exec`` and more, see ``TRAMPOLINES``) are refused unless listed;
  when listed, the program they would run is decided too, recursively, with its arguments.
  ``env NAME=value`` may not set a variable ``clean_env`` never passes (``LD_PRELOAD``…);
  ``xargs`` may only run a program without argument rules (its arguments come from stdin,
  where no rule can see them); a trampoline whose grammar we cannot follow is refused.
* **Argument rules.** Built-in rules for ``git`` (``GIT_ARGUMENT_RULES``: no ``-c``,
  ``--config-env``, ``--exec-path``, ``--upload-pack``/``-u``, ``--receive-pack``,
  ``--template``, ``-C``/``--git-dir``/``--work-tree``, ``ext::``/``fd::`` transports, dangerous
  config keys such as ``core.sshCommand``/``core.fsmonitor``/``core.hooksPath``, subcommands
  that run commands), for data tools with an option that runs a command (``capgate.argrules``:
  ``tar --to-command/-I/--checkpoint-action``, ``sort --compress-program``, ``rsync -e``, …,
  rule ``process.builtinArguments``) plus ``process.deniedArguments``: per command name, ``fnmatch`` patterns
  (case-sensitive) that no argument may match.

What it does not do: judge what an allowed program does with its arguments beyond these rules
(an allowed interpreter runs whatever script it is given — list interpreters knowingly), or
judge files the program opens (the child is outside the fs gate; limits and the container
backend are the containment there).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING

from capgate._sys.clean_env import is_never_passed, sanitized_path_dirs
from capgate.argrules import BUILTIN_RULES, builtin_denial
from capgate.decision import Decision
from capgate.paths import is_within

if TYPE_CHECKING:
    from capgate._sys.landlock import Plan
    from capgate.policy.model import Policy

__all__ = ["GIT_ARGUMENT_RULES", "GIT_ENV", "SHELLS", "SHELL_RUNNERS", "TRAMPOLINES", "CommandRules"]

SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "ash", "fish", "csh", "tcsh",
     "yash", "posh", "rbash", "elvish", "nu", "xonsh", "rc", "es"}
)

# Programs whose input (a Makefile) names the shell that runs each line, so no exec rule can
# follow them: they count as shells.
SHELL_RUNNERS = frozenset({"make", "gmake", "bmake", "pmake", "remake"})

# Programs whose job is to run another program. name -> how to find the inner argv.
TRAMPOLINES = frozenset(
    {"env", "xargs", "nohup", "timeout", "nice", "ionice", "stdbuf", "sudo", "su", "doas", "runuser",
     "busybox", "toybox", "find", "setsid", "chroot", "unshare", "nsenter", "taskset", "chrt", "flock",
     "time", "watch", "script", "strace", "ltrace", "gdb", "valgrind", "systemd-run", "setpriv",
     "catchsegv", "parallel", "entr", "rlwrap", "dbus-launch", "start-stop-daemon", "fakeroot",
     "proot", "firejail", "bwrap", "prlimit", "sg", "newgrp", "pkexec", "ssh-agent", "expect",
     "caffeinate", "command", "exec", "builtin", "eval", "ld.so", "ld-linux.so.2", "ld-linux-x86-64.so.2"}
)

# git: arguments (exact or prefix before '=') that make git run a program or read config
# that runs one, or point it at a repository other than the checked cwd.
_GIT_DENY_EXACT = frozenset({"-c", "-C", "--exec-path", "--upload-pack", "--receive-pack", "--config-env",
                             "--git-dir", "--work-tree", "--template", "--exec", "--extcmd", "-x",
                             "--namespace", "--super-prefix", "--config"})
_GIT_DENY_PREFIX = ("--exec-path=", "--upload-pack=", "--receive-pack=", "--config-env=", "--git-dir=",
                    "--work-tree=", "--template=", "--exec=", "--extcmd=", "--super-prefix=", "--config=")
_GIT_DENY_SUBCOMMANDS = frozenset({"filter-branch", "daemon", "shell", "upload-pack", "receive-pack",
                                   "upload-archive", "credential", "difftool", "mergetool", "instaweb",
                                   "web--browse", "remote-ext", "remote-fd", "fsmonitor--daemon"})
_GIT_DANGEROUS_KEY = re.compile(
    r"(?i)(?:^|[\s=])?(core\.(sshcommand|fsmonitor|hookspath|pager|editor|askpass|gitproxy|alternaterefscommand"
    r"|worktree)|credential\.|filter\.|diff\.[^=]*\.(textconv|command)|diff\.external|merge\.[^=]*\.driver"
    r"|uploadpack\.|receivepack\.|protocol\.|url\.|include\.|includeif\.|alias\.|sequence\.editor"
    r"|gpg\.|ssh\.|http\.proxy|https?\.[^=]*proxy|remote\.[^=]*\.(uploadpack|receivepack|proxy|vcs)"
    r"|submodule\.|sendemail\.|pager\.|interactive\.difffilter|gc\.auto|safe\.directory|init\.templatedir"
    r"|transfer\.|fetch\.fsck|core\.sharedrepository|instaweb\.|web\.browser|browser\.|man\.|help\.)"
)
GIT_ARGUMENT_RULES = {
    "deny_exact": _GIT_DENY_EXACT,
    "deny_prefix": _GIT_DENY_PREFIX,
    "deny_subcommands": _GIT_DENY_SUBCOMMANDS,
    "dangerous_config_key": _GIT_DANGEROUS_KEY.pattern,
}
# Set for every git child: no system/global config, no prompts, and neutralize the config keys
# a hostile repository's own .git/config could use to run code (command-line level config,
# GIT_CONFIG_COUNT, overrides the repository's file).
_GIT_OVERRIDES = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.pager", "cat"),
    ("core.editor", "false"),
    ("core.askPass", ""),
    ("credential.helper", ""),
    ("protocol.ext.allow", "never"),
    ("protocol.fd.allow", "never"),
    ("sequence.editor", "false"),
)
GIT_ENV: dict[str, str] = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_CONFIG_COUNT": str(len(_GIT_OVERRIDES)),
    **{f"GIT_CONFIG_KEY_{i}": k for i, (k, _v) in enumerate(_GIT_OVERRIDES)},
    **{f"GIT_CONFIG_VALUE_{i}": v for i, (_k, v) in enumerate(_GIT_OVERRIDES)},
}

_MAX_DEPTH = 4
# Where git finds its helper programs (``git --exec-path``) on the distributions we know.
_GIT_EXEC_PATHS = ("/usr/lib/git-core", "/usr/libexec/git-core", "/usr/local/libexec/git-core")


def _is_executable_file(path: str) -> bool:
    return _executable_stat(path) is not None


def _executable_stat(path: str) -> os.stat_result | None:
    """``stat(path)`` when it is a regular file we may execute, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK) else None


_MEMO_MAX = 256
_MEMO_ARGV_MAX = 4096  # characters: the memo holds at most _MEMO_MAX short command lines


def _file_signature(path: str) -> tuple[int, ...] | None:
    """What ``_executable_stat`` would see of ``path`` (following links), as a comparable
    tuple; None when it is not an executable regular file any more."""
    st = _executable_stat(path)
    if st is None:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CommandRules:
    """The compiled process rules of one policy (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        proc = policy.process
        self.allow_shell = proc.allow_shell
        self._write_roots = tuple(os.path.realpath(p) for p in policy.filesystem.write)
        self._names: set[str] = set()
        self._files: set[str] = set()
        self._entry_for_file: dict[str, str] = {}
        self._exec_allowlist: tuple[str, ...] | None = None
        self._exec_plan: Plan | bool | None = False  # False: not built yet
        # (argv, cwd) -> (path dirs, file found, its signature, decision, resolved): decide_argv
        self._memo: dict[tuple[tuple[str, ...], str | None],
                         tuple[tuple[str, ...], str, tuple[int, ...], Decision, str]] = {}
        dirs = sanitized_path_dirs(policy)
        for i, entry in enumerate(proc.allowed_commands):
            if entry.startswith("/"):
                real = os.path.realpath(entry)
                self._names.add(os.path.basename(entry))
                self._names.add(os.path.basename(real))
            else:
                self._names.add(entry)
                found = self._lookup(entry, dirs)
                if found is None:
                    continue
                real = os.path.realpath(found)
            self._files.add(real)
            self._entry_for_file.setdefault(real, f"process.allowedCommands[{i}]")
        if self.allow_shell:
            for shell in SHELLS:
                found = self._lookup(shell, dirs)
                if found is not None:
                    self._names.add(shell)
                    self._files.add(os.path.realpath(found))
                    self._entry_for_file.setdefault(os.path.realpath(found), "process.allowShell")

    def exec_allowlist(self) -> tuple[str, ...] | None:
        """The files a ``proc.run`` child tree may execute, or None for no restriction.

        With ``allowShell: false``: the allowed command files, what the kernel opens to run
        them (ELF loader, ``#!`` interpreter — never a shell), and git's own helper directory
        when git is allowed. ``capgate._sys.landlock`` enforces it, so an allowed program that
        runs ``/bin/sh -c`` by itself (a git filter, ``tar --to-command``, ``awk`` ``system()``)
        gets ``EACCES``. With ``allowShell: true`` a shell may run anything, so None.
        """
        if self.allow_shell:
            return None
        if self._exec_allowlist is None:
            from capgate._sys.landlock import exec_dependencies

            allowed: set[str] = set()
            for path in self._files:
                allowed.add(path)
                for dependency in exec_dependencies(path):
                    if os.path.basename(dependency) not in SHELLS:
                        allowed.add(dependency)
                if os.path.basename(path) == "git":
                    allowed.update(d for d in _GIT_EXEC_PATHS if os.path.isdir(d))
            self._exec_allowlist = tuple(sorted(allowed))
        return self._exec_allowlist

    def exec_plan(self) -> Plan | None:
        """``exec_allowlist`` as a Landlock plan, built once (None: no restriction, or no Landlock)."""
        if self._exec_plan is False:
            from capgate._sys.landlock import plan

            self._exec_plan = plan(self.exec_allowlist(), None) if not self.allow_shell else None
        return self._exec_plan  # type: ignore[return-value]

    # -- lookup -------------------------------------------------------------------------
    @staticmethod
    def _lookup(name: str, dirs: Sequence[str]) -> str | None:
        found = CommandRules._lookup_stat(name, dirs)
        return found[0] if found is not None else None

    @staticmethod
    def _lookup_stat(name: str, dirs: Sequence[str]) -> tuple[str, os.stat_result] | None:
        for directory in dirs:
            candidate = directory + "/" + name
            st = _executable_stat(candidate)
            if st is not None:
                return candidate, st
        return None

    def resolve(
        self, target: str, cwd: str | None = None, path_dirs: tuple[str, ...] | None = None
    ) -> tuple[str | None, Decision | None]:
        """The real file ``target`` names, or a denial saying why it names none we accept."""
        resolved, _st, denial = self._resolve(target, cwd, path_dirs)
        return resolved, denial

    def _resolve(
        self, target: str, cwd: str | None, path_dirs: tuple[str, ...] | None
    ) -> tuple[str | None, os.stat_result | None, Decision | None]:
        """``resolve`` plus the ``stat`` of the file (taken through ``target``'s own name, so
        it is the resolved file's)."""
        if not isinstance(target, str) or not target or "\x00" in target:
            return None, None, Decision.deny(
                "a command must be a non-empty string without NUL", "process.argv", str(target)
            )
        if "/" in target:
            if not target.startswith("/"):
                return None, None, Decision.deny(
                    "a relative command path is never run (it may name a planted file); "
                    "use a bare name or an absolute path",
                    "process.path",
                    target,
                )
            st = _executable_stat(target)
            found = (target, st) if st is not None else None
        else:
            dirs = path_dirs if path_dirs is not None else sanitized_path_dirs(self.policy, cwd=cwd)
            found = self._lookup_stat(target, dirs)
        if found is None:
            return None, None, Decision.deny(
                "not found as an executable file on the sanitized PATH", "process.allowedCommands", target
            )
        return os.path.realpath(found[0]), found[1], None

    # -- decisions ----------------------------------------------------------------------
    def decide(self, target: str) -> Decision:
        """May ``target`` (name or absolute path) run at all (arguments not known)?"""
        decision, _resolved = self._decide_program(target, None)
        return decision

    def allowed_executable(self, target: str, cwd: str | None, path_dirs: tuple[str, ...] | None = None) -> str | None:
        """The resolved file ``target`` would run as, when it is an allowed command; else None."""
        decision, resolved = self._decide_program(target, cwd, path_dirs)
        return resolved if decision.allowed else None

    def decide_argv(
        self, argv: Sequence[str], cwd: str | None = None, *, path_dirs: tuple[str, ...] | None = None
    ) -> tuple[Decision, str | None]:
        """Decide one command line; returns the decision and the resolved executable.

        ``path_dirs``: ``sanitized_path_dirs(policy, cwd=cwd)`` when the caller has it already.
        """
        if isinstance(argv, (str, bytes)):
            return Decision.deny(
                "a string command is a shell command line; pass an argv list", "process.allowShell", str(argv)[:200]
            ), None
        try:
            args = [a if isinstance(a, str) else os.fsdecode(a) for a in argv]
        except TypeError:
            return Decision.deny("argv items must be str or path-like", "process.argv"), None
        if not args:
            return Decision.deny("empty argv", "process.argv"), None
        for a in args:
            if "\x00" in a:
                return Decision.deny("an argument holds a NUL byte", "process.argv", args[0]), None
        if path_dirs is None:
            return self._decide(args, cwd, 0, path_dirs)
        # The same command line again (an agent's loop, a test suite): the earlier allowed
        # decision holds while the PATH directories are the very ones it was made with (the
        # ``sanitized_path_dirs`` tuple is rebuilt whenever any of them changes), the name
        # still leads to the same file, and the resolved path it approved is still that file
        # (inode, mode, owner, size, times of both; the run executes the resolved path).
        # Denials, command lines with a trampoline and long ones are decided afresh.
        args = [str.__str__(a) for a in args]  # plain str: a subclass could fake its hash or text
        key = (tuple(args), cwd)
        memo = self._memo.get(key)
        if (memo is not None and memo[0] is path_dirs and _file_signature(memo[1]) == memo[2]
                and _file_signature(memo[4]) == memo[2]):
            return memo[3], memo[4]
        decision, resolved = self._decide(args, cwd, 0, path_dirs)
        if decision.allowed and resolved is not None and sum(map(len, args)) <= _MEMO_ARGV_MAX:
            head = args[0]
            found = head if "/" in head else self._lookup(head, path_dirs)
            if (found is not None and os.path.realpath(found) == resolved
                    and not ({os.path.basename(head), os.path.basename(resolved)} & TRAMPOLINES)):
                signature = _file_signature(found)
                if signature is not None and _file_signature(resolved) == signature:
                    if len(self._memo) >= _MEMO_MAX:
                        self._memo.clear()
                    self._memo[key] = (path_dirs, found, signature, decision, resolved)
        return decision, resolved

    def _decide(
        self, args: list[str], cwd: str | None, depth: int, path_dirs: tuple[str, ...] | None = None
    ) -> tuple[Decision, str | None]:
        head = args[0]
        decision, resolved = self._decide_program(head, cwd, path_dirs)
        if not decision.allowed or resolved is None:
            return decision, None
        names = {os.path.basename(head), os.path.basename(resolved)}
        rest = args[1:]
        trampoline = names & TRAMPOLINES
        if trampoline:
            name = sorted(trampoline)[0]
            if depth >= _MAX_DEPTH:
                return Decision.deny("trampolines nested too deep", "process.trampoline", head), None
            inner, why = _inner_argv(name, rest)
            if why is not None:
                return Decision.deny(why, "process.trampoline", head), None
            if inner is None:
                # The trampoline runs nothing this time (``find`` without -exec): judge it alone.
                pass
            else:
                for command in inner:
                    if not command:
                        return Decision.deny(f"{name} with no program to run", "process.trampoline", head), None
                    sub, _sub_resolved = self._decide(command, cwd, depth + 1, path_dirs)
                    if not sub.allowed:
                        return Decision.deny(
                            f"{name} would run {command[0]!r}: {sub.reason}", sub.rule, head
                        ), None
                    if name == "xargs" and self._has_argument_rules(command[0]):
                        return Decision.deny(
                            f"xargs would pass unchecked arguments to {command[0]!r}, which has argument rules",
                            "process.trampoline",
                            head,
                        ), None
        arg_decision = self._check_arguments(names, rest, head)
        if arg_decision is not None:
            return arg_decision, None
        return decision, resolved

    def _decide_program(
        self, target: str, cwd: str | None, path_dirs: tuple[str, ...] | None = None
    ) -> tuple[Decision, str | None]:
        resolved, st, denial = self._resolve(target, cwd, path_dirs)
        if denial is not None or resolved is None or st is None:
            return denial or Decision.deny("not found", "process.allowedCommands", target), None
        invoked = os.path.basename(target)
        real_name = os.path.basename(resolved)
        if not self.allow_shell and ({invoked, real_name} & SHELLS):
            return Decision.deny(
                "shells are not allowed (allowShell is false)", "process.allowShell", target
            ), None
        if not self.allow_shell and ({invoked, real_name} & SHELL_RUNNERS):
            return Decision.deny(
                f"{invoked} runs its recipes through a shell it lets the input choose (needs allowShell)",
                "process.allowShell", target
            ), None
        if resolved not in self._files:
            return Decision.deny(
                f"{resolved} is not an allowed command", "process.allowedCommands", target
            ), None
        if invoked not in self._names:
            return Decision.deny(
                f"{invoked!r} is not an allowed command name (it resolves to {resolved})",
                "process.allowedCommands",
                target,
            ), None
        for root in self._write_roots:
            if is_within(resolved, root):
                return Decision.deny(
                    f"{resolved} lies in a write root ({root}): the agent could rewrite it",
                    "process.writeRoot",
                    target,
                ), None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):  # the resolved file's mode (stat follows links)
            return Decision.deny(
                f"{resolved} is writable by group or others", "process.writeRoot", target
            ), None
        rule = self._entry_for_file.get(resolved, "process.allowedCommands")
        return Decision.allow(f"allowed command {resolved}", rule, target), resolved

    def _has_argument_rules(self, command: str) -> bool:
        name = os.path.basename(command)
        return name == "git" or name in BUILTIN_RULES or bool(self.policy.process.denied_arguments_for(name))

    def _check_arguments(self, names: set[str], rest: list[str], head: str) -> Decision | None:
        if "git" in names:
            why = _git_denial(rest)
            if why is not None:
                return Decision.deny(why, "process.gitArguments", head)
        for name in sorted(names):
            why = builtin_denial(name, rest)
            if why is not None:
                return Decision.deny(why, "process.builtinArguments", head)
            for i, pattern in enumerate(self.policy.process.denied_arguments_for(name)):
                for arg in rest:
                    if fnmatch.fnmatchcase(arg, pattern):
                        return Decision.deny(
                            f"argument {arg[:80]!r} matches denied pattern {pattern!r}",
                            f"process.deniedArguments.{name}[{i}]",
                            head,
                        )
        return None


_GIT_CONFIG_READS = frozenset({"--get", "--get-all", "--get-regexp", "--get-urlmatch", "--list", "-l"})
_GIT_CONFIG_REMOVALS = frozenset({"--unset", "--unset-all", "--remove-section", "unset"})
_GIT_CONFIG_WRITES = frozenset({"--add", "--replace-all", "--unset", "--unset-all", "--edit", "-e",
                                "--rename-section", "--remove-section", "set", "unset", "edit"})


def _git_denial(rest: list[str]) -> str | None:
    subcommand: str | None = None
    words = set(rest)
    # Reading a key, or removing one, never makes git run it (and lets a user repair a repo
    # that ``capgate.gitconfig`` refuses); setting one is refused.
    reading_config = bool(words & (_GIT_CONFIG_READS | _GIT_CONFIG_REMOVALS)) and not words & (
        _GIT_CONFIG_WRITES - _GIT_CONFIG_REMOVALS)
    for arg in rest:
        if arg in _GIT_DENY_EXACT or arg.startswith(_GIT_DENY_PREFIX):
            if arg in ("-x",) and subcommand not in ("rebase", "difftool", "mergetool", None):
                continue
            return f"git argument {arg!r} can run a program or change the repository checked"
        if arg == "--bare" and subcommand is None:
            return "git --bare makes the cwd itself the repository (not the one whose configuration is checked)"
        if arg.startswith("-c") and subcommand is None and len(arg) > 2:
            return f"git argument {arg!r} sets configuration"
        if arg.startswith("-C") and subcommand is None and len(arg) > 2:
            return f"git argument {arg!r} changes the repository checked"
        if arg in ("-u",) and subcommand in ("clone", "fetch", "pull", "ls-remote", "archive"):
            return "git -u (upload-pack) runs a program"
        if arg.startswith("-u") and len(arg) > 2 and subcommand in ("clone", "fetch", "pull", "ls-remote"):
            return "git -u (upload-pack) runs a program"
        if arg.lower().startswith(("ext::", "fd::")) or ("::" in arg and arg.split("::", 1)[0].isalpha()):
            return f"git remote-helper transport {arg.split('::', 1)[0]!r}:: is refused"
        if _GIT_DANGEROUS_KEY.search(arg) and (subcommand is None or "=" in arg or (
                subcommand == "config" and not reading_config)):
            return f"git argument {arg[:80]!r} names a configuration key that can run a program"
        if subcommand is None and not arg.startswith("-"):
            subcommand = arg
            if arg in _GIT_DENY_SUBCOMMANDS:
                return f"git {arg} runs programs"
            continue
        if subcommand == "submodule" and arg == "foreach":
            return "git submodule foreach runs shell commands"
        if subcommand == "bisect" and arg == "run":
            return "git bisect run runs a command"
        if subcommand == "rebase" and (arg.startswith("--exec") or arg == "-x" or arg.startswith("-x")):
            return "git rebase --exec runs a command"
    return None


# -- trampoline grammars -----------------------------------------------------------------
_TIMEOUT_WITH_VALUE = frozenset({"-s", "--signal", "-k", "--kill-after"})
_NICE_WITH_VALUE = frozenset({"-n", "--adjustment"})
_STDBUF_WITH_VALUE = frozenset({"-i", "-o", "-e", "--input", "--output", "--error"})
_XARGS_WITH_VALUE = frozenset({"-a", "--arg-file", "-d", "--delimiter", "-E", "-e", "--eof", "-I", "-L",
                               "--max-lines", "-n", "--max-args", "-P", "--max-procs", "-s", "--max-chars",
                               "--process-slot-var"})
_SUDO_WITH_VALUE = frozenset({"-u", "--user", "-g", "--group", "-h", "--host", "-p", "--prompt", "-C",
                              "--close-from", "-D", "--chdir", "-r", "--role", "-t", "--type", "-T",
                              "--command-timeout", "-U", "--other-user"})
_SUDO_SHELL = frozenset({"-s", "--shell", "-i", "--login", "-e", "--edit"})
_IONICE_WITH_VALUE = frozenset({"-c", "--class", "-n", "--classdata", "-p", "--pid", "-P", "--pgid", "-u", "--uid"})
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})


def _skip_options(
    rest: list[str], with_value: frozenset[str], *, assignments: bool = False
) -> tuple[list[str], str | None]:
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            return rest[i + 1 :], None
        if assignments and "=" in arg and not arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if is_never_passed(name):
                return [], f"would set {name}, a variable a child never gets"
            i += 1
            continue
        if arg.startswith("-") and arg != "-":
            if arg in with_value:
                i += 2
                continue
            i += 1
            continue
        return rest[i:], None
    return [], None


# GNU env's options, read the way getopt_long reads them: short clusters (``-iu NAME``) and
# unambiguous long prefixes (``--uns``). Value: True = takes one, "opt" = only with ``=``.
_ENV_SHORT_FLAGS = frozenset("0iv")
_ENV_SHORT_VALUE = frozenset("uCSa")
_ENV_LONG: dict[str, bool | str] = {
    "null": False, "ignore-environment": False, "unset": True, "chdir": True, "split-string": True,
    "argv0": True, "debug": False, "block-signal": "opt", "default-signal": "opt", "ignore-signal": "opt",
    "list-signal-handling": False, "help": False, "version": False,
}
_ENV_REFUSED = {
    "S": "env -S/--split-string splits a string into a command line (a shell-like string)",
    "split-string": "env -S/--split-string splits a string into a command line (a shell-like string)",
    "C": "env -C/--chdir runs the program in another directory than the checked cwd",
    "chdir": "env -C/--chdir runs the program in another directory than the checked cwd",
}


def _env_inner(rest: list[str]) -> tuple[list[str], str | None]:
    """The command ``env rest…`` runs (empty: none), or a reason to refuse; unknown or
    ambiguous options are refused rather than guessed."""
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            return rest[i + 1 :], None
        if arg == "-":  # an old spelling of -i
            i += 1
            continue
        if arg.startswith("--"):
            name, has_value, _value = arg[2:].partition("=")
            matches = [o for o in _ENV_LONG if o == name] or [o for o in _ENV_LONG if o.startswith(name)]
            if len(matches) != 1 or not name:
                return [], f"env option {arg[:40]!r} is unknown or ambiguous"
            option = matches[0]
            if option in _ENV_REFUSED:
                return [], _ENV_REFUSED[option]
            if option in ("help", "version", "list-signal-handling"):
                return [], None  # prints, runs nothing
            if _ENV_LONG[option] is True and not has_value:
                i += 1  # the value is the next argument
            i += 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            for j, letter in enumerate(arg[1:], start=1):
                if letter in _ENV_REFUSED:
                    return [], _ENV_REFUSED[letter]
                if letter in _ENV_SHORT_FLAGS:
                    continue
                if letter in _ENV_SHORT_VALUE:
                    if j == len(arg) - 1:
                        i += 1  # the value is the next argument
                    break
                return [], f"env option -{letter} is unknown"
            i += 1
            continue
        if "=" in arg:
            variable = arg.split("=", 1)[0]
            if is_never_passed(variable):
                return [], f"would set {variable}, a variable a child never gets"
            i += 1
            continue
        return rest[i:], None
    return [], None


def _inner_argv(name: str, rest: list[str]) -> tuple[list[list[str]] | None, str | None]:
    """The command line(s) the trampoline ``name`` would run, or a reason to refuse it."""
    if name == "env":
        inner, why = _env_inner(rest)
        if why:
            return None, why
        return ([inner] if inner else None), None
    if name == "nohup" or name == "setsid" or name == "time":
        inner, _ = _skip_options(rest, frozenset({"-o", "--output", "-f", "--format"}))
        return [inner], None
    if name == "timeout":
        inner, _ = _skip_options(rest, _TIMEOUT_WITH_VALUE)
        return [inner[1:]] if inner else [[]], None  # first positional is the duration
    if name == "nice":
        inner, _ = _skip_options(rest, _NICE_WITH_VALUE)
        return [inner], None
    if name == "ionice":
        inner, _ = _skip_options(rest, _IONICE_WITH_VALUE)
        return [inner], None
    if name == "stdbuf":
        inner, _ = _skip_options(rest, _STDBUF_WITH_VALUE)
        return [inner], None
    if name == "xargs":
        inner, _ = _skip_options(rest, _XARGS_WITH_VALUE)
        return [inner or ["echo"]], None
    if name in ("sudo", "doas"):
        if any(a in _SUDO_SHELL for a in rest):
            return None, f"{name} -s/-i/-e starts a shell or an editor"
        inner, _ = _skip_options(rest, _SUDO_WITH_VALUE)
        return [inner], None
    if name in ("su", "runuser", "sg", "newgrp", "pkexec"):
        return None, f"{name} runs a shell or a string command"
    if name in ("busybox", "toybox"):
        inner = [a for a in rest if not a.startswith("-")]
        return ([inner] if inner else None), None
    if name == "find":
        commands: list[list[str]] = []
        i = 0
        while i < len(rest):
            if rest[i] in _FIND_EXEC:
                # GNU find ends -exec at ";" or at "+" right after "{}" (a "+" elsewhere is an
                # ordinary argument); no terminator is an error, refused here.
                j = i + 1
                while j < len(rest) and not (rest[j] == ";" or (rest[j] == "+" and rest[j - 1] == "{}")):
                    j += 1
                if j >= len(rest):
                    return None, f"find {rest[i]} without a terminating ';' or '{{}} +'"
                command = rest[i + 1 : j]
                if rest[i] in ("-execdir", "-okdir") and command and os.path.basename(command[0]) == "git":
                    return None, (f"find {rest[i]} would run git in other directories, whose repository "
                                  "configuration is not checked")
                commands.append(command)
                i = j
            elif rest[i] in ("-fprint", "-fprint0", "-fprintf", "-fls", "-delete"):
                return None, f"find {rest[i]} writes or deletes files outside the gate"
            i += 1
        return (commands or None), None
    return None, f"{name} runs another program in a way capgate does not parse; it is refused"
