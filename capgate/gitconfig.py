"""Refuse to run git in a repository whose own configuration names a program to run.

Why: the agent can write ``.git/config`` (it is in the workspace), and git runs commands
named there on ordinary operations: ``filter.<d>.clean`` on ``git add``, ``smudge`` on
``git checkout``, ``diff.<d>.textconv`` on ``git show``/``diff``, ``merge.<d>.driver``,
``alias.x = !cmd``, ``trailer.<t>.cmd``, ``gpg.program``, ``core.sshCommand``… The argument
rules (``capgate.cmdrules``) only see the command line, and ``GIT_ENV`` can only neutralize a
fixed list of keys, while driver names are free-form. So before every git run, capgate asks
git itself (the one parser that decides what git will do, with the same environment, cwd,
repository discovery and ``include``\\ s) to list the configuration, and refuses the run when
any key from a file or the environment is one that makes git execute something.

What it does not do: stop a concurrent writer that rewrites ``.git/config`` between this
check and git's own read (one tool call racing another); the exec restriction on children
is the layer below that (see ``capgate.proc``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from functools import cache

__all__ = ["GIT_CONFIG_RULE", "dangerous_git_config", "git_config_refusal", "git_in_argv", "only_git_config"]

GIT_CONFIG_RULE = "process.gitConfig"

# Keys (lower-cased; a subsection may contain dots) whose value git runs as a program or shell
# command, or which redirect git to files/commands outside the checked repository.
_RUNS_A_PROGRAM = re.compile(
    r"""^(?:
      core\.(?:sshcommand|fsmonitor|hookspath|pager|editor|askpass|gitproxy|alternaterefscommand|worktree)
    | filter\..+\.(?:clean|smudge|process)
    | diff\..+\.(?:textconv|command) | diff\.external | diff\.tool | diff\.guitool
    | merge\..+\.driver | merge\.tool | merge\.guitool
    | (?:difftool|mergetool)\..+
    | alias\..+
    | credential\..*helper
    | pager\..+ | sequence\.editor | interactive\.difffilter
    | gpg\..* | ssh\..*
    | remote\..+\.(?:uploadpack|receivepack|vcs|proxy)
    | uploadpack\.packobjectshook
    | submodule\..+\.update
    | trailer\..+\.(?:command|cmd)
    | sendemail\..+ | web\.browser | browser\..+ | man\..+ | instaweb\..+ | help\.browser
    | imap\.tunnel | guitool\..+ | citool\..+ | gui\..*editor
    | url\..+\.(?:insteadof|pushinsteadof)
    | include\..+ | includeif\..+
    | protocol\..*allow
    )$""",
    re.VERBOSE,
)
_TIMEOUT = 10.0


@cache
def _own_overrides() -> frozenset[tuple[str, str]]:
    """capgate's ``GIT_ENV`` overrides as (lower-cased key, value): inert by construction."""
    from capgate.cmdrules import GIT_ENV

    count = int(GIT_ENV["GIT_CONFIG_COUNT"])
    return frozenset((GIT_ENV[f"GIT_CONFIG_KEY_{i}"].lower(), GIT_ENV[f"GIT_CONFIG_VALUE_{i}"]) for i in range(count))


def git_in_argv(argv: Sequence[str]) -> bool:
    """True when any word of the command line names git (also behind a trampoline)."""
    return any(os.path.basename(a) == "git" for a in argv)


def only_git_config(argv: Sequence[str]) -> bool:
    """True when every git the command line names is ``git config`` (which reads and edits
    the configuration, never runs it): such a line needs no configuration check."""
    return all(argv[i + 1 : i + 2] == ["config"] for i, a in enumerate(argv) if os.path.basename(a) == "git")


def git_config_refusal(
    argv: Sequence[str], cwd: str, env: Mapping[str, str], find_git: Callable[[str], str | None],
    *, run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> str | None:
    """The one git-configuration check, for every way git is started: ``proc.run``, a
    command ``capgate run`` launches, a program a sandboxed Python child starts
    (``capgate.soft``). A reason to refuse ``argv`` in ``cwd`` with ``env``, or None.

    ``find_git(word)``: the git file a word of ``argv`` naming git would run (None: none
    that may run, so nothing to check). ``run``: how to start the listing git (the hooks
    pass one that may start exactly that process). A line whose every git is ``git config``
    needs no check: it reads or edits the configuration, never runs it (so a user can repair
    a refused repository)."""
    argv = list(argv)  # (only_git_config compares slices with a list)
    if not git_in_argv(argv) or only_git_config(argv):
        return None
    for word in argv:
        if os.path.basename(word) != "git":
            continue
        git = find_git(word)
        if git is not None:
            return dangerous_git_config(git, cwd, env, run=run)
    return None


def dangerous_git_config(
    git: str, cwd: str, env: Mapping[str, str],
    *, run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> str | None:
    """A reason to refuse running git in ``cwd``, or None when its configuration is inert.

    ``env`` is the environment git will run with. Every scope is checked (local, worktree,
    global — the sandbox HOME is the agent's —, included files, and command-scope settings
    from ``GIT_CONFIG_COUNT``/``-c``, which a sandboxed program can set) except capgate's own
    overrides (``GIT_ENV``: exact key and value) and the system file when git reads the real
    one (``/etc/gitconfig`` is the administrator's, outside the threat model; one named by
    ``GIT_CONFIG_SYSTEM`` is checked). Fails closed: a configuration git cannot list is a
    reason to refuse.
    """
    trusted_system = not env.get("GIT_CONFIG_SYSTEM")
    try:
        listed = run(
            [git, "config", "--list", "--includes", "--show-scope", "-z"],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not list the repository's git configuration ({exc})"
    if listed.returncode != 0:
        detail = listed.stderr.decode(errors="replace").strip().splitlines()
        return f"could not list the repository's git configuration: {detail[-1] if detail else listed.returncode}"
    fields = listed.stdout.split(b"\0")[:-1]  # every field ends with NUL
    if len(fields) % 2:
        return "could not parse the repository's git configuration listing"
    for scope, entry in zip(fields[0::2], fields[1::2], strict=True):
        key_b, _, value_b = entry.partition(b"\n")
        key = key_b.decode(errors="replace").lower()
        if scope == b"command" and (key, value_b.decode(errors="replace")) in _own_overrides():
            continue
        if scope == b"system" and trusted_system:
            continue
        if _RUNS_A_PROGRAM.match(key):
            return (
                f"the repository's git configuration ({scope.decode(errors='replace')} scope) sets {key!r}, "
                "which makes git run a program or leave the repository; remove it to run git here"
            )
    return None
