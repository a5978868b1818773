"""What a staged run changed: its upper directory compared with the real workspace now.

The overlay's upper directory holds every file the run created or modified (a modified file
is copied up whole), a *whiteout* (a ``0:0`` character device, or a zero-size file marked
``user.overlay.whiteout``) for each name it deleted, and an *opaque* directory (marked
``user.overlay.opaque``) where it deleted a directory and made one of the same name again.
This module turns that into a list of ``Change``:

* ``A``: a name the workspace does not have now (file, directory, symlink);
* ``M``: a name it has, with other content, mode or type (a file copied up but left
  byte-for-byte the same, same mode, is no change);
* ``D``: a name the run deleted that the workspace still has — a deleted directory gives a
  ``D`` for everything beneath it, deepest last in the list, so that ``apply`` can empty it
  first.

The overlay keeps no record of a rename (no ``redirect_dir``): a renamed file is its old
name's ``D`` and its new name's ``A``, and that is what ``apply`` works on. For people,
``with_renames`` shows such a pair as one ``R`` (``from`` the old name) when it is certain: the
new file was copied up from the workspace (it existed there), and exactly one deleted file has
its very bytes and mode.

The real workspace is only read, one name at a time beneath a directory descriptor opened
without following a symlink (a symlink swapped into the workspace is seen as a symlink, never
followed). Nothing here decides what is allowed: ``apply`` asks the gate.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from capgate.errors import StagingError

__all__ = ["Change", "compute_changes", "total_staged_bytes"]

_OPAQUE = ("user.overlay.opaque", "trusted.overlay.opaque")
_WHITEOUT_XATTR = ("user.overlay.whiteout", "trusted.overlay.whiteout")
_REDIRECT = ("user.overlay.redirect", "trusted.overlay.redirect")
_ORIGIN = ("user.overlay.origin", "trusted.overlay.origin")
# A metadata-only copy-up (``metacopy=on``) leaves the data in the lower file: reading the
# upper one would apply an empty file. capgate mounts with ``metacopy=off``; an upper made by
# another mount that has one is refused rather than misread.
_METACOPY = ("user.overlay.metacopy", "trusted.overlay.metacopy")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Change:
    """One pending change. ``path`` is relative to the workspace (``/``-separated);
    ``kind`` is ``file``, ``dir``, ``symlink`` or ``special`` (FIFO, socket, device: ``apply``
    refuses those); ``size`` and ``mode`` are the staged ones (for ``D``: the real one's);
    ``target`` is a symlink's content; ``staged`` the file in the upper directory."""

    path: str
    status: str
    kind: str
    size: int
    mode: int
    target: str | None = None
    staged: str | None = None
    source: str | None = None  # ``R`` only: the old name

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "status": self.status, "kind": self.kind, "size": self.size,
                                  "mode": f"{self.mode:04o}"}
        if self.source is not None:
            out["from"] = self.source
        if self.target is not None:
            out["target"] = self.target
        return out


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


def _has_xattr(path: str, names: tuple[str, ...], *, value: bytes | None = None) -> bool:
    for name in names:
        try:
            got = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        if value is None or got == value:
            return True
    return False


def is_whiteout(path: str, st: os.stat_result) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and _has_xattr(path, _WHITEOUT_XATTR)


def copied_up(staged: str) -> bool:
    """Whether the overlay copied this file up from the workspace (it existed there when the
    run first changed it), rather than the run creating it."""
    return _has_xattr(staged, _ORIGIN)


