"""Take secrets out of this process's environment, including the copy ``/proc`` shows.

``os.environ.pop`` (``unsetenv``) only drops libc's pointer: ``/proc/<pid>/environ`` reads
the block the kernel laid out at ``execve`` (``env_start``..``env_end`` in
``/proc/self/stat``), and the strings stay there. ``drop_secret_variables`` therefore also
overwrites each ``NAME=value`` string in that block with NUL bytes, in place, and marks the
process not dumpable (``PR_SET_DUMPABLE`` 0): no core dump, and ``/proc/<pid>/mem``,
``environ`` and ``ptrace`` then need ``CAP_SYS_PTRACE``, not just the same user id. (The
values stay in this process's heap: the egress proxy needs them. Under the soft backend
Landlock keeps the tree from ``ptrace``-reading processes outside its domain, root included;
under the namespace backend the launcher is not in the child's ``/proc`` at all.)
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

__all__ = ["drop_secret_variables", "initial_environment_block"]

_PR_SET_DUMPABLE = 4


def initial_environment_block() -> tuple[int, int]:
    """``(env_start, env_end)`` of this process (fields 50 and 51 of ``/proc/self/stat``)."""
    with open("/proc/self/stat", "rb") as fh:
        raw = fh.read()
    rest = raw[raw.rindex(b")") + 2 :].split()  # (the command name may hold spaces and parens)
    return int(rest[47]), int(rest[48])


def drop_secret_variables(names: Iterable[str]) -> None:
    """Remove ``names`` from ``os.environ`` and blank their strings in the initial block."""
    wanted = {name.encode() + b"=" for name in names}
    for name in names:
        os.environ.pop(name, None)
    if not wanted:
        return
    start, end = initial_environment_block()
    if not 0 < start < end:
        raise OSError("cannot find this process's environment block")
    block = (ctypes.c_char * (end - start)).from_address(start)
    data = bytes(block)
    offset = 0
    for entry in data.split(b"\0"):
        if any(entry.startswith(prefix) for prefix in wanted):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
