"""The namespace backend's kernel view of a policy the gate has already decided.

No new decisions are made here: every path is judged by the gate's own ``PathRules`` (the
one decision point), and this module only turns the answers into a mount plan for a fresh
root, then into bubblewrap's command line (``bwrap_argv``, pure: unit-tested on its own).

The view holds only:

* the system's own files, read-only (``/usr``, ``/lib*``, ``/etc`` without its secrets, the
  reviewed system files), a minimal ``/dev``, a ``/proc`` of the run's own pid namespace and
  a private ``/tmp``;
* the read roots and runtime read roots, read-only; the write roots, read-write; all at the
  same absolute paths as on the host, so paths in the workspace work unchanged;
* nothing else: the real ``HOME``, other users' files, the launcher's ``/proc`` entries and
  every host Unix socket do not exist in it.

Inside the read and write roots, what the policy refuses is covered up, found by one walk at
start (``scan``): a path the gate would not let the agent read (``.env``, ``*.pem``), a
regular file with more than one name (a hard link planted to a secret: its other names cannot
be checked) and a host socket not listed in ``allowedUnixSockets`` are each hidden behind an
empty **read-only** file or directory (never a writable tmpfs, so nothing can be planted in
its place); a path inside a write root that the gate would not let the agent write
(``output/.bashrc``, ``output/.git/hooks``, the mandatory list) is bound read-only on itself.
A name of that kind *created* during the run cannot be covered in advance: ``created_denials``
finds it at exit so that the launcher reports it as a denial.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from capgate.ops import FS_READ, FS_WRITE
from capgate.paths import PathRules, is_within

__all__ = ["FOREIGN_OWNER_RULE", "GIT_REDIRECT_RULE", "MAX_SCAN_ENTRIES", "Scan", "View", "bwrap_argv",
           "created_denials", "scan", "snapshot_write_roots"]

# A walk that would take longer than the run is refused rather than half done (the view
# would then show what it had not looked at).
MAX_SCAN_ENTRIES = 2_000_000
# Roots the view makes itself (``--dev``, ``--proc``), never bound from the host.
_KERNEL_MADE = ("/dev", "/proc")


@dataclass(frozen=True)
class Scan:
    """What the walk of the read and write roots found to cover up, and the identity
    (device, inode) of every path in the write roots the gate refuses the agent, as it was
    before the run (``created_denials`` compares against it)."""

    hidden_files: tuple[str, ...] = ()
    hidden_dirs: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)  # path -> the rule that hid it
    entries: int = 0
    before: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    """The mount plan of one run (every path absolute and canonical)."""

    system: tuple[str, ...]  # read-only, bound when present
    read: tuple[str, ...]  # read-only
    write: tuple[str, ...]  # read-write
    sockets: tuple[str, ...]  # allowed host Unix sockets, bound in
    scan: Scan
    empty_file: str  # an empty read-only file and directory of the run, to cover with
    empty_dir: str
    workspace: str
    uid: int
    gid: int
    # Secrets inside the system roots (``/etc/shadow``, ``/etc/ssh``, ``/etc/ssl/private``...),
    # covered like the scan's finds: far fewer mounts than /etc entry by entry (~0.1 ms each).
    # System roots that are symlinks on the host (``/bin -> usr/bin``): made the same symlink in
    # the view, so that a path canonicalizes to the same name inside as outside.
    system_links: tuple[tuple[str, str], ...] = ()  # (target as the link holds it, link path)
    system_hidden_files: tuple[str, ...] = ()
    system_hidden_dirs: tuple[str, ...] = ()
    # The command as the user named it, when that path runs through a symlink no root shows
    # (a venv's ``bin/python3 -> /usr/bin/python3.11`` outside the read roots): made the same
    # symlink to the real file the launcher resolved, which a read root shows. Python finds
    # its venv (``pyvenv.cfg``) from the name it was run by, so the name must exist inside.
    command_links: tuple[tuple[str, str], ...] = ()  # (resolved target, link path)


def command_links(command: Sequence[str], roots: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``View.command_links`` for ``command``: its program, when named by an absolute path that
    resolves elsewhere and lies under none of ``roots`` (inside one, the bind shows it)."""
    if not command or not os.path.isabs(command[0]):
        return ()
    exe = os.path.normpath(command[0])
    real = os.path.realpath(exe)
    if real == exe or any(is_within(exe, root) for root in roots) or not os.path.isfile(real):
        return ()
    return ((real, exe),)


def _roots(paths: Iterable[str]) -> list[str]:
    """Distinct roots, nested ones dropped (the outer one covers them), host-made ones out."""
    out: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if any(is_within(path, k) for k in _KERNEL_MADE):
            continue
        if not any(is_within(path, other) for other in out):
            out.append(path)
    return out