def _open_child(dirfd: int | None, name: str) -> int | None:
    """The workspace's directory ``name`` beneath ``dirfd``, never through a symlink; None
    when it is not a directory (or not there)."""
    if dirfd is None:
        return None
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _lstat(dirfd: int | None, name: str) -> os.stat_result | None:
    if dirfd is None:
        return None
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same_bytes(staged: str, dirfd: int, name: str) -> bool:
    try:
        real = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return False
    try:
        with open(staged, "rb") as a, os.fdopen(real, "rb", closefd=False) as b:
            while True:
                x, y = a.read(_CHUNK), b.read(_CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
    finally:
        os.close(real)


def _deleted_tree(dirfd: int, name: str, rel: str, out: list[Change]) -> None:
    """``D`` for a real directory ``name`` and everything beneath it (children first)."""
    st = _lstat(dirfd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = _open_child(dirfd, name)
        if sub is not None:
            try:
                for child in sorted(os.listdir(sub)):
                    _deleted_tree(sub, child, f"{rel}/{child}", out)
            finally:
                os.close(sub)
    out.append(Change(rel, "D", _kind(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0,
                      stat.S_IMODE(st.st_mode)))


def compute_changes(upper: str, workspace: str) -> list[Change]:
    """The change list of a run whose upper directory is ``upper``, against ``workspace``
    as it is now. Sorted by path, but a directory's ``D`` comes after its contents' ``D``."""
    try:
        root = os.open(workspace, _DIR_FLAGS)
    except OSError as exc:
        raise StagingError(f"cannot open the workspace {workspace}: {exc.strerror or exc}") from exc
    out: list[Change] = []
    try:
        _walk(upper, "", root, False, out)
    finally:
        os.close(root)
    return out


def _walk(upper_dir: str, rel_dir: str, real_fd: int | None, opaque: bool, out: list[Change]) -> None:
    try:
        entries = sorted(os.scandir(upper_dir), key=lambda e: e.name)
    except OSError as exc:
        raise StagingError(f"cannot list the staged directory {upper_dir}: {exc.strerror or exc}") from exc
    if opaque and real_fd is not None:
        # The run removed this directory and made it again: what the workspace holds here and
        # the new one does not is deleted.
        present = {e.name for e in entries}
        for name in sorted(os.listdir(real_fd)):
            if name not in present:
                _deleted_tree(real_fd, name, f"{rel_dir}{name}", out)
    for entry in entries:
        name = entry.name
        rel = f"{rel_dir}{name}"
        st = entry.stat(follow_symlinks=False)
        real = _lstat(real_fd, name)
        if is_whiteout(entry.path, st):
            if real is not None and real_fd is not None:
                _deleted_tree(real_fd, name, rel, out)
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            if _has_xattr(entry.path, _REDIRECT):
                raise StagingError(f"{rel}: the overlay recorded a directory rename (redirect_dir), which capgate "
                                   "does not read; refusing to guess the change list")
            sub_opaque = opaque or _has_xattr(entry.path, _OPAQUE, value=b"y")
            real_sub = None
            if real is not None and stat.S_ISDIR(real.st_mode):
                real_sub = _open_child(real_fd, name)
                if stat.S_IMODE(real.st_mode) != mode:
                    out.append(Change(rel, "M", "dir", 0, mode, staged=entry.path))
            else:
                if real is not None and real_fd is not None:
                    _deleted_tree(real_fd, name, rel, out)
                out.append(Change(rel, "A", "dir", 0, mode, staged=entry.path))
            try:
                _walk(entry.path, rel + "/", real_sub, sub_opaque and real_sub is not None, out)
            finally:
                if real_sub is not None:
                    os.close(real_sub)
            continue
        kind = _kind(st.st_mode)
        if kind == "file" and _has_xattr(entry.path, _METACOPY):
            raise StagingError(f"{rel}: a metadata-only copy-up (metacopy), whose data is not in the staging; "
                               "refusing to guess its content")
        size = st.st_size if kind == "file" else 0
        target = os.readlink(entry.path) if kind == "symlink" else None
        if real is None:
            out.append(Change(rel, "A", kind, size, mode, target, entry.path))
            continue
        assert real_fd is not None
        if stat.S_ISDIR(real.st_mode):
            _deleted_tree(real_fd, name, rel, out)
            out.append(Change(rel, "A", kind, size, mode, target, entry.path))
            continue
        if kind == "file" and stat.S_ISREG(real.st_mode):
            if real.st_size == size and stat.S_IMODE(real.st_mode) == mode and _same_bytes(entry.path, real_fd, name):
                continue
        elif kind == "symlink" and stat.S_ISLNK(real.st_mode):
            if os.readlink(name, dir_fd=real_fd) == target:
                continue
        out.append(Change(rel, "M", kind, size, mode, target, entry.path))


def with_renames(changes: list[Change], workspace: str) -> list[Change]:
    """``changes`` for people: each certain rename's ``D`` + ``A`` pair as one ``R``."""
    deleted: dict[tuple[int, int], list[Change]] = {}
    for change in changes:
        if change.status == "D" and change.kind == "file":
            deleted.setdefault((change.size, change.mode), []).append(change)
    if not deleted:
        return changes
    renamed: dict[str, Change] = {}  # new path -> its R entry
    gone: set[str] = set()
    for change in changes:
        if change.status != "A" or change.kind != "file" or change.staged is None:
            continue
        candidates = [d for d in deleted.get((change.size, change.mode), ()) if d.path not in gone]
        if not candidates or not copied_up(change.staged):
            continue
        same = [d for d in candidates if _same_as_real(change.staged, workspace, d.path)]
        if len(same) != 1:
            continue
        gone.add(same[0].path)
        renamed[change.path] = Change(change.path, "R", "file", change.size, change.mode, staged=change.staged,
                                      source=same[0].path)
    return [renamed.get(c.path, c) for c in changes if not (c.status == "D" and c.path in gone)]


def _same_as_real(staged: str, workspace: str, rel: str) -> bool:
    """Whether the workspace's ``rel`` (opened step by step, never through a symlink) holds
    exactly the bytes of ``staged``."""
    parts = rel.split("/")
    try:
        fd = os.open(workspace, _DIR_FLAGS)
    except OSError:
        return False
    try:
        for part in parts[:-1]:
            nxt = _open_child(fd, part)
            if nxt is None:
                return False
            os.close(fd)
            fd = nxt
        return _same_bytes(staged, fd, parts[-1])
    finally:
        os.close(fd)


def total_staged_bytes(changes: list[Change]) -> int:
    return sum(c.size for c in changes if c.status in ("A", "M") and c.kind == "file")


def safe_name(text: str) -> str:
    """A name the agent chose, fit for a terminal: as it is when every character is printable,
    else quoted with its control characters escaped (``'zz\\x1b[1A'``). A raw ``ESC [1A ESC
    [2K`` would move the cursor up and erase the line above: the person reviewing the change
    list before ``capgate apply`` would not see the change the agent wanted hidden."""
    return text if text.isprintable() else repr(text)


def iter_lines(changes: list[Change]) -> Iterator[str]:
    """``A       1234  path`` lines, as the launcher and ``capgate changes`` print them (names
    through ``safe_name``: one line per change, whatever the names hold)."""
    for change in changes:
        name = safe_name(change.path) + ("/" if change.kind == "dir" else "")
        if change.source is not None:
            name = f"{safe_name(change.source)} -> {name}"
        if change.kind == "symlink":
            name += f" -> {safe_name(change.target or '')}"
        yield f"  {change.status} {change.size:>10}  {name}"
