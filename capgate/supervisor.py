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
* starts the child through a small reused **spawner** process (``capgate._sys.spawner``),
  which puts it in the cgroup and under the rlimits before ``execve`` without forking this
  (big) process; the spawner kills the run if this process dies, and a spawner that dies is
  replaced (its run is killed and reported as ``OSError``). Without a spawner: ``Popen`` with
  ``preexec_fn`` (same containment, slower; ``PR_SET_PDEATHSIG`` on the child);
* cgroups left by a supervisor that crashed are swept by the next one;
* removes (or keeps for reuse, when empty) the cgroup, the private ``HOME``/``TMPDIR`` made
  with ``private_dirs=True``, and the paths in ``remove_after``.

What it does not do: decide anything (``capgate.cmdrules`` does, before this is called),
clean the environment (pass ``env`` from ``capgate._sys.clean_env.build_child_env``) or
contain the filesystem/network (rlimits are not a sandbox; see the container backend).
Without a cgroup and without root, a ``setsid`` escapee is outside the process group and
survives the kill (the process count is still bounded by ``RLIMIT_NPROC``). Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import math
import os
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from capgate._sys import spawner as _spawner
from capgate._sys.cgroup import PidsCgroup, cgroup_home_procs_fd, create_pids_cgroup, keep_migrations_warm
from capgate._sys.landlock import LandlockUnavailable, Plan, Ruleset
from capgate._sys.rlimits import MB, RlimitTable, apply_rlimits, limit_table, user_process_count
from capgate.errors import UnsupportedPlatform

if TYPE_CHECKING:
    from capgate.policy.model import Limits

__all__ = ["RunResult", "in_soft_sandbox", "remove_tree", "supervise"]

_PR_SET_PDEATHSIG = 1
_CHUNK = 65536
_uid_counter = itertools.count()
_WARM_AFTER_RUN = 0.25  # seconds of cgroup migration kept warm after each run
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
    exec_confined: bool = False  # the tree could execute only the exec allowlist (Landlock)
    write_confined: bool = False  # the tree could write only beneath the write roots (Landlock)


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


def _make_preexec(procs_fd: int | None, table: RlimitTable, ruleset: Ruleset | None) -> Callable[[], None]:
    libc = _libc

    def preexec() -> None:  # runs in the child between fork and exec: no imports, no locks
        if procs_fd is not None:
            os.write(procs_fd, b"0")  # join the run's pids cgroup: descendants are born inside
        apply_rlimits(table)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if ruleset is not None and ruleset.restrict_self() != 0:
            raise OSError(errno.EPERM, "could not apply the Landlock ruleset")  # fail closed

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
        self.confine: Plan | None = None  # the Landlock plan for the tree (None: none)
        self.confined = False  # whether the kernel enforces ``confine`` for this run

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
    private_dirs: bool = False,
    confine: Plan | None = None,
) -> RunResult:
    """Run ``argv`` to completion inside ``limits``; see the module docstring.

    ``private_dirs``: the child gets a fresh private (``0700``) directory as ``HOME`` and an
    empty ``0700`` directory inside it as ``TMPDIR`` (replacing those of ``env``), removed
    before this returns.
    ``executable``: the resolved file to exec (``argv[0]`` stays what the child sees); when
    None, a bare ``argv[0]`` is looked up on the ``PATH`` of ``env``.
    ``timeout``: seconds, capped by ``limits.wall_time_seconds`` (which applies when None).
    ``confine``: a ``capgate._sys.landlock.Plan`` (``landlock.plan``) the child and every
    descendant run under — what they may execute, write, read, connect to, signal — enforced
    by Landlock (``RunResult.exec_confined``/``write_confined`` say whether it was).
    With ``capture=False`` the child inherits this process's stdin/stdout/stderr (unless
    ``input`` is given, which is fed on a pipe). ``pass_fds`` (numbers above 2) reach the
    child at the same numbers. Raises ``OSError`` when the child cannot be started or
    contained (never runs it uncontained) — ``FileNotFoundError``/``PermissionError`` for
    an executable that cannot be run — and ``UnsupportedPlatform`` off Linux.
    """
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatform("capgate.supervisor needs Linux (pids cgroup, prctl)")
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty sequence of strings")
    args = [os.fsdecode(a) for a in argv]
    passed = tuple(int(fd) for fd in pass_fds)
    if any(fd < 3 for fd in passed):
        raise ValueError("pass_fds must be descriptors above 2")
    exe = executable if executable is not None else _which(args[0], env)
    wall = float(limits.wall_time_seconds)
    budget = wall if timeout is None else max(0.0, min(float(timeout), wall))
    cap = limits.max_captured_output_mb * MB if max_output_bytes is None else max(0, int(max_output_bytes))
    if in_soft_sandbox():
        return _supervise_in_soft_sandbox(args, exe, env, cwd, input, capture, passed, budget, cap,
                                          remove_after, private_dirs)

    cgroup = None
    pending: list[tuple[_spawner.Spawner, str]] = []
    try:
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
        table = limit_table(limits, nproc=nproc)
        tree = _Tree(cgroup, spare_uid)
        tree.confine = confine
        outcome = _run(args, exe, env, cwd, input, capture, passed, table, cgroup, spare_uid, tree,
                       budget, cap, limits, private_dirs, pending)
    finally:
        hits = cgroup.max_hits() if cgroup is not None else 0
        if cgroup is not None:
            cgroup.release(hits_read=True)
            # Commands come in bursts: the next run's cgroup join then skips an RCU grace
            # period (~5 ms after ~90 ms idle, measured; ``keep_migrations_warm``).
            keep_migrations_warm(_WARM_AFTER_RUN)
        for spawner, private in pending:  # started by _run after the tree was dead
            try:
                spawner.cleanup_wait()
            except OSError:
                remove_tree(private)
            _spawner.release(spawner)
        for path in remove_after:
            remove_tree(path)
    status, cpu_used, timed_out, out, err, duration = outcome
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
        exec_confined=tree.confined and tree.confine is not None and tree.confine.restricts_exec,
        write_confined=tree.confined and tree.confine is not None and tree.confine.restricts_write,
    )


