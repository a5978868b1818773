"""``openat2(2)`` through ctypes: open a path with the kernel refusing symlinks on the way.

Used with ``RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`` (and ``RESOLVE_BENEATH`` for paths
relative to the workspace descriptor): the object opened is then exactly the one at the path
that was checked, because no component could have been redirected. ENOSYS and EPERM from the
probe mean "not available" (old kernels; Docker's default seccomp profile answers EPERM);
the O_NOFOLLOW walk in ``nofollow_walk`` is then used instead, with the same guarantee.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys

__all__ = [
    "AVAILABLE",
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "openat2",
]

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# The same number on x86_64 and aarch64 (asm-generic); other architectures use the walk.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine())


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _soft_hooks_installed() -> bool:
    """Whether this process runs under the soft sandbox's hooks. They refuse ctypes access to
    libc (a raw ``syscall`` opens files with no audit event, so it would get around them), so
    ``capgate.fs`` in such a process uses the ``O_NOFOLLOW`` walk, whose ``os.open`` calls the
    hooks judge; asking for ``syscall`` would only log a denial."""
    soft = sys.modules.get("capgate.soft")
    return soft is not None and getattr(soft, "installed", lambda: None)() is not None


_syscall = None
if _SYS_OPENAT2 is not None and platform.system() == "Linux" and not _soft_hooks_installed():
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _syscall = _libc.syscall
        _syscall.restype = ctypes.c_long
        # No argtypes: syscall() is variadic, and converting each argument through argtypes
        # costs ~0.3 us a call. The arguments are passed as ctypes objects of the exact C
        # types instead, made once (the number and size) or once per directory descriptor.
    except (OSError, AttributeError):  # pragma: no cover - no libc syscall()
        _syscall = None

_HOW_SIZE = ctypes.sizeof(_OpenHow)
_C_HOW_SIZE = ctypes.c_size_t(_HOW_SIZE)
_NR = ctypes.c_long(_SYS_OPENAT2 or 0)
_DIRFDS: dict[int, ctypes.c_long] = {}
# open_how structs are immutable once built; keep one per (flags, resolve, mode) in use.
_HOWS: dict[tuple[int, int, int], object] = {}


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """Return a new descriptor or raise ``OSError`` with the kernel's errno."""
    if _syscall is None:
        raise OSError(errno.ENOSYS, "openat2 is not available")
    key = (flags, resolve, mode if flags & os.O_CREAT else 0)
    how = _HOWS.get(key)
    if how is None:
        how = _HOWS[key] = ctypes.byref(_OpenHow(flags | os.O_CLOEXEC, key[2], resolve))
    encoded = os.fsencode(path)
    cdirfd = _DIRFDS.get(dirfd)
    if cdirfd is None:
        cdirfd = _DIRFDS[dirfd] = ctypes.c_long(dirfd)
        if len(_DIRFDS) > 256:
            _DIRFDS.clear()
    for _ in range(64):
        fd = _syscall(_NR, cdirfd, encoded, how, _C_HOW_SIZE)
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:  # EAGAIN: a concurrent rename raced the lookup; try again
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "openat2 kept racing with renames", path)


def _probe() -> bool:
    if _syscall is None:
        return False
    try:
        os.close(openat2(-100, "/", os.O_PATH | os.O_DIRECTORY, RESOLVE_NO_SYMLINKS))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return False
        raise
    return True


AVAILABLE = _probe()
