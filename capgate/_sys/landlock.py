"""Landlock, for one job: a process tree that may execute only listed files.

Why: ``capgate.cmdrules`` decides the command line it is given, but an allowed program can run
another one by itself — ``git`` runs a repository's filter through ``/bin/sh -c``, ``tar``
``--to-command``, ``awk``'s ``system()``, ``sed``'s ``e``, ``make``'s recipes, ``python``'s
``os.system``. Argument rules can only chase such options one by one. With ``allowShell:
false``, capgate instead asks the kernel to refuse ``execve`` of any file that is not an
allowed command (or the ELF loader / script interpreter an allowed command needs): a whole
class closed in one place, for the child and every descendant, and no descendant can lift it.

Landlock handles *only* ``LANDLOCK_ACCESS_FS_EXECUTE`` here: reads and writes are untouched
(``proc.run`` children are outside the fs gate by design). ``PR_SET_NO_NEW_PRIVS`` comes with
it (the kernel requires it; set-uid programs then run without their privileges).

Stdlib only (``ctypes``): the spawner (``python -I -S``) loads this file by path. Linux with
Landlock (5.13+) only; ``available()`` says whether it can be used, and callers report the
containment they actually got rather than pretend.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

__all__ = ["ExecRuleset", "LandlockUnavailable", "available", "exec_dependencies"]

_SYS_CREATE_RULESET = 444  # the same number on every architecture (added after the syscall table merge)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_ACCESS_FS_EXECUTE = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_libc: ctypes.CDLL | None = None


class LandlockUnavailable(OSError):
    """The kernel (or platform) cannot restrict execution with Landlock."""


def _syscall() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn = _libc.syscall
    fn.restype = ctypes.c_long
    return fn


def available() -> int:
    """The Landlock ABI version, or 0 when Landlock cannot be used here."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _syscall()(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                             ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


class ExecRuleset:
    """A Landlock ruleset allowing ``execute`` on the listed files and directories only.

    Build it in the parent (it opens each path), then call ``restrict_self`` in the process
    that must be confined (a spawner, or a child between fork and exec: no allocation there).
    Paths that do not exist are skipped (nothing can be executed from them anyway).
    """

    def __init__(self, paths: list[str] | tuple[str, ...]) -> None:
        if not available():
            raise LandlockUnavailable(38, "Landlock is not available on this kernel")
        call = _syscall()
        attr = struct.pack("=Q", _ACCESS_FS_EXECUTE)  # handled_access_fs only: valid from ABI 1
        buf = ctypes.create_string_buffer(attr, len(attr))
        fd = call(ctypes.c_long(_SYS_CREATE_RULESET), buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockUnavailable(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self.fd = int(fd)
        self.paths: list[str] = []
        try:
            for path in paths:
                try:
                    target = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    rule = ctypes.create_string_buffer(struct.pack("=Qi", _ACCESS_FS_EXECUTE, target), 12)
                    if call(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(self.fd), ctypes.c_int(_RULE_PATH_BENEATH),
                            rule, ctypes.c_uint32(0)) < 0:
                        err = ctypes.get_errno()
                        raise LandlockUnavailable(err, f"landlock_add_rule {path}: {os.strerror(err)}")
                finally:
                    os.close(target)
                self.paths.append(path)
        except BaseException:
            os.close(self.fd)
            raise
        self._call = call
        self._prctl = _libc.prctl if _libc is not None else None

    def restrict_self(self) -> int:
        """Confine the calling process (and all it will start); 0 on success, else an errno.

        Allocation-free once built, so it may run in a child between fork and exec.
        """
        if self._prctl is None or self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return ctypes.get_errno() or 1
        if self._call(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(self.fd), ctypes.c_uint32(0)) != 0:
            return ctypes.get_errno() or 1
        return 0

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def exec_dependencies(path: str) -> list[str]:
    """What the kernel also opens for execution when ``path`` is executed.

    The ELF program interpreter (``PT_INTERP``: the dynamic loader) of an ELF file, or the
    interpreter named on a script's ``#!`` line. Errors give an empty list: the exec then
    fails closed (EACCES), it never widens anything.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
            if head.startswith(b"#!"):
                line = head[2:].split(b"\n", 1)[0].strip()
                interpreter = line.split(None, 1)[0] if line else b""
                return [os.path.realpath(os.fsdecode(interpreter))] if interpreter.startswith(b"/") else []
            if not head.startswith(b"\x7fELF") or len(head) < 64:
                return []
            is64 = head[4] == 2
            endian = "<" if head[5] == 1 else ">"
            if is64:
                phoff, = struct.unpack_from(endian + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(endian + "I", head, 28)
                phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
            for index in range(min(phnum, 256)):
                fh.seek(phoff + index * phentsize)
                entry = fh.read(phentsize)
                if len(entry) < (56 if is64 else 32):
                    return []
                p_type, = struct.unpack_from(endian + "I", entry, 0)
                if p_type != 3:  # PT_INTERP
                    continue
                if is64:
                    offset, = struct.unpack_from(endian + "Q", entry, 8)
                    size, = struct.unpack_from(endian + "Q", entry, 32)
                else:
                    offset, = struct.unpack_from(endian + "I", entry, 4)
                    size, = struct.unpack_from(endian + "I", entry, 16)
                fh.seek(offset)
                name = fh.read(min(size, 4096)).split(b"\0", 1)[0]
                return [os.path.realpath(os.fsdecode(name))] if name.startswith(b"/") else []
    except (OSError, struct.error):
        return []
    return []
