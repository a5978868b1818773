"""The fallback when ``openat2`` is missing: walk a path one component at a time with
``O_NOFOLLOW``, so no symlink is ever followed and nothing leaves the starting directory.

It gives the same guarantee capgate asks of ``openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH)``:
``ELOOP`` if any component is a symlink, and ``..`` is refused (callers pass normalized paths).
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["open_nofollow"]

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC if hasattr(os, "O_PATH") else 0


def open_nofollow(dirfd: int, path: str, flags: int, mode: int = 0o666) -> int:
    """Open ``path`` (relative to ``dirfd``; absolute paths start from ``/``) refusing symlinks."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, "'..' is not allowed here", path)
    if path.startswith("/"):
        current = os.open("/", _DIR_FLAGS)
    else:
        current = os.dup(dirfd)
    try:
        if not parts:
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=current) if not flags & os.O_PATH else os.dup(current)
        for part in parts[:-1]:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=current)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and _is_link(part, current):
                    raise OSError(errno.ELOOP, "symlink in path", path) from exc
                raise
            os.close(current)
            current = nxt
        fd = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
        if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
            # O_PATH|O_NOFOLLOW opens the link itself instead of failing: refuse it here.
            os.close(fd)
            raise OSError(errno.ELOOP, "symlink in path", path)
        return fd
    finally:
        os.close(current)


def _is_link(name: str, dirfd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False
