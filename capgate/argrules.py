"""Built-in argument rules for data tools that have an option to run a command.

Why: users allow ``tar``, ``sort``, ``rsync``… as data tools with ``allowShell: false``, but
each has an option whose value is a command line it hands to ``/bin/sh -c`` (or a program it
execs): a trampoline that is not in ``capgate.cmdrules.TRAMPOLINES``. These rules refuse those
options with a clear reason, before anything runs.

How options are matched, the way GNU ``getopt_long`` reads them: a long option may be
abbreviated to any unambiguous prefix (``--to-com=…`` is ``--to-command``), so a long option
is refused when its name is a prefix of a refused name (unless it is exactly a harmless option,
such as tar's ``--checkpoint``); a short-option cluster (``-xvIcmd``) is read letter by letter
until a letter that takes a value, which ends the cluster. tar's old-style first argument
(``tar cIf …``) is a cluster too.

What it does not do: understand every program. A program not listed here is judged by its
name alone (plus ``process.deniedArguments``); list interpreters and build tools (``make``,
``awk``, ``sed`` with its ``e`` command) knowingly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUILTIN_RULES", "builtin_denial"]


@dataclass(frozen=True)
class ProgramRules:
    """The options of one program that run a command."""

    long_denied: frozenset[str] = frozenset()  # names without the leading ``--``
    long_exact_ok: frozenset[str] = frozenset()  # exact names that are prefixes of a denied one
    short_denied: frozenset[str] = frozenset()  # letters
    short_with_value: frozenset[str] = frozenset()  # letters whose value ends a cluster
    exact_denied: frozenset[str] = frozenset()  # whole arguments (``zip -TT``)
    old_style_cluster: bool = False  # the first argument may be a dash-less cluster (tar)
    remote_archive: bool = False  # ``host:file`` makes tar run rsh/ssh (unless --force-local)


_TAR = ProgramRules(
    long_denied=frozenset({"to-command", "checkpoint-action", "use-compress-program", "rsh-command",
                           "rmt-command", "info-script", "new-volume-script"}),
    long_exact_ok=frozenset({"checkpoint"}),
    short_denied=frozenset("IF"),
    short_with_value=frozenset("bCfFgHIKLNTVX"),
    old_style_cluster=True,
    remote_archive=True,
)

BUILTIN_RULES: dict[str, ProgramRules] = {
    "tar": _TAR,
    "gtar": _TAR,
    "sort": ProgramRules(long_denied=frozenset({"compress-program"})),
    "split": ProgramRules(long_denied=frozenset({"filter"})),
    "rsync": ProgramRules(long_denied=frozenset({"rsh", "rsync-path"}), short_denied=frozenset("e"),
                          short_with_value=frozenset("BfMT")),
    "zip": ProgramRules(long_denied=frozenset({"unzip-command"}), exact_denied=frozenset({"-TT"})),
    "sdiff": ProgramRules(long_denied=frozenset({"diff-program"})),
    "diff3": ProgramRules(long_denied=frozenset({"diff-program"})),
    "man": ProgramRules(long_denied=frozenset({"pager", "html", "browser", "preprocessor"}),
                        short_denied=frozenset("PHp"), short_with_value=frozenset("CMSemLrRsP")),
}


def builtin_denial(name: str, rest: list[str]) -> str | None:
    """Why ``name rest…`` would run a command through one of its options, or None."""
    rules = BUILTIN_RULES.get(name)
    if rules is None:
        return None
    force_local = any(arg == "--force-local" for arg in rest)
    for index, arg in enumerate(rest):
        if arg == "--":
            break
        why = _option_denial(name, rules, arg, first=index == 0)
        if why is not None:
            return why
        file_value = index > 0 and _takes_file_value(rules, rest[index - 1], first=index == 1)
        if rules.remote_archive and not force_local and _names_a_remote_archive(arg, file_value):
            return (f"{name} argument {arg[:80]!r} may name a remote archive (host:file runs rsh/ssh); "
                    "add --force-local for a local file with ':'")
    return None


def _option_denial(name: str, rules: ProgramRules, arg: str, *, first: bool) -> str | None:
    if arg in rules.exact_denied or any(arg.startswith(d) for d in rules.exact_denied):
        return f"{name} option {arg[:80]!r} runs a command"
    if arg.startswith("--"):
        option = arg[2:].split("=", 1)[0]
        if option and option not in rules.long_exact_ok and any(d.startswith(option) for d in rules.long_denied):
            return f"{name} option --{option} runs a command"
        return None
    if arg.startswith("-") and arg != "-":
        return _cluster_denial(name, rules, arg[1:])
    if first and rules.old_style_cluster:
        return _cluster_denial(name, rules, arg)
    return None


def _cluster_denial(name: str, rules: ProgramRules, letters: str) -> str | None:
    for letter in letters:
        if letter in rules.short_denied:
            return f"{name} option -{letter} runs a command"
        if letter in rules.short_with_value:
            return None  # the rest of the cluster is this option's value
    return None


def _takes_file_value(rules: ProgramRules, previous: str, *, first: bool) -> bool:
    """Whether ``previous`` is ``--file``/``-f`` or a cluster ending in ``f``: the next
    argument is then the archive name, even when it starts with a dash."""
    if previous == "--file":
        return True
    if previous.startswith("--"):
        return False
    letters = previous[1:] if previous.startswith("-") else (previous if first and rules.old_style_cluster else "")
    for position, letter in enumerate(letters):
        if letter in rules.short_with_value:
            return letter == "f" and position == len(letters) - 1
    return False


def _names_a_remote_archive(arg: str, file_value: bool) -> bool:
    """Conservative: any operand (or ``--file=``/``-f`` value) whose first path part has a
    colon. GNU tar reads ``host:file`` (and ``user@host:file``) as a remote archive and runs
    ``rsh``/``ssh`` for it; a local name with a colon needs ``--force-local`` anyway."""
    if file_value:
        value = arg
    elif arg.startswith("--file="):
        value = arg.split("=", 1)[1]
    elif arg.startswith("-f") and len(arg) > 2:
        value = arg[2:]
    elif arg.startswith("-"):
        return False
    else:
        value = arg
    return ":" in value.split("/", 1)[0]
