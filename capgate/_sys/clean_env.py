"""The child environment: only what the policy names, never a code-injection variable.

``build_child_env`` gives a child exactly: the ``process.envPassthrough`` names that exist in
``base_env`` (default ``os.environ``), ``HOME`` (a sandbox home, never the user's),
``TMPDIR`` (a private empty directory), a sanitized ``PATH`` and the caller's ``extra``.

Some names are never passed, **even when listed in envPassthrough or given in extra**,
because they make a program load or run code the policy never saw, or route traffic around
the network rules: ``LD_*``, ``DYLD_*``, ``PYTHONPATH``/``PYTHONSTARTUP``/``PYTHONHOME`` (and
every other ``PYTHON*`` hook such as ``PYTHONINSPECT``), proxy variables in any case
(``HTTP_PROXY``, ``https_proxy``, ``ALL_PROXY``, ``NO_PROXY``, …), shell start-up hooks
(``BASH_ENV``, ``ENV``, ``BASH_FUNC_*``, ``PROMPT_COMMAND``, ``PS4``, ``IFS``), other
interpreters' preload options (``PERL5OPT``, ``PERL5LIB``, ``RUBYOPT``, ``RUBYLIB``,
``NODE_OPTIONS``, ``JAVA_TOOL_OPTIONS``, ``_JAVA_OPTIONS``), glibc hooks (``GCONV_PATH``,
``GLIBC_TUNABLES``, ``MALLOC_*``, ``LOCPATH``, ``HOSTALIASES``, ``RESOLV_HOST_CONF``) and
``GIT_*`` (git's own rules set the few git variables capgate wants), and
``CAPGATE_LANDLOCK`` (only the process that applied the run's Landlock plan may say it holds:
the soft hooks then remember reads, ``capgate._sys.frozen_dirs``). ``HOME``, ``TMPDIR``
and ``PATH`` always come from capgate, never from passthrough or extra.

``sanitized_path`` is the only ``PATH`` a child (and capgate's own command lookup) uses: a
fixed list of system directories, minus any that lie inside the workspace, the cwd or a write
root, or that another user could write (a binary planted there would shadow a real one).

What it does not do: judge the *values* of passed-through variables (``LANG`` is passed as
is) — list only names whose value you trust.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from capgate.paths import is_within

if TYPE_CHECKING:
    from capgate.policy.model import Policy

__all__ = [
    "NEVER_PASSED",
    "SYSTEM_PATH",
    "build_child_env",
    "is_never_passed",
    "sanitized_path",
    "sanitized_path_dirs",
]

# Directories searched for a bare command name, in order. Nothing relative, nothing per-user.
SYSTEM_PATH: tuple[str, ...] = (
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
)

# fnmatch patterns on the upper-cased name; see the module docstring for why each is here.
NEVER_PASSED: tuple[str, ...] = (
    "LD_*",
    "DYLD_*",
    "PYTHON*",
    "*_PROXY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "SOCKS_PROXY",
    "SOCKS5_SERVER",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "PROMPT_COMMAND",
    "PS4",
    "IFS",
    "CDPATH",
    "SHELLOPTS",
    "BASHOPTS",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "MALLOC_*",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "GIT_*",
    "CAPGATE_LANDLOCK",  # (set only by whoever applied the Landlock plan; review round 9, finding 5)
    "SSH_AUTH_SOCK",
    "SSH_ASKPASS",
    "EDITOR",
    "VISUAL",
    "PAGER",
    # Options (or programs) a tool reads from its environment: the argument rules never see them.
    "SHELL",
    "TAR_OPTIONS",
    "MAKEFLAGS",
    "MFLAGS",
    "GNUMAKEFLAGS",
    "MAKEFILES",
    "MANOPT",
    "MANPAGER",
    "MANROFFOPT",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    "LESS",
    "LESSKEY*",
    "RSYNC_RSH",
    "RSYNC_CONNECT_PROG",
    "RSYNC_PROXY",
    "ZIPOPT",
    "UNZIP",
    "ZIP",
    "GZIP",
    "XZ_OPT",
    "XZ_DEFAULTS",
    "BZIP",
    "BZIP2",
    "ZSTD_CLEVEL",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "LUA_INIT*",
    "AWKPATH",
    "AWKLIBPATH",
    "FIND_*",
    "GREP_OPTIONS",
    "SSH_*",
    "CURL_HOME",
    "WGETRC",
    "SYSTEMD_*",
    "HOME",
    "TMPDIR",
    "PATH",
)
_NEVER = re.compile("|".join(fnmatch.translate(p) for p in NEVER_PASSED))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_never_passed(name: str) -> bool:
    """True for a variable name a child never receives from passthrough or ``extra``."""
    name = str.__str__(name)  # a str subclass could answer upper() or match() its own way
    return _never_passed(name) if len(name) <= 64 else _never_passed.__wrapped__(name)


@functools.lru_cache(maxsize=1024)
def _never_passed(name: str) -> bool:
    # Cached for short names: the same few are asked on every ``proc.run``, the pattern is long.
    return _NEVER.match(name.upper()) is not None or _NAME.match(name) is None


def _unsafe_dir(path: str) -> bool:
    """A directory another user could write (or that is missing) cannot hold trusted binaries."""
    try:
        st = os.stat(path)
    except OSError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        return True
    if st.st_uid not in (0, os.geteuid()):
        return True
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def sanitized_path_dirs(
    policy: Policy, *, cwd: str | None = None, extra_exclude: Iterable[str] = ()
) -> tuple[str, ...]:
    """The system directories a command may be found in, for this policy (and cwd).

    A directory is dropped when it (after symlink resolution) lies inside — or contains — the
    workspace, the cwd, or any write root, or when another user could write to it. Duplicates
    after resolution (``/bin`` -> ``/usr/bin``) are kept once, first spelling wins.
    """
    key = (policy.workspace, tuple(policy.filesystem.write), tuple(extra_exclude), cwd)
    fingerprint = _path_fingerprint()
    hit = _dirs_cache.get(key)
    if hit is not None and hit[0] == fingerprint:
        return hit[1]
    result = _compute_dirs(key[0], key[1], key[2], cwd)
    if len(_dirs_cache) > 64:
        _dirs_cache.clear()
    _dirs_cache[key] = (fingerprint, result)
    return result


# sanitized_path_dirs results, valid while every SYSTEM_PATH entry is the same file (lstat:
# a swapped symlink) resolving to the same directory with the same owner and mode (stat).
_dirs_cache: dict[tuple[object, ...], tuple[tuple[object, ...], tuple[str, ...]]] = {}


def _path_fingerprint() -> tuple[object, ...]:
    out: list[object] = []
    for entry in SYSTEM_PATH:
        try:
            st = os.lstat(entry)
            seen: object = (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_mtime_ns)
        except OSError:
            out += [None, None]
            continue
        out.append(seen)
        if stat.S_ISLNK(st.st_mode):  # else stat() would return this very inode again
            try:
                st = os.stat(entry)
                seen = (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_mtime_ns)
            except OSError:
                seen = None
        out.append(seen)
    return tuple(out)


def _compute_dirs(
    workspace: str, write: tuple[str, ...], extra_exclude: tuple[str, ...], cwd: str | None
) -> tuple[str, ...]:
    excluded = [workspace, *write, *extra_exclude]
    if cwd is not None:
        excluded.append(cwd)
    excluded = [os.path.realpath(p) for p in excluded]
    seen: set[str] = set()
    out: list[str] = []
    for entry in SYSTEM_PATH:
        real = os.path.realpath(entry)
        if real in seen or _unsafe_dir(real):
            continue
        if any(is_within(real, root) or is_within(root, real) for root in excluded):
            continue
        seen.add(real)
        out.append(entry)
    return tuple(out)


def sanitized_path(policy: Policy, *, cwd: str | None = None) -> str:
    """``PATH`` for a child: ``sanitized_path_dirs`` joined with ``:``."""
    return ":".join(sanitized_path_dirs(policy, cwd=cwd))


def build_child_env(
    policy: Policy,
    *,
    home: str,
    tmpdir: str,
    extra: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    path_dirs: tuple[str, ...] | None = None,
) -> dict[str, str]:
    """The complete environment for a child process (see the module docstring).

    Passthrough names missing from ``base_env`` are simply absent. ``extra`` entries are added
    after passthrough (the launcher passes ``AGENT_IN_SANDBOX`` and ``CAPGATE_POLICY`` this
    way) but still never a name from ``NEVER_PASSED``; values holding a NUL byte are refused.
    ``path_dirs``: ``sanitized_path_dirs(policy, cwd=cwd)`` when the caller has it already.
    """
    source = os.environ if base_env is None else base_env
    env: dict[str, str] = {}
    for name in policy.process.env_passthrough:
        if is_never_passed(name):
            continue
        value = source.get(name)
        if value is not None and "\x00" not in value:
            env[name] = value
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("environment names and values must be str")
        name, value = str.__str__(name), str.__str__(value)
        if is_never_passed(name):
            continue
        if "\x00" in value:
            raise ValueError(f"environment value of {name} holds a NUL byte")
        env[name] = value
    env["HOME"] = home
    env["TMPDIR"] = tmpdir
    env["PATH"] = ":".join(path_dirs) if path_dirs is not None else sanitized_path(policy, cwd=cwd)
    return env