def in_soft_sandbox() -> bool:
    """Whether this process runs under the soft sandbox's hooks (``capgate run``): then
    ``supervise`` takes ``_supervise_in_soft_sandbox`` and a ``confine`` plan is not used."""
    soft = sys.modules.get("capgate.soft")
    return soft is not None and getattr(soft, "installed", lambda: None)() is not None


def _supervise_in_soft_sandbox(
    args: list[str], exe: str, env: Mapping[str, str], cwd: str, data: bytes | None, capture: bool,
    passed: tuple[int, ...], budget: float, cap: int, remove_after: Sequence[str], private_dirs: bool,
) -> RunResult:
    """``supervise`` inside a soft-sandboxed process (``capgate run``): a plain ``Popen``.

    The run's containment is already there, set by the launcher for the whole tree this
    process belongs to: rlimits, the pids cgroup, wall time, Landlock. What is left to do
    here goes through the sandbox's hooks like any program's ``subprocess`` call — the
    ``subprocess.Popen`` event judges the resolved command again, the ``fork_exec`` guard
    runs only what it approved — so ``capgate.proc`` gets nothing a plain ``subprocess.run``
    would not. Not done here, because the hooks refuse it to every caller (cgroups, ctypes
    ``prctl``, a Landlock ruleset of its own, the spawner): the wall time kills the child's
    process group (a new group, same session: signals stay inside the sandbox), not a
    cgroup; ``containment`` says ``"soft-sandbox"``."""
    private = _make_private() if private_dirs else None
    start = time.monotonic()
    out = _Capped(cap)
    err = _Capped(cap)
    proc: subprocess.Popen[bytes] | None = None
    timed_out = False
    status = 0
    group: dict[str, int] = {"process_group": 0} if sys.version_info >= (3, 11) else {}
    try:
        proc = subprocess.Popen(
            args, executable=exe, cwd=cwd, env=_with_private(env, private), close_fds=True, pass_fds=passed,
            stdin=subprocess.PIPE if data is not None else (subprocess.DEVNULL if capture else None),
            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
            **group,  # type: ignore[call-overload]
        )
        timed_out = _pump(proc, data, out, err, start + budget)
        if timed_out or group:
            # Before the reap: the exited child is a zombie that still holds its pid and
            # group id, so what it left behind in the group is reached, and nothing else.
            _kill_group(proc.pid, bool(group))
        status, _cpu = _reap(proc)
        _drain(proc, out, err, time.monotonic() + 2.0)
    finally:
        if proc is not None:
            if proc.returncode is None:
                _kill_group(proc.pid, bool(group))
                with contextlib.suppress(Exception):
                    _reap(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if private is not None:
            remove_tree(private)
        for path in remove_after:
            remove_tree(path)
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    fired = {-signal.SIGXCPU: "cpuSeconds", -signal.SIGXFSZ: "maxFileSizeMb"}.get(returncode)
    return RunResult(
        returncode=returncode,
        stdout=out.value() if capture else None,
        stderr=err.value() if capture else None,
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        duration=time.monotonic() - start,
        timed_out=timed_out,
        limits_fired=(*(["wallTimeSeconds"] if timed_out else []), *([fired] if fired else [])),
        containment="soft-sandbox",
    )


def _kill_group(pid: int, grouped: bool) -> None:
    """SIGKILL the child's process group (or the child alone when it has no group of its own,
    on Python 3.10). Called only before the child is reaped: its pid cannot be reused yet."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if grouped:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def remove_tree(path: str) -> None:
    """Remove a run's private directory: a few ``rmdir`` calls when the child left it empty."""
    try:
        with os.scandir(path) as entries:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        if all(is_dir for _name, is_dir in names):
            for name, _is_dir in names:
                os.rmdir(os.path.join(path, name))
            os.rmdir(path)
            return
    except FileNotFoundError:
        return
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)  # fd-based: safe against planted symlinks


