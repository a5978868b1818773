"""Resource limits for a child process, as ``setrlimit`` calls made between fork and exec.

From ``policy.limits``: ``cpuSeconds`` -> ``RLIMIT_CPU`` (soft = the limit, so the child gets
``SIGXCPU``; hard one second later, ``SIGKILL``), ``memoryMb`` -> ``RLIMIT_AS`` (address space),
``maxOpenFiles`` -> ``RLIMIT_NOFILE``, ``maxFileSizeMb`` -> ``RLIMIT_FSIZE`` (a bigger write
fails with ``EFBIG``/``SIGXFSZ``), ``RLIMIT_CORE`` = 0 (no core dumps of secrets in memory), and
``maxProcesses`` -> ``RLIMIT_NPROC`` when that binds.

What it does not do: bind the process count for root — the kernel ignores ``RLIMIT_NPROC``
for a process with ``CAP_SYS_RESOURCE``/``CAP_SYS_ADMIN`` and it counts every process of the
real uid, not of the run. ``capgate._sys.cgroup`` (a pids cgroup per run) is what bounds the
process count; ``RLIMIT_NPROC`` is only the fallback for an unprivileged caller without a
usable cgroup, set to the processes the user already has plus ``maxProcesses``.
Limits are inherited by every descendant and cannot be raised again without privilege —
hard and soft are both set.
"""

from __future__ import annotations

import os
import resource
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capgate.policy.model import Limits

__all__ = ["RlimitTable", "apply_rlimits", "limit_table", "user_process_count"]

MB = 1024 * 1024

# (resource, soft, hard, limit name in the policy)
RlimitTable = tuple[tuple[int, int, int, str], ...]


def user_process_count(uid: int | None = None) -> int:
    """How many processes the (real) uid owns now; used to make RLIMIT_NPROC per-run-ish."""
    uid = os.getuid() if uid is None else uid
    count = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                count += 1
        except OSError:
            continue
    return count


def limit_table(limits: Limits, *, nproc: int | None = None) -> RlimitTable:
    """The rlimits to set in a child, hard == soft except CPU (soft first, SIGKILL 1 s later).

    ``nproc``: a value for RLIMIT_NPROC, or None to leave it (the cgroup bounds processes).
    """
    key = (limits.cpu_seconds, limits.memory_mb, limits.max_open_files, limits.max_file_size_mb, nproc)
    root = os.geteuid() == 0
    if root:  # root is never clamped to its own limits: the table depends on the numbers alone
        hit = _root_tables.get(key)
        if hit is not None:
            return hit
    table: list[tuple[int, int, int, str]] = [
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1, "cpuSeconds"),
        (resource.RLIMIT_AS, limits.memory_mb * MB, limits.memory_mb * MB, "memoryMb"),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files, "maxOpenFiles"),
        (resource.RLIMIT_FSIZE, limits.max_file_size_mb * MB, limits.max_file_size_mb * MB, "maxFileSizeMb"),
        (resource.RLIMIT_CORE, 0, 0, "noCoreDumps"),
    ]
    if nproc is not None:
        table.append((resource.RLIMIT_NPROC, nproc, nproc, "maxProcesses"))
    result = tuple(_never_above_current(table))
    if root and len(_root_tables) < 64:
        _root_tables[key] = result
    return result


_root_tables: dict[tuple[int | None, ...], RlimitTable] = {}


def _never_above_current(table: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    # An unprivileged parent cannot raise a hard limit; a policy limit above the current hard
    # limit is clamped to it (the tighter of the two holds) instead of failing the run.
    out = []
    for res, soft, hard, name in table:
        _cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY and os.geteuid() != 0:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        out.append((res, soft, hard, name))
    return out


def apply_rlimits(table: RlimitTable) -> None:
    """Set every limit of ``table`` on the calling process (the child, before exec).

    Raises ``OSError``/``ValueError`` if one cannot be set: the child must then not run.
    """
    for res, soft, hard, _name in table:
        resource.setrlimit(res, (soft, hard))