# A bind mount's paths must fit the kernel's PATH_MAX; deeper trees are covered at an ancestor.
_MAX_BIND_PATH = 3800
# The name git follows: a ``.git`` that is a symlink or a ``gitdir:`` file points git at a
# directory whose ``hooks/`` and ``config`` the mandatory list does not see by name.
GIT_REDIRECT_RULE = "filesystem.gitRedirect"
# A staged run's file of another owner, read-only in the view (see ``scan``'s ``owner``).
FOREIGN_OWNER_RULE = "staging.foreignOwner"


def _git_redirect(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.name == ".git" and not entry.is_dir(follow_symlinks=False)
    except OSError:
        return True


def scan(rules: PathRules, read_roots: Sequence[str], write_roots: Sequence[str],
         allowed_sockets: Sequence[str] = (), *, limit: int = MAX_SCAN_ENTRIES,
         owner: tuple[int, int] | None = None) -> Scan:
    """Walk the read and write roots (never following a symlink) and sort out what to cover.

    Fails closed: a directory that cannot be listed, or is too deep to bind, is covered whole;
    past ``limit`` entries it raises ``OSError(E2BIG)`` and the view is not built at all. A
    write-denied directory (``output/.vscode``) is bound read-only *and* still walked: a
    ``.env`` or a planted hard link inside it is covered like anywhere else.

    ``owner`` (uid, gid), for a staged run started unprivileged: an entry in a write root
    that belongs to another user or group is bound read-only too (rule
    ``FOREIGN_OWNER_RULE``): the overlay could not copy it up (``EOVERFLOW``), so it fails
    plainly with ``EROFS`` instead."""
    hidden_files: list[str] = []
    hidden_dirs: list[str] = []
    readonly: list[str] = []
    reasons: dict[str, str] = {}
    before: dict[str, tuple[int, int]] = {}
    sockets = frozenset(allowed_sockets)
    writable = tuple(write_roots)
    count = 0
    # (directory, beneath a write root?, beneath a read-only bind already?): the walk stays
    # beneath the roots, so only the deny lists can refuse what it meets
    # (``PathRules.deny_lists``, the first step of ``decide``).
    stack = [(r, any(is_within(r, w) for w in writable), False) for r in _roots([*read_roots, *write_roots])
             if os.path.isdir(r)]
    deny_lists = rules.deny_lists

    def cover(path: str, is_dir: bool, rule: str, st: os.stat_result | None, in_write: bool) -> None:
        (hidden_dirs if is_dir else hidden_files).append(path)
        reasons[path] = rule
        if in_write and st is not None:
            before[path] = (st.st_dev, st.st_ino)

    while stack:
        directory, in_write, under_readonly = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            # Unlistable to us (mode 0311, ENAMETOOLONG...), yet reachable step by step by the
            # child: covered whole rather than passed over.
            cover(directory, True, "fs.unlistable", None, False)
            continue
        for entry in entries:
            count += 1
            if count > limit:
                raise OSError(7, f"more than {limit} entries under the read and write roots: too many to check")
            path = entry.path
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            is_dir = stat.S_ISDIR(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                # Never bound or covered (a mount on a symlink lands on its target): the gate
                # judges what a link resolves to by that path, and the walk meets it there. A
                # denied name that is a link is remembered, so only a new one is reported.
                if in_write and (deny_lists(FS_WRITE, path) is not None or entry.name == ".git"):
                    before[path] = (st.st_dev, st.st_ino)
                continue
            denial = deny_lists(FS_READ, path)
            if denial is not None:
                cover(path, is_dir, denial.rule, st, in_write)
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                cover(path, False, "filesystem.hardLinks", st, in_write)
                continue
            if stat.S_ISSOCK(st.st_mode) and path not in sockets:
                cover(path, False, "network.allowedUnixSockets", st, in_write)
                continue
            here_write = in_write or (is_dir and any(is_within(path, w) for w in writable))
            here_readonly = under_readonly
            if here_write:
                denial = deny_lists(FS_WRITE, path)
                if denial is not None or _git_redirect(entry):
                    before[path] = (st.st_dev, st.st_ino)
                    if not under_readonly:
                        readonly.append(path)
                        reasons[path] = denial.rule if denial is not None else GIT_REDIRECT_RULE
                        here_readonly = True
                elif owner is not None and not here_readonly and (st.st_uid, st.st_gid) != owner:
                    readonly.append(path)
                    reasons[path] = FOREIGN_OWNER_RULE
                    here_readonly = True
            if is_dir:
                if len(os.fsencode(path)) > _MAX_BIND_PATH:
                    cover(directory, True, "fs.tooDeep", None, False)
                    break
                stack.append((path, here_write, here_readonly))
    return Scan(tuple(hidden_files), tuple(hidden_dirs), tuple(readonly), reasons, count, before)


def created_denials(rules: PathRules, write_roots: Sequence[str], before: Scan) -> list[tuple[str, str, str]]:
    """What the gate would have refused the agent to write that is in the write roots after
    the run and was not there before as the same object (device, inode): a native child's
    ``output/.bashrc``, a ``.git/hooks`` recreated after moving its parent, a ``.git`` made a
    symlink or ``gitdir:`` file. ``(path, rule, reason)`` each, for the log. A directory the
    walk cannot list, or a tree too large to walk, is reported too: never passed over."""
    known = before.before
    found: list[tuple[str, str, str]] = []
    stack = [r for r in _roots(write_roots) if os.path.isdir(r)]
    budget = MAX_SCAN_ENTRIES
    deny_lists = rules.deny_lists
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            found.append((directory, "fs.unlistable", f"could not be checked at exit ({exc.strerror or exc})"))
            continue
        for entry in entries:
            budget -= 1
            if budget < 0:
                found.append((directory, "fs.tooLarge", "the write roots hold too many entries to check at exit"))
                return found
            path = entry.path
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            denial = deny_lists(FS_WRITE, path)
            if denial is not None and denial.rule == "fs.tempFile":
                denial = None
            redirect = _git_redirect(entry)
            if (denial is not None or redirect) and known.get(path) != (st.st_dev, st.st_ino):
                if denial is not None:
                    found.append((path, denial.rule, denial.reason))
                else:
                    found.append((path, GIT_REDIRECT_RULE, "a .git that is not a directory points git at hooks and "
                                                           "a config the mandatory list does not see"))
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    return found


def snapshot_write_roots(rules: PathRules, write_roots: Sequence[str]) -> Scan:
    """``scan`` of the write roots alone, for a backend that covers nothing but still reports
    what appeared at exit (the soft backend)."""
    return scan(rules, (), write_roots)


def _shown_already(path: str, shown_ro: Sequence[str], covers: Sequence[str]) -> bool:
    """Whether a read-only bind of ``path`` onto itself would change nothing: a read-only bind
    made before it already shows that same directory there (``/etc/hosts`` under ``/etc``, a
    runtime read root under ``/usr``). Each mount costs bubblewrap time at every start (the
    runtime read roots hold dozens of such files). Kept whenever it could differ: a path with
    a symlink on the way (the bind shows its target; through the parent it may dangle), or a
    system cover around or beneath it (the order of the two mounts decides what is seen)."""
    if not any(is_within(path, shown) and path != shown for shown in shown_ro):
        return False
    if any(is_within(path, c) or is_within(c, path) for c in covers):
        return False
    try:
        return os.path.realpath(path) == path
    except (OSError, ValueError):
        return False


def bwrap_argv(bwrap: str, view: View, command: Sequence[str], *, disable_userns: bool = True) -> list[str]:
    """bubblewrap's command line for ``view``, ending in ``command``.

    Mount order matters (a later mount covers an earlier one): kernel-made ``/dev``,
    ``/proc`` and a private ``/tmp`` first, then the system, then the roots from the
    outermost in (a write root inside a read root stays writable), then the sockets, and
    last the covers, so that nothing bound later can uncover what the gate refused."""
    argv = [
        bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try",
        "--uid", str(view.uid), "--gid", str(view.gid),
        "--hostname", "capgate",
        "--die-with-parent", "--new-session",
        "--cap-drop", "ALL",
    ]
    if disable_userns:
        argv.append("--disable-userns")  # no nested user namespace, so no way to regain capabilities
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in _roots(view.system):
        argv += ["--ro-bind-try", path, path]
    for target, link in view.system_links:
        argv += ["--symlink", target, link]
    for path in view.system_hidden_dirs:
        argv += ["--ro-bind", view.empty_dir, path]
    for path in view.system_hidden_files:
        argv += ["--ro-bind", view.empty_file, path]
    writable = tuple(view.write)
    shown_ro = list(_roots(view.system))  # read-only binds that show their whole tree
    covers = (*view.system_hidden_dirs, *view.system_hidden_files)
    for path in sorted(set(view.read) | set(writable), key=lambda p: (p.count("/"), p)):
        if any(is_within(path, k) for k in _KERNEL_MADE):
            continue
        rw = any(is_within(path, w) for w in writable)  # a read root inside a write root stays writable
        if not rw and _shown_already(path, shown_ro, covers):
            continue
        argv += ["--bind-try" if rw else "--ro-bind-try", path, path]  # (a missing one: ENOENT inside)
        if not rw:
            shown_ro.append(path)
    for path in view.sockets:
        argv += ["--bind-try", path, path]
    for target, link in view.command_links:
        argv += ["--symlink", target, link]
    for path in view.scan.readonly:  # before the covers: a cover inside one must stay on top
        argv += ["--ro-bind", path, path]
    for path in view.scan.hidden_dirs:
        argv += ["--ro-bind", view.empty_dir, path]
    for path in view.scan.hidden_files:
        argv += ["--ro-bind", view.empty_file, path]
    argv += ["--chdir", view.workspace, "--", *command]
    return argv
