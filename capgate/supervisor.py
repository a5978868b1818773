"""Run one child process inside the run's limits, and leave nothing behind.

``supervise`` is the lower layer under ``capgate.proc.run`` and the launcher (which starts
the whole agent this way). For every child it:

* starts it in a **new session** (its own process group, no controlling terminal);
* applies **rlimits** before exec (``capgate._sys.rlimits``: CPU, address space, open files,
  file size, no core dumps) — inherited by every descendant, not raisable again;
* bounds the **process count** so it holds for root: the child joins a fresh **pids cgroup**
  (``pids.max = maxProcesses``) before exec, so every descendant is counted and findable
  (``capgate._sys.cgroup``). Without a usable cgroup: as root, the child runs under a
  throw-away unprivileged uid/gid of its own (then ``RLIMIT_NPROC`` binds and every process
  of that uid is the run's); as an ordinary user, ``RLIMIT_NPROC`` = the user's current
  process count + ``maxProcesses``;
* kills the **whole tree** on wall time (``min(timeout, wallTimeSeconds)``), and also as soon
  as the child itself exits — a daemon left behind by the child (even one that called
  ``setsid`` and double-forked) is a member of the cgroup and is killed;
* **captures** stdout/stderr up to ``max_output_bytes`` each (default
  ``maxCapturedOutputMb``): the rest is read and dropped, so memory stays bounded during a
  flood and the child is never blocked on a full pipe; ``*_truncated`` says so;
* sets ``PR_SET_PDEATHSIG`` so the child dies if the supervisor dies; cgroups left by a
  supervisor that crashed are swept by the next one;
* removes the cgroup and the paths in ``remove_after`` (the private ``TMPDIR``).

What it does not do: decide anything (``capgate.cmdrules`` does, before this is called),
clean the environment (pass ``env`` from ``capgate._sys.clean_env.build_child_env``) or
contain the filesystem/network (rlimits are not a sandbox; see the container backend).
Without a cgroup and without root, a ``setsid`` escapee is outside the process group and
survives the kill (the process count is still bounded by ``RLIMIT_NPROC``). Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from capgate._sys.cgroup import PidsCgroup, create_pids_cgroup
from capgate._sys.rlimits import MB, RlimitTable, apply_rlimits, limit_table, user_process_count
from capgate.errors import UnsupportedPlatform

if TYPE_CHECKING:
    from capgate.policy.model import Limits

__all__ = ["RunResult", "supervise"]

_PR_SET_PDEATHSIG = 1
_CHUNK = 65536
_uid_counter = itertools.count()
# Throw-away uids for root without cgroups: far above any real account (and below 2**31).
_SPARE_UID_BASE = 1_900_000_000

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc oddities
    _libc = None


@dataclass(frozen=True)
class RunResult:
    """What happened to one supervised child."""

    returncode: int  # negative = killed by that signal, like subprocess
    stdout: bytes | None  # None when not captured
    stderr: bytes | None
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float
    timed_out: bool
    limits_fired: tuple[str, ...]  # e.g. ("wallTimeSeconds",), ("cpuSeconds",), ("maxProcesses",)
    containment: str = "cgroup"  # "cgroup", "spare-uid" or "rlimit-nproc"


class _Capped:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.kept = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = self.cap - self.kept
        if room <= 0:
            self.truncated = True
            return
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self.parts.append(data)
        self.kept += len(data)

    def value(self) -> bytes:
        return b"".join(self.parts)


def _make_preexec(procs_fd: int | None, table: RlimitTable) -> Callable[[], None]:
    libc = _libc

    def preexec() -> None:  # runs in the child between fork and exec: no imports, no locks
        if procs_fd is not None:
            os.write(procs_fd, b"0")  # join the run's pids cgroup: descendants are born inside
        apply_rlimits(table)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return preexec


def _uid_processes(uid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{name}").st_uid == uid:
                    out.append(int(name))
    return out


class _Tree:
    """How to find and kill every process of one run."""

    def __init__(self, cgroup: PidsCgroup | None, spare_uid: int | None) -> None:
        self.cgroup = cgroup
        self.spare_uid = spare_uid
        self.pgid: int | None = None

    def kill(self) -> None:
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if self.spare_uid is not None:
            for _ in range(1000):
                members = _uid_processes(self.spare_uid)
                if not members:
                    break
                for pid in members:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.001)


def supervise(
    argv: Sequence[str],
    *,
    limits: Limits,
    env: Mapping[str, str],
    cwd: str,
    input: bytes | None = None,
    capture: bool = True,
    timeout: float | None = None,
    pass_fds: Sequence[int] = (),
    max_output_bytes: int | None = None,
    executable: str | None = None,
    remove_after: Sequence[str] = (),
) -> RunResult:
    """Run ``argv`` to completion inside ``limits``; see the module docstring.

    ``executable``: the resolved file to exec (``argv[0]`` stays what the child sees).
    ``timeout``: seconds, capped by ``limits.wall_time_seconds`` (which applies when None).
    With ``capture=False`` the child inherits this process's stdin/stdout/stderr (unless
    ``input`` is given, which is fed on a pipe). Raises ``OSError`` when the child cannot be
    started or contained (never runs it uncontained), ``UnsupportedPlatform`` off Linux.
    """
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatform("capgate.supervisor needs Linux (pids cgroup, prctl)")
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty sequence of strings")
    wall = float(limits.wall_time_seconds)
    budget = wall if timeout is None else max(0.0, min(float(timeout), wall))
    cap = limits.max_captured_output_mb * MB if max_output_bytes is None else max(0, int(max_output_bytes))

    cgroup = create_pids_cgroup(limits.max_processes)  # OSError propagates: fail closed
    spare_uid: int | None = None
    nproc: int | None = None
    containment = "cgroup"
    if cgroup is None:
        if os.geteuid() == 0:
            spare_uid = _SPARE_UID_BASE + (os.getpid() * 1000 + next(_uid_counter)) % 100_000_000
            nproc = limits.max_processes
            containment = "spare-uid"
        else:
            nproc = user_process_count() + limits.max_processes
            containment = "rlimit-nproc"
    tree = _Tree(cgroup, spare_uid)
    procs_fd = cgroup.procs_fd() if cgroup is not None else None
    start = time.monotonic()
    timed_out = False
    out = _Capped(cap)
    err = _Capped(cap)
    proc: subprocess.Popen[bytes] | None = None
    status = 0
    cpu_used = 0.0
    try:
        pipe_in = subprocess.PIPE if input is not None else (subprocess.DEVNULL if capture else None)
        pipe_out = subprocess.PIPE if capture else None
        proc = subprocess.Popen(
            list(argv),
            executable=executable,
            stdin=pipe_in,
            stdout=pipe_out,
            stderr=pipe_out,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
            preexec_fn=_make_preexec(procs_fd, limit_table(limits, nproc=nproc)),
            user=spare_uid,
            group=spare_uid,
            extra_groups=[] if spare_uid is not None else None,
        )
        tree.pgid = proc.pid
        timed_out = _pump(proc, input, out, err, start + budget)
        if timed_out:
            tree.kill()
        status, cpu_used = _reap(proc)
        tree.kill()  # the child is gone: whatever it left behind goes too
        _drain(proc, out, err, time.monotonic() + 2.0)
    finally:
        if proc is not None and proc.returncode is None:
            tree.kill()
            with contextlib.suppress(Exception):
                _reap(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if procs_fd is not None:
            os.close(procs_fd)
        hits = cgroup.max_hits() if cgroup is not None else 0
        if cgroup is not None:
            cgroup.remove()
        for path in remove_after:
            shutil.rmtree(path, ignore_errors=True)
    duration = time.monotonic() - start
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    fired: list[str] = []
    if timed_out:
        fired.append("wallTimeSeconds")
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and cpu_used >= limits.cpu_seconds):
        fired.append("cpuSeconds")
    if returncode == -signal.SIGXFSZ:
        fired.append("maxFileSizeMb")
    if hits:
        fired.append("maxProcesses")
    return RunResult(
        returncode=returncode,
        stdout=out.value() if capture else None,
        stderr=err.value() if capture else None,
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        duration=duration,
        timed_out=timed_out,
        limits_fired=tuple(fired),
        containment=containment,
    )


def _pump(proc: subprocess.Popen[bytes], data: bytes | None, out: _Capped, err: _Capped, deadline: float) -> bool:
    """Feed stdin, read stdout/stderr, until the child exits. True if the deadline passed."""
    sel = selectors.DefaultSelector()
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
    except (AttributeError, OSError):
        pidfd = None
    sinks: dict[int, _Capped] = {}
    for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ, sink)
            sinks[stream.fileno()] = sink
    view = memoryview(data) if data is not None else memoryview(b"")
    stdin: IO[bytes] | None = proc.stdin
    if stdin is not None:
        if len(view):
            os.set_blocking(stdin.fileno(), False)
            sel.register(stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        else:
            stdin.close()
            stdin = None
    try:
        while True:
            if pidfd is None and proc.poll() is not None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return proc.poll() is None
            wait = left if pidfd is not None else min(left, 0.01)
            for key, _ in sel.select(wait):
                tag = key.data
                if tag == "exit":
                    return False
                if tag == "stdin" and stdin is not None:
                    try:
                        sent = os.write(stdin.fileno(), view[:_CHUNK])
                        view = view[sent:]
                    except BlockingIOError:
                        continue
                    except OSError:  # BrokenPipe: the child stopped reading
                        view = view[len(view):]
                    if not len(view):
                        sel.unregister(stdin.fileno())
                        stdin.close()
                        stdin = None
                    continue
                fd = key.fd
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    sinks[fd].add(chunk)
                else:
                    sel.unregister(fd)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for the child with ``wait4`` (for its CPU time); returns (status, cpu seconds)."""
    while True:
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:  # already reaped elsewhere
            proc.returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
            code = proc.returncode
            return (code & 0x7F if code < 0 else (code << 8)), 0.0
    proc.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return status, usage.ru_utime + usage.ru_stime


def _drain(proc: subprocess.Popen[bytes], out: _Capped, err: _Capped, deadline: float) -> None:
    """Read what is left in the pipes after the tree is dead (bounded by ``deadline``)."""
    streams = [(s, sink) for s, sink in ((proc.stdout, out), (proc.stderr, err)) if s is not None]
    if not streams:
        return
    sel = selectors.DefaultSelector()
    try:
        for stream, sink in streams:
            sel.register(stream.fileno(), selectors.EVENT_READ, sink)
        open_fds = len(streams)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in sel.select(left):
                try:
                    chunk = os.read(key.fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    key.data.add(chunk)
                else:
                    sel.unregister(key.fd)
                    open_fds -= 1
    finally:
        sel.close()