def _which(name: str, env: Mapping[str, str]) -> str:
    """``argv[0]`` as the file to exec: a path as given, a bare name on the child's PATH."""
    if "/" in name:
        return name
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


_Outcome = tuple[int, float, bool, _Capped, _Capped, float]


def _std_fd(fd: int) -> int:
    """``fd`` of this process for the child, or /dev/null when it is closed here."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return _devnull()


_devnull_fd: int | None = None


def _devnull() -> int:
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _devnull_fd


def _run(
    args: list[str], exe: str, env: Mapping[str, str], cwd: str, data: bytes | None, capture: bool,
    passed: tuple[int, ...], table: RlimitTable, cgroup: PidsCgroup | None, spare_uid: int | None,
    tree: _Tree, budget: float, cap: int, limits: Limits, private_dirs: bool,
    pending: list[tuple[_spawner.Spawner, str]],
) -> _Outcome:
    fast = cgroup is not None and limits.max_processes >= 2 and spare_uid is None and _carriable(table)
    try:
        spawner = _spawner.acquire(tuple((row[0], row[1], row[2]) for row in table) if fast else None,
                                   tree.confine)
        tree.confined = spawner.confined
    except _spawner.SpawnerUnavailable:
        private = _make_private() if private_dirs else None
        try:
            return _run_popen(args, exe, _with_private(env, private), cwd, data, capture, passed, table, cgroup,
                              spare_uid, tree, budget, cap)
        finally:
            if private is not None:
                remove_tree(private)
    private = spawner.take_private_dir() if private_dirs else None
    out = _Capped(cap)
    err = _Capped(cap)
    ours: list[int] = []  # our ends of the pipes, closed at the end
    theirs: list[int] = []  # the child's ends, closed once it is started
    child: _spawner.SpawnedChild | None = None
    procs_fd = cgroup.procs_fd() if cgroup is not None else None
    done = False
    start = time.monotonic()
    try:
        stdin_w = out_r = err_r = None
        if data is not None:
            r, stdin_w = os.pipe2(os.O_CLOEXEC)
            ours.append(stdin_w)
            theirs.append(r)
            child_in = r
        elif capture:
            child_in = _devnull()
        else:
            child_in = _std_fd(0)
        if capture:
            out_r, w1 = os.pipe2(os.O_CLOEXEC)
            err_r, w2 = os.pipe2(os.O_CLOEXEC)
            ours += [out_r, err_r]
            theirs += [w1, w2]
            child_out, child_err = w1, w2
        else:
            child_out = _std_fd(1)
            child_err = _std_fd(2)
        layout = [0, 1, 2, *passed]
        fds = [child_in, child_out, child_err, *passed]
        if procs_fd is not None and cgroup is not None:
            home = cgroup_home_procs_fd()
            layout += [_spawner.CGROUP_PROCS, _spawner.HOME_PROCS, _spawner.CGROUP_CURRENT]
            fds += [procs_fd, home, cgroup.current_fd()]
        request: dict[str, object] = {
            "argv": args,
            "exe": exe,
            "env": _with_private(env, private),
            "private": private,
            "cwd": cwd,
            "limits": [list(row[:3]) for row in table],
            "layout": layout,
            "uid": spare_uid,
            "fast": fast,
            "cgroup_dir": cgroup.path if cgroup is not None else None,
        }
        start = time.monotonic()
        try:
            child = spawner.spawn(request, fds)
        except OSError:
            raise  # (an exec error: the spawner answered, the protocol is in step)
        except BaseException:
            # Interrupted (KeyboardInterrupt, the launcher's RunInterrupted) between the request
            # and its answer: the answer is still unread, so this spawner can never be reused
            # (closing it kills whatever it started).
            spawner.dead = True
            raise
        tree.pgid = child.pid
        for fd in theirs:
            os.close(fd)
        theirs.clear()
        exit_fd = None if child.exited else child.fileno()
        timed_out = _pump_fds(exit_fd, stdin_w, out_r, err_r, data, out, err, start + budget)
        if timed_out:
            tree.kill()
        status, cpu_used, cleaned = _await_result(child, ready=not timed_out and exit_fd is not None)
        done = True
        # The spawner killed the child's process group before reaping it (while its pid could
        # not be reused); a killpg from here, after the reap, could hit a recycled group.
        tree.pgid = None
        tree.kill()  # the child is gone: whatever it left behind (cgroup members) goes too
        if private is not None:
            if cleaned is None:  # the spawner removes it while we drain and free the cgroup
                spawner.cleanup_start(private)
                pending.append((spawner, private))
            elif not cleaned:
                remove_tree(private)
            private = None  # (cleaned: the spawner removed it before reporting the exit)
        _drain_fds([(fd, sink) for fd, sink in ((out_r, out), (err_r, err)) if fd is not None], time.monotonic() + 2.0)
        return status, cpu_used, timed_out, out, err, time.monotonic() - start
    finally:
        if not done:
            tree.kill()
            if child is not None and not spawner.dead:
                try:
                    _await_result(child, grace=2.0)
                except OSError:
                    spawner.dead = True
        if private is not None:  # the run failed before the normal clean-up
            cleaned = False
            if not spawner.dead:
                with contextlib.suppress(OSError):
                    spawner.cleanup(private)
                    cleaned = True
            if not cleaned:
                spawner.dead = True
                remove_tree(private)
        for fd in [*ours, *theirs]:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not pending:
            _spawner.release(spawner)



def _make_private() -> str:
    path = os.path.join(_spawner.private_parent(), f"capgate-run-{os.getpid()}-{os.urandom(8).hex()}")
    os.mkdir(path, 0o700)
    os.mkdir(os.path.join(path, "tmp"), 0o700)
    return path


def _with_private(env: Mapping[str, str], private: str | None) -> dict[str, str]:
    out = dict(env)
    if private is not None:
        out["HOME"] = private
        out["TMPDIR"] = os.path.join(private, "tmp")
    return out


def _carriable(table: RlimitTable) -> bool:
    """Can a spawner live under these limits itself (so its vfork children inherit them)?"""
    for res, _soft, hard, _name in table:
        if res == resource.RLIMIT_AS and hard != resource.RLIM_INFINITY and hard < 256 * MB:
            return False
        if res == resource.RLIMIT_NOFILE and hard != resource.RLIM_INFINITY and hard < 64:
            return False
        if res == resource.RLIMIT_CPU and hard != resource.RLIM_INFINITY and hard < 2:
            return False
    return True


def _await_result(
    child: _spawner.SpawnedChild, grace: float = 10.0, *, ready: bool = False
) -> tuple[int, float, bool | None]:
    """The exit report from the spawner (``SpawnedChild.result``); a spawner that says nothing
    within ``grace`` after the tree was killed is broken and is closed. ``ready``: the
    socket was just seen readable (the report is there, or the spawner died: EOF)."""
    ready = ready or child.exited or bool(select.select([child.fileno()], [], [], grace)[0])
    if not ready:
        child.spawner.dead = True
        raise _spawner.SpawnerDied(errno.ETIMEDOUT, "capgate spawner did not report the child's exit")
    return child.result()


def _run_popen(
    args: list[str], exe: str, env: Mapping[str, str], cwd: str, data: bytes | None, capture: bool,
    passed: tuple[int, ...], table: RlimitTable, cgroup: PidsCgroup | None, spare_uid: int | None,
    tree: _Tree, budget: float, cap: int,
) -> _Outcome:
    """Fallback without a spawner: ``Popen`` with ``preexec_fn`` (a real fork of this process)."""
    procs_fd = cgroup.procs_fd() if cgroup is not None else None
    ruleset: Ruleset | None = None
    if tree.confine is not None:
        try:
            ruleset = Ruleset(tree.confine)  # built here: preexec may not allocate
        except LandlockUnavailable:
            ruleset = None
    tree.confined = ruleset is not None
    env = dict(env)
    if ruleset is not None and tree.confine is not None and tree.confine.restricts_write and "CAPGATE_POLICY" in env:
        # The preexec applies the plan or the child never runs (capgate._sys.frozen_dirs).
        env[_spawner.LANDLOCK_ENV] = _spawner.LANDLOCK_WRITES
    start = time.monotonic()
    timed_out = False
    out = _Capped(cap)
    err = _Capped(cap)
    proc: subprocess.Popen[bytes] | None = None
    status = 0
    cpu_used = 0.0
    try:
        pipe_in = subprocess.PIPE if data is not None else (subprocess.DEVNULL if capture else None)
        pipe_out = subprocess.PIPE if capture else None
        proc = subprocess.Popen(
            args,
            executable=exe,
            stdin=pipe_in,
            stdout=pipe_out,
            stderr=pipe_out,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            pass_fds=passed,
            preexec_fn=_make_preexec(procs_fd, table, ruleset),
            user=spare_uid,
            group=spare_uid,
            extra_groups=[] if spare_uid is not None else None,
        )
        tree.pgid = proc.pid
        timed_out = _pump(proc, data, out, err, start + budget)
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
        if ruleset is not None:
            ruleset.close()
    return status, cpu_used, timed_out, out, err, time.monotonic() - start


def _pump_fds(
    exit_fd: int | None, stdin_w: int | None, out_r: int | None, err_r: int | None, data: bytes | None,
    out: _Capped, err: _Capped, deadline: float,
) -> bool:
    """Feed stdin, read stdout/stderr until ``exit_fd`` is readable. True if the deadline passed.

    ``exit_fd`` None: the child already exited (what is left in the pipes is drained later).
    The pipes are left non-blocking. ``select.poll``: no epoll instance to create per run.
    """
    for fd in (out_r, err_r):
        if fd is not None:
            os.set_blocking(fd, False)
    if exit_fd is None:
        if stdin_w is not None:
            os.close(stdin_w)
        return False
    poller = select.poll()
    readable = select.POLLIN | select.POLLHUP | select.POLLERR
    poller.register(exit_fd, readable)
    sinks: dict[int, _Capped] = {}
    for fd, sink in ((out_r, out), (err_r, err)):
        if fd is not None:
            poller.register(fd, readable)
            sinks[fd] = sink
    view = memoryview(data) if data is not None else memoryview(b"")
    if stdin_w is not None:
        if len(view):
            os.set_blocking(stdin_w, False)
            poller.register(stdin_w, select.POLLOUT | select.POLLERR)
        else:
            os.close(stdin_w)
            stdin_w = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            for fd, _event in poller.poll(max(1, math.ceil(left * 1000))):
                if fd == exit_fd:
                    return False
                if fd == stdin_w:
                    try:
                        sent = os.write(stdin_w, view[:_CHUNK])
                        view = view[sent:]
                    except BlockingIOError:
                        continue
                    except OSError:  # BrokenPipe: the child stopped reading
                        view = view[len(view):]
                    if not len(view):
                        poller.unregister(stdin_w)
                        os.close(stdin_w)
                        stdin_w = None
                    continue
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    sinks[fd].add(chunk)
                else:
                    poller.unregister(fd)
    finally:
        if stdin_w is not None:
            with contextlib.suppress(OSError):
                os.close(stdin_w)


def _drain_fds(pipes: list[tuple[int, _Capped]], deadline: float) -> None:
    """Read what is left in the (non-blocking) pipes after the tree is dead, until EOF
    (bounded by ``deadline``: a writer that escaped the kill cannot hold us)."""
    waiting: dict[int, _Capped] = {}
    for fd, sink in pipes:
        if _read_available(fd, sink):  # usually EOF at once: every writer is gone
            waiting[fd] = sink
    if not waiting:
        return
    poller = select.poll()
    for fd in waiting:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for fd, _event in poller.poll(max(1, math.ceil(left * 1000))):
            if fd in waiting and not _read_available(fd, waiting[fd]):
                poller.unregister(fd)
                del waiting[fd]


def _read_available(fd: int, sink: _Capped) -> bool:
    """Read a non-blocking pipe into ``sink`` until it would block (True) or ends (False)."""
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        sink.add(chunk)


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
