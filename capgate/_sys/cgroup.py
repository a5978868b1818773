"""A pids cgroup per run: the process count bound that holds for root, and the whole-tree kill.

``RLIMIT_NPROC`` does not bind for root and counts a whole uid; a pids cgroup counts exactly
the tasks of one run, whoever they belong to. Each run gets a fresh cgroup directory below
the caller's own pids cgroup (cgroup v1 ``pids`` controller, or cgroup v2 where ``pids`` is
enabled in the caller's ``cgroup.subtree_control``) with ``pids.max = maxProcesses``. The
child joins it before it execs (it writes ``0`` — itself — to ``cgroup.procs``), so every
descendant is born inside: a ``setsid`` double-fork cannot leave it, and ``kill_all`` finds
every member however it detached. ``remove`` kills what is left and deletes the directory.
Directories of runs whose owner died (``capgate-<pid>-…``) are swept on first use.

A run's cgroup that ends **empty** (every member killed) is kept for the next run of this
process instead of being removed (``release``): an empty cgroup is as good as a fresh one,
and mkdir/rmdir in cgroupfs costs more than the rest of starting a small command. Its
``pids.max`` is rewritten for the next run, and ``max_hits`` counts from the hand-over.
The kept ones are removed at interpreter exit (or swept later if the process was killed).

What it does not do: work without write access to the cgroup tree (unprivileged users on
most distributions, most containers): ``create`` then returns ``None`` and the supervisor
falls back (see ``capgate.supervisor``). It bounds processes only; memory and CPU are rlimits.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import signal
import threading
import time

__all__ = ["PidsCgroup", "cgroup_home_procs_fd", "cgroup_parent", "create_pids_cgroup", "keep_migrations_warm",
           "layout"]

_counter = itertools.count()
_probe_lock = threading.Lock()
_probed = False
_parent: str | None = None
_version = 0
_NAME = re.compile(r"capgate-(\d+)-\d+\Z")


def _still_home() -> bool:
    """Is this process still where it was when ``cgroup_parent`` was found (every hierarchy:
    a move anywhere ends the warming, which is only an optimisation)?"""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            return fh.read() == _home_membership
    except OSError:
        return False


_home_membership: str | None = None


def _find_parent() -> tuple[str | None, int]:
    """The directory under which this process may create pids cgroups, and the version."""
    global _home_membership
    try:
        mounts = _cgroup_mounts()
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            _home_membership = fh.read()
        memberships = _home_membership.splitlines()
    except OSError:
        return None, 0
    v1_mount = next((point for fstype, point, options in mounts if fstype == "cgroup" and "pids" in options), None)
    v2_mount = next((point for fstype, point, _options in mounts if fstype == "cgroup2"), None)
    for line in memberships:
        _hid, controllers, rel = [*line.split(":", 2), "", ""][:3]
        if v1_mount and "pids" in controllers.split(","):
            return _usable(os.path.join(v1_mount, rel.lstrip("/")), 1)
    if v2_mount:
        for line in memberships:
            if line.startswith("0::"):
                base = os.path.join(v2_mount, line[3:].lstrip("/"))
                try:
                    with open(os.path.join(base, "cgroup.subtree_control"), encoding="utf-8") as fh:
                        enabled = fh.read().split()
                except OSError:
                    return None, 0
                if "pids" in enabled:
                    return _usable(base, 2)
    return None, 0


_V1_CONTROLLERS = frozenset({"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
                             "net_cls", "net_prio", "perf_event", "pids", "rdma"})


def _cgroup_mounts() -> list[tuple[str, str, list[str]]]:
    """The cgroup file systems mounted here, from ``/proc/self/mountinfo``: (type — cgroup or
    cgroup2 —, mount point, super options: a v1 hierarchy's controllers are among them)."""
    out: list[tuple[str, str, list[str]]] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh.read().splitlines():
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                out.append((rfields[0], fields[4], rfields[2].split(",")))
    return out


def layout() -> dict[str, object]:
    """The cgroup layout as ``capgate doctor`` reports it: ``version`` (v1, v2, hybrid — v1
    controllers beside an empty v2 tree — or none), the mounts, where the ``pids`` and
    ``memory`` controllers are for this process, and the directory capgate would create its
    per-run pids cgroups under (``perRunPids``; None: runs use rlimits only). Read-only: this
    sweeps nothing and creates nothing."""
    try:
        mounts = _cgroup_mounts()
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            memberships = fh.read().splitlines()
    except OSError as exc:
        return {"version": "none", "why": f"cannot read the cgroup mounts: {exc}", "mounts": [],
                "controllers": {}, "perRunPids": None}
    v1 = {c: point for fstype, point, options in mounts if fstype == "cgroup" for c in options}
    v2 = next((point for fstype, point, _options in mounts if fstype == "cgroup2"), None)
    v2_controllers: list[str] = []
    if v2 is not None:
        own = next((line[3:] for line in memberships if line.startswith("0::")), "/")
        try:
            with open(os.path.join(v2, own.lstrip("/"), "cgroup.controllers"), encoding="utf-8") as fh:
                v2_controllers = fh.read().split()
        except OSError:
            v2_controllers = []
    controllers: dict[str, str | None] = {}
    for name in ("pids", "memory"):
        if name in v1:
            controllers[name] = f"v1 at {v1[name]}"
        elif name in v2_controllers:
            controllers[name] = f"v2 at {v2}"
        else:
            controllers[name] = None
    has_v1 = bool(_V1_CONTROLLERS.intersection(v1))  # (a ``name=systemd`` hierarchy alone has none)
    version = "hybrid" if has_v1 and v2 else "v1" if has_v1 else "v2" if v2 else "none"
    parent, _version_found = _find_parent()
    return {"version": version, "mounts": [f"{fstype} {point}" for fstype, point, _options in mounts],
            "controllers": controllers, "perRunPids": parent}


def _usable(base: str, version: int) -> tuple[str | None, int]:
    if not os.access(base, os.W_OK | os.X_OK):
        return None, 0
    return base, version


def _sweep(parent: str) -> None:
    """Remove cgroups left by capgate processes that died before cleaning up."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = _NAME.match(name)
        if not match:
            continue
        owner = int(match.group(1))
        try:
            os.kill(owner, 0)
            continue  # owner alive: its run, not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        PidsCgroup(os.path.join(parent, name), _version).remove()


def cgroup_parent() -> str | None:
    """Where per-run pids cgroups go, or None if this machine/user cannot have them."""
    global _probed, _parent, _version
    if _probed:
        return _parent
    with _probe_lock:
        if not _probed:
            _parent, _version = _find_parent()
            if _parent is not None:
                _sweep(_parent)
            _probed = True
    return _parent


_home_fd: int | None = None
_home_owner = 0


def cgroup_home_procs_fd() -> int:
    """A cached close-on-exec descriptor on ``cgroup.procs`` of ``cgroup_parent()``.

    The spawner (``capgate._sys.spawner``) writes ``b"0"`` to it to move itself back out of
    a run's cgroup after starting the child there. Raises ``OSError`` without a cgroup.
    """
    global _home_fd, _home_owner
    parent = cgroup_parent()
    if parent is None:
        raise OSError("no pids cgroup on this machine")
    with _probe_lock:
        if _home_fd is None or _home_owner != os.getpid():
            _home_fd = os.open(os.path.join(parent, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            _home_owner = os.getpid()
        return _home_fd


_warm_lock = threading.Lock()
_warm_until = 0.0
_warm_running = False
_WARM_EVERY = 0.003


def keep_migrations_warm(seconds: float) -> None:
    """Keep cgroup migration fast for the next ``seconds`` (extends a window already open).

    Why: joining a run's cgroup takes the kernel's global ``cgroup_threadgroup_rwsem`` for
    writing, and the first writer after an idle spell waits a whole RCU grace period (7 ms on
    an idle machine here, 5-25 ms under load): on the launcher's critical path, and on the
    first ``proc.run`` of every burst of commands. A writer that comes within a grace period
    of the previous one does not wait. So a daemon thread of *this* process moves it into
    the cgroup it is already in (a no-op migration that takes the lock) every 3 ms until the
    window closes, then ends; the next call starts it again. The launcher opens a window
    while it starts; ``supervise`` opens a short one after every run. It is this process,
    outside every sandbox, that holds the writable ``cgroup.procs`` — never the spawner, whose
    children could take the descriptor from it. Best effort; errors end it.
    """
    global _warm_until, _warm_running
    until = time.monotonic() + seconds
    with _warm_lock:
        _warm_until = max(_warm_until, until)
        if _warm_running:
            return
        try:
            fd = cgroup_home_procs_fd()
        except OSError:
            return
        _warm_running = True

    def run() -> None:
        global _warm_running
        while True:
            with _warm_lock:
                if time.monotonic() >= _warm_until or not _still_home():
                    # (someone moved this process elsewhere: a write would move it back)
                    _warm_running = False
                    return
            try:
                os.write(fd, b"0")
            except OSError:
                with _warm_lock:
                    _warm_running = False
                return
            time.sleep(_WARM_EVERY)

    try:
        threading.Thread(target=run, name="capgate-cgroup-warm", daemon=True).start()
    except RuntimeError:  # interpreter shutting down
        with _warm_lock:
            _warm_running = False


class PidsCgroup:
    """One run's pids cgroup directory.

    The control files read or written on every run (``cgroup.procs`` for joining,
    ``pids.current``, ``pids.events``) stay open, close-on-exec, for the cgroup's lifetime and
    are read with ``pread`` at offset 0 (a fresh snapshot each time): opening a cgroupfs file
    costs more than reading it.
    """

    def __init__(self, path: str, version: int) -> None:
        self.path = path
        self.version = version
        self.max = -1
        self.known_empty = True
        self._hits_before = 0
        self._hits_seen = 0
        self._fds: dict[str, int] = {}
        self._has_kill: bool | None = None

    def _fd(self, name: str, flags: int = os.O_RDONLY) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(os.path.join(self.path, name), flags | os.O_CLOEXEC)
            self._fds[name] = fd
        return fd

    def _read(self, name: str) -> bytes:
        return os.pread(self._fd(name), 4096, 0)

    def procs_fd(self) -> int:
        """A close-on-exec descriptor on ``cgroup.procs``; the child writes ``b"0"`` to it.

        Owned by this object (closed by ``remove``): do not close it.
        """
        self.known_empty = False
        return self._fd("cgroup.procs", os.O_WRONLY)

    def current_fd(self) -> int:
        """A close-on-exec read-only descriptor on ``pids.current`` (owned by this object)."""
        return self._fd("pids.current")

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs"), encoding="ascii") as fh:
                return [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            return []

    def max_hits(self) -> int:
        """How many forks ``pids.max`` refused during this run (from ``pids.events``)."""
        try:
            for line in self._read("pids.events").decode("ascii").splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    self._hits_seen = int(value)
                    return self._hits_seen - self._hits_before
        except (OSError, ValueError):
            pass
        return 0

    def _current(self) -> int:
        """Tasks charged to the cgroup: members plus killed ones not yet reaped; -1 if unknown."""
        try:
            return int(self._read("pids.current"))
        except (OSError, ValueError):
            return -1

    def set_max(self, max_processes: int) -> None:
        if max_processes != self.max:
            with open(os.path.join(self.path, "pids.max"), "w", encoding="ascii") as fh:
                fh.write(str(max_processes))
            self.max = max_processes

    def release(self, *, hits_read: bool = False) -> None:
        """The run is over: keep the cgroup for the next run if it is empty, else remove it.
        ``hits_read``: the caller read ``max_hits`` after the run's tree was dead."""
        if (self.known_empty or self.kill_all(deadline=0.5)) and self._current() == 0:
            # pids.current also counts killed tasks not yet reaped (orphan zombies): reusing
            # such a cgroup would hand the next run fewer processes than it was promised.
            if not hits_read:
                self.max_hits()
            self._hits_before = self._hits_seen
            self.known_empty = True
            with _spare_lock:
                if len(_spare) < _MAX_SPARE and _spare_owner[0] == os.getpid():
                    _spare.append(self)
                    return
        self.remove()

    def kill_all(self, *, deadline: float = 5.0) -> bool:
        """SIGKILL every member until none is left; True when the cgroup is empty.

        Each pass kills all members present; one forked between read and kill is found by
        the next pass, and ``pids.max`` keeps the set finite, so this converges quickly.
        """
        if self._current() == 0:  # no task at all (the usual end of a run): nothing can fork in
            self.known_empty = True
            return True
        kill_file = os.path.join(self.path, "cgroup.kill")
        if self._has_kill is None:
            self._has_kill = self.version == 2 and os.path.exists(kill_file)
        if self._has_kill:
            with contextlib.suppress(OSError):
                with open(kill_file, "w", encoding="ascii") as fh:
                    fh.write("1")
        end = time.monotonic() + deadline
        while True:
            members = self.pids()
            if not members:
                self.known_empty = True  # nothing can enter an empty cgroup but a writer of procs
                return True
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > end:
                return False
            time.sleep(0.001)

    def remove(self, *, deadline: float = 5.0) -> bool:
        """Kill what is left and delete the directory; True when it is gone."""
        self.kill_all(deadline=deadline)
        self.close_files()
        end = time.monotonic() + deadline
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                # EBUSY: killed tasks are still exiting (zombies not yet reaped count too)
                if time.monotonic() > end:
                    return False
                self.kill_all(deadline=0.1)
                self.close_files()
                time.sleep(0.002)

    def close_files(self) -> None:
        """Close the cached control-file descriptors (they keep nothing alive, but are ours)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


_spare: list[PidsCgroup] = []
_spare_lock = threading.Lock()
_spare_owner = [os.getpid()]
_MAX_SPARE = 8


def _remove_spares() -> None:
    with _spare_lock:
        groups = list(_spare) if _spare_owner[0] == os.getpid() else []
        _spare.clear()
    for group in groups:
        group.remove(deadline=1.0)


def _forget_after_fork() -> None:
    global _home_fd, _warm_lock, _warm_running, _warm_until
    for group in _spare:  # the parent's: never reused nor removed by the child
        group.close_files()
    _spare.clear()
    _spare_owner[0] = os.getpid()
    _home_fd = None
    # The parent's warming thread does not exist here (and may have held the lock).
    _warm_lock = threading.Lock()
    _warm_running = False
    _warm_until = 0.0


atexit.register(_remove_spares)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def create_pids_cgroup(max_processes: int) -> PidsCgroup | None:
    """An empty pids cgroup limited to ``max_processes`` tasks, or None when unavailable.

    Raises ``OSError`` if the cgroup tree is usable but this one could not be set up (the
    caller must then fail closed rather than run the child unbounded). Give it back with
    ``release`` (or ``remove``).
    """
    parent = cgroup_parent()
    if parent is None:
        return None
    group: PidsCgroup | None = None
    with _spare_lock:
        if _spare and _spare_owner[0] == os.getpid():
            group = _spare.pop()
    if group is not None and group._current() != 0:  # someone joined it since: not fresh
        group.remove()
        group = None
    if group is None:
        path = os.path.join(parent, f"capgate-{os.getpid()}-{next(_counter)}")
        os.mkdir(path)
        group = PidsCgroup(path, _version)
    try:
        group.set_max(max_processes)
    except OSError:
        group.remove()
        raise
    return group
