"""A small long-lived helper process that starts supervised children cheaply and contained.

Why: the supervisor must put a child in its pids cgroup and under its rlimits *before* the
child execs anything. Doing that with ``preexec_fn`` forces a real ``fork()`` of the whole
(big, multi-threaded) calling Python process. Instead, a minimal interpreter
(``python -I -S`` importing this file, stdlib only) is started once and reused; per run the
supervisor sends it the argv, executable, environment, cwd, rlimit table, the child's file
descriptors and the run cgroup's ``cgroup.procs`` over a ``socketpair`` (``SCM_RIGHTS``).

How a child is started (the spawner is single-threaded and runs one child at a time):

* **fast path** (the spawner runs as root, so it can raise its own limits back; the run has a
  cgroup and ``maxProcesses >= 2``): the spawner moves *itself* into the run cgroup, lowers
  its *own* rlimits to the run's table, ``chdir``s to the run's cwd and calls
  ``posix_spawn`` (``vfork``-based in glibc: no page-table copy) with ``setsid``, the fd
  ``dup2``s and the ignored signals reset. The child is born inside the cgroup, with the
  rlimits, before its ``execve``. The spawner then restores its limits and moves back to its
  own cgroup. While the spawner is inside it counts against ``pids.max`` (a fork of the child
  in those microseconds is refused: stricter, never looser).
* **fork path** (everything else: not root, no cgroup, a throw-away uid, tiny limits, a
  fast-path error): ``os.fork`` of this small process; the child does ``setsid``, joins the
  cgroup, places its fds, drops to the throw-away uid, sets the rlimits and
  ``PR_SET_PDEATHSIG``, and ``execve``\\ s. An exec error goes back on a close-on-exec pipe.

Either way an exec error (``ENOENT``, ``EACCES``, ...) is reported with its errno and the
supervisor raises the matching ``OSError`` subclass. The spawner reports the pid, then the
wait status and the child's CPU time (``wait4``). When the child exits, the spawner kills its
process group *before* reaping it (the pid cannot be reused yet), then kills every process
still its child: it is a subreaper (``PR_SET_CHILD_SUBREAPER``), so an orphan of the run that
left the process group *and* the cgroup (a root child may write a cgroup root's
``cgroup.procs``) is re-parented to it, not to init, and dies with the run. Then, if the run cgroup's
``pids.current`` is 0 (nothing of the run is left, not even a zombie), it removes the run's
private directory at once and says so in the same exit report, and prepares the next one
while the supervisor finishes. Otherwise the supervisor kills the rest and asks ``cleanup``.
Private directories go on a tmpfs when a suitable one exists (``private_parent``). Only the
descriptors named in the request reach the child, at the numbers the caller used (``pass_fds``
keep their numbers).

Start-up: a launcher that must start its child quickly calls ``prestart`` before it knows
the policy; that spawner starts *blank* (no limits, no Landlock) and ``acquire`` hands it the
rlimit table and plan with a ``configure`` message, which the server takes once and only
before its first child. While a child runs, the spawner holds no writable cgroup file: the
child shares its uid and Landlock domain and could take any descriptor it holds (the run
cgroup's ``pids.current`` is read-only).

Lifetime: the spawner dies with its owner — it watches a pidfd of the owner process and EOF
on its socket; on either it kills the current run (its cgroup members and process group)
and exits. If the spawner dies, the supervisor kills the run's tree itself, raises
``OSError`` for that run, and the next run starts a fresh spawner. A child of a process that
forked (``os.fork``) never uses its parent's spawners.

What it does not do: decide anything, or contain anything by itself — it applies exactly
the limits and cgroup the supervisor hands it (``capgate.supervisor``). Linux only
(``pidfd_open``, ``posix_spawn`` with ``setsid``); ``SpawnerUnavailable`` otherwise.
"""

from __future__ import annotations

# The spawner's own start-up is on every sandboxed run's critical path: only C modules and
# the few pure-Python ones the interpreter has loaded anyway (no ``socket``/``signal``/
# ``threading``/``typing``, whose enums and imports cost ~15 ms in ``python -I -S``).
import _socket as socket
import _thread
import errno
import fcntl as _fcntl
import marshal
import os
import select
import struct
import sys
from time import monotonic as _monotonic

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs ~5 ms here
if TYPE_CHECKING:
    import signal
    from typing import Any

    from capgate._sys.landlock import Plan
else:
    import _signal as signal  # the C half: same functions and numbers, no enum classes

__all__ = [
    "SpawnedChild", "Spawner", "SpawnerDied", "SpawnerUnavailable", "acquire", "discard_prestarted", "prestart",
    "private_parent", "release",
]

_LEN = struct.Struct("!I")
_FD = struct.Struct("i")
_MAX_FDS = 64
# Targets in a request's fd layout that are not child fd numbers.
CGROUP_PROCS = -1
HOME_PROCS = -2
CGROUP_CURRENT = -3  # the run cgroup's pids.current (read-only): is the tree gone at exit?
_PR_SET_CHILD_SUBREAPER = 36
# What a soft-sandboxed child is told when the Landlock plan holds its tree's writes to the
# write roots (``capgate._sys.frozen_dirs``, whose CONFINED_ENV/CONFINED_WRITES these equal).
LANDLOCK_ENV = "CAPGATE_LANDLOCK"
LANDLOCK_WRITES = "writes"
_EXEC_ERRORS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG,
     errno.ETXTBSY, errno.EISDIR, errno.EPERM, errno.E2BIG}
)


# Run as ``python -I -S -c _BOOT DIR ARGS…``: importing this file as a module reuses its
# byte-compiled cache (a script given by path is compiled from source on every start). DIR
# goes at the *end* of ``sys.path``: nothing in it can shadow a standard module.
_BOOT = "import sys; sys.path.append(sys.argv[1]); import spawner; spawner._main(sys.argv[2:])"


class SpawnerUnavailable(OSError):
    """No spawner can run here (the caller then uses its own, slower, fallback)."""


class SpawnerDied(OSError):
    """The spawner went away in the middle of a run."""


# ---------------------------------------------------------------------------------------------
# Wire format: 4-byte length + marshal payload; the first chunk of a request carries the fds.
# ---------------------------------------------------------------------------------------------
def _send(sock: socket.socket, obj: Any, fds: list[int] | tuple[int, ...] = ()) -> None:
    payload = marshal.dumps(obj)
    data = _LEN.pack(len(payload)) + payload
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, buf: bytearray, n: int, fds: list[int] | None) -> None:
    while len(buf) < n:
        if fds is None:
            chunk = sock.recv(65536)
        else:
            # Every server read goes through recvmsg: a plain recv would make the kernel drop
            # (close) descriptors attached to bytes it happens to read ahead. Not
            # socket.recv_fds: before 3.12 it ignores ``flags``, and the fds must be
            # close-on-exec from the first instant (only those placed by dup2 reach a child).
            chunk, ancdata, _flags, _addr = sock.recvmsg(
                65536, socket.CMSG_SPACE(_MAX_FDS * _FD.size), socket.MSG_CMSG_CLOEXEC
            )
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(_FD.unpack_from(payload, i * _FD.size)[0] for i in range(len(payload) // _FD.size))
        if not chunk:
            raise EOFError("spawner socket closed")
        buf += chunk


def _recv(sock: socket.socket, buf: bytearray, fds: list[int] | None = None) -> object:
    """One message; bytes read beyond it stay in ``buf`` for the next call. ``fds``: collect
    received descriptors there (server side; they belong to the next request message)."""
    _recv_exact(sock, buf, _LEN.size, fds)
    (size,) = _LEN.unpack_from(buf)
    _recv_exact(sock, buf, _LEN.size + size, fds)
    # marshal, not pickle, and only between this process and the spawner it started.
    message = marshal.loads(bytes(buf[_LEN.size:_LEN.size + size]))  # noqa: S302
    del buf[:_LEN.size + size]
    return message


# ---------------------------------------------------------------------------------------------
# Client side (in the supervisor process)
# ---------------------------------------------------------------------------------------------
class SpawnedChild:
    """A started child: its pid and the socket on which its exit status will arrive."""

    def __init__(self, spawner: Spawner, pid: int, mode: str) -> None:
        self.spawner = spawner
        self.pid = pid
        self.mode = mode  # "spawn" or "fork"

    def fileno(self) -> int:
        """Readable when the exit status has arrived (or the spawner died) — unless it is
        already buffered: check ``exited`` first."""
        return self.spawner.sock.fileno()

    @property
    def exited(self) -> bool:
        """The exit report already arrived with the pid (read ahead into the buffer)."""
        return bool(self.spawner.buf)

    def result(self) -> tuple[int, float, bool | None]:
        """(wait status, child CPU seconds, private directory removed); blocks. Raises
        ``SpawnerDied``.

        The third item: True when the spawner found the run's cgroup empty right after
        reaping the child and removed the run's private directory (the next one is then
        prepared under the name the request gave); False when that removal failed; None when
        it did not try (no cgroup or no private directory, or something of the run was still
        alive) — the caller then kills the tree and asks for ``cleanup``."""
        try:
            reply = _recv(self.spawner.sock, self.spawner.buf)
        except (EOFError, OSError) as exc:
            self.spawner.dead = True
            raise SpawnerDied(errno.EIO, f"capgate spawner died during the run: {exc}") from None
        if not isinstance(reply, tuple) or reply[0] != "exit":
            self.spawner.dead = True
            raise SpawnerDied(errno.EIO, f"capgate spawner protocol error: {reply!r}")
        _tag, status, cpu, retire, cleaned = reply
        if retire:
            self.spawner.dead = True
        if cleaned is not None:
            self.spawner.next_dir = self.spawner.upcoming
        return int(status), float(cpu), None if cleaned is None else bool(cleaned)


class Spawner:
    """One spawner process and the socket to it. Not thread-safe: one run at a time."""

    def __init__(
        self, limits: tuple[tuple[int, int, int], ...] | None = None, confine: Plan | None = None,
        *, blank: bool = False,
    ) -> None:
        """Start a spawner for ``limits`` and ``confine`` (see ``acquire``). ``blank``: start
        it with neither and do not wait for it; ``configure`` gives it both later
        (``prestart``)."""
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open") or not hasattr(os, "posix_spawn"):
            raise SpawnerUnavailable(errno.ENOSYS, "the capgate spawner needs Linux with pidfd_open and posix_spawn")
        import subprocess  # the caller has it loaded already (supervisor fallback)

        # ``_socket`` objects (not ``socket.socket``: importing socket.py costs ~4 ms of the
        # launcher's start-up, and these have every method used here).
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.owner = os.getpid()
        self.dead = False
        self.limits = None if blank else limits
        self.confine = None if blank else confine
        self.blank = blank  # not configured yet (``configure``)
        self.confined = False  # the spawner (so every child) is under ``confine`` (Landlock)
        self.buf = bytearray()
        self._cleaning = ""
        self._greeted = False
        self.next_dir = self.upcoming = ""
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, os.path.dirname(os.path.abspath(__file__)),
                 str(self.owner), str(theirs.fileno()), _encode_limits(self.limits),
                 "" if self.confine is None else self.confine.encode()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={},  # nothing of the caller's environment: a child may read our /proc/<pid>/environ
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # no terminal: a Ctrl-C reaches the supervisor, not us
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            raise SpawnerUnavailable(exc.errno or errno.EIO, f"cannot start the capgate spawner: {exc}") from exc
        finally:
            theirs.close()
        self.sock = ours
        if not blank:
            self._greet()

    def _greet(self) -> None:
        """Wait for the spawner's hello, then let it prepare the first private directory."""
        try:
            hello = _recv(self.sock, self.buf)
        except (EOFError, OSError) as exc:
            self.close()
            raise SpawnerUnavailable(errno.EIO, f"the capgate spawner did not start: {exc}") from exc
        if not isinstance(hello, tuple) or hello[:2] != ("ready", self.owner) or len(hello) != 3:
            self.close()
            raise SpawnerUnavailable(errno.EIO, f"the capgate spawner said {hello!r}")
        self._greeted = True
        self.confined = bool(hello[2])
        if self.blank:
            return  # (prepared once configured: the plan may not let it write there)
        self.next_dir = _new_private_name()
        self.upcoming = self.next_dir  # named in each request: prepared after a self-cleaned run
        _send(self.sock, ("prepare", self.next_dir))

    def configure(self, limits: tuple[tuple[int, int, int], ...] | None, confine: Plan | None) -> None:
        """Give a ``blank`` spawner its rlimit table and Landlock plan (before its first child).
        Raises ``SpawnerUnavailable`` (and closes it) if it could not take them."""
        if not self.blank:
            raise SpawnerUnavailable(errno.EINVAL, "this spawner was configured when it started")
        if not self._greeted:
            self._greet()
        try:
            _send(self.sock, ("configure", _encode_limits(limits), "" if confine is None else confine.encode()))
            reply = _recv(self.sock, self.buf)
        except (EOFError, OSError) as exc:
            self.close()
            raise SpawnerUnavailable(errno.EIO, f"the capgate spawner died while configured: {exc}") from exc
        if not isinstance(reply, tuple) or len(reply) != 3 or reply[0] != "configured" or not reply[1]:
            self.close()
            raise SpawnerUnavailable(errno.EIO, f"the capgate spawner could not be configured: {reply!r}")
        self.blank = False
        self.limits = limits
        self.confine = confine
        self.confined = bool(reply[2])
        self.next_dir = _new_private_name()
        self.upcoming = self.next_dir
        _send(self.sock, ("prepare", self.next_dir))

    def take_private_dir(self) -> str:
        """A fresh private directory (``HOME``; ``TMPDIR`` is ``tmp`` inside it) for the next run: the
        spawner made it while idle; it is removed by ``cleanup``."""
        return self.next_dir

    def cleanup(self, used: str) -> None:
        """After the run (tree dead): the spawner removes ``used`` and, once it has replied,
        prepares the next run's directory. Raises ``OSError`` if ``used`` could not go."""
        self.cleanup_start(used)
        self.cleanup_wait()

    def cleanup_start(self, used: str) -> None:
        """First half of ``cleanup``: ask, do not wait."""
        self.next_dir = _new_private_name()
        self._cleaning = used
        try:
            _send(self.sock, ("cleanup", used, self.next_dir))
        except OSError as exc:
            self.dead = True
            raise SpawnerDied(errno.EIO, f"capgate spawner died while cleaning up: {exc}") from None

    def cleanup_wait(self) -> None:
        """Second half of ``cleanup``: the spawner's answer."""
        used = self._cleaning
        try:
            reply = _recv(self.sock, self.buf)
        except (EOFError, OSError) as exc:
            self.dead = True
            raise SpawnerDied(errno.EIO, f"capgate spawner died while cleaning up: {exc}") from None
        if reply != ("cleaned", True):
            raise OSError(errno.EIO, f"the run's private directory was not removed: {used}")

    def spawn(self, request: dict[str, object], fds: list[int]) -> SpawnedChild:
        """Start one child (see the module docstring for ``request``); raises ``OSError``."""
        if request.get("private") is not None:
            self.upcoming = _new_private_name()
            request["next_private"] = self.upcoming
        try:
            _send(self.sock, request, fds)
            reply = _recv(self.sock, self.buf)
        except (EOFError, OSError) as exc:
            self.dead = True
            raise SpawnerDied(errno.EIO, f"capgate spawner died while starting a child: {exc}") from None
        if not isinstance(reply, tuple):
            self.dead = True
            raise SpawnerDied(errno.EIO, f"capgate spawner protocol error: {reply!r}")
        if reply[0] == "pid":
            return SpawnedChild(self, int(reply[1]), str(reply[2]))
        if reply[0] == "err":
            _tag, code, message, filename, retire = reply
            if retire:
                self.dead = True
            raise OSError(int(code), str(message), filename)
        self.dead = True
        raise SpawnerDied(errno.EIO, f"capgate spawner protocol error: {reply!r}")

    def close(self) -> None:
        """Stop the spawner: EOF makes it exit (removing the directory it prepared); one
        that does not within a second is killed, and the directory removed here."""
        self.dead = True
        try:
            self.sock.close()
        finally:
            if self.owner == os.getpid():
                try:
                    self.proc.wait(timeout=1.0)
                except Exception:
                    try:
                        self.proc.kill()
                        self.proc.wait(timeout=5)
                    except Exception:
                        pass
                if self.next_dir:  # ("" for a blank spawner: it prepared nothing)
                    _remove_private(self.next_dir)


def _encode_limits(limits: tuple[tuple[int, int, int], ...] | None) -> str:
    return ",".join(f"{r}:{s}:{h}" for r, s, h in limits or ())


def _new_private_name() -> str:
    return os.path.join(private_parent(), f"capgate-run-{os.getpid()}-{os.urandom(8).hex()}")


_parent_dir: str | None = None
_MIN_TMPFS_FREE = 1 << 30  # a small tmpfs (a container's 64 MB /dev/shm) would refuse big temp files


def private_parent() -> str:
    """Where runs' private ``HOME``/``TMPDIR`` directories are made (once per process).

    Creating and removing two directories per run costs ~300 us on a disk file system and
    ~10 us on a tmpfs. So, unless the caller chose a temp directory (``TMPDIR``/``TEMP``/
    ``TMP`` set: then ``tempfile.gettempdir()``, as before), the first of
    ``$XDG_RUNTIME_DIR`` and ``/dev/shm`` that is a tmpfs mounted without ``noexec``, has at
    least 1 GiB free, and is either ours and private or root's and sticky (like ``/tmp``:
    nobody else can rename or remove our entries) — else ``tempfile.gettempdir()``. A child
    can write to those places anyway; each run's directory is still a fresh ``0700`` one.
    """
    global _parent_dir
    if _parent_dir is None:
        chosen = None
        if not any(os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")):
            for candidate in (os.environ.get("XDG_RUNTIME_DIR", ""), "/dev/shm"):
                if candidate.startswith("/") and _fast_private_parent(candidate):
                    chosen = candidate
                    break
        if chosen is None:
            import tempfile

            chosen = tempfile.gettempdir()
        _parent_dir = chosen
    return _parent_dir


def _fast_private_parent(path: str) -> bool:
    import stat

    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        vfs = os.statvfs(real)
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mounts = fh.read().splitlines()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or not os.access(real, os.W_OK | os.X_OK):
        return False
    private = st.st_uid == os.geteuid() and not st.st_mode & 0o077
    shared = st.st_uid == 0 and bool(st.st_mode & stat.S_ISVTX)
    if not (private or shared) or vfs.f_bavail * vfs.f_frsize < _MIN_TMPFS_FREE:
        return False
    best = ("", "", [""])
    for line in mounts:  # the last mount on the longest matching mount point is the visible one
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or len(rfields) < 1:
            continue
        point = fields[4].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, rfields[0], fields[5].split(","))
    return best[1] == "tmpfs" and "noexec" not in best[2]


_pool: dict[object, list[Spawner]] = {}
_blank: list[Spawner] = []  # started by ``prestart``, not configured yet
_MAX_IDLE = 4
_lock = _thread.allocate_lock()


def acquire(
    limits: tuple[tuple[int, int, int], ...] | None = None, confine: Plan | None = None
) -> Spawner:
    """An idle spawner of this process for ``limits`` (started if none is idle).

    ``limits``: the (resource, soft, hard) table the spawner itself carries so its
    ``posix_spawn`` children inherit it; None for a spawner that only forks. ``confine``: the
    Landlock plan the spawner puts itself (so every child) under (``capgate._sys.landlock``;
    ``confined`` says whether the kernel could enforce it); None for no restriction.
    Pair with ``release``.
    """
    with _lock:
        idle = _pool.get((limits, confine), [])
        while idle:
            spawner = idle.pop()
            if _alive(spawner):
                return spawner
            spawner.close()
        blank = _blank.pop() if _blank else None
    if blank is not None:
        if _alive(blank):
            try:
                blank.configure(limits, confine)
                return blank
            except SpawnerUnavailable:
                pass  # (closed by configure) a fresh one below
        else:
            blank.close()
    return Spawner(limits, confine)


def prestart() -> None:
    """Start a spawner now, before the caller knows its limits and Landlock plan: the next
    ``acquire`` configures it instead of starting one (~20 ms of interpreter start-up that
    then runs in parallel with the caller's own). Best effort: nothing happens if a
    spawner cannot run here."""
    with _lock:
        if _blank:
            return
    try:
        spawner = Spawner(blank=True)
    except SpawnerUnavailable:
        return
    with _lock:
        _blank.append(spawner)


def discard_prestarted() -> None:
    """Stop the ``prestart`` spawner that no ``acquire`` took (the caller will start no child
    after all: a policy error, a refused start) and wait for it to be gone, so that a
    launcher that exits right after leaves no process of its own behind."""
    with _lock:
        blanks = list(_blank)
        _blank.clear()
    for spawner in blanks:
        spawner.close()


def _alive(spawner: Spawner) -> bool:
    return not spawner.dead and spawner.owner == os.getpid() and spawner.proc.poll() is None


def release(spawner: Spawner) -> None:
    """Give a spawner back after its run finished (a dead or surplus one is closed)."""
    with _lock:
        idle = _pool.setdefault((spawner.limits, spawner.confine), [])
        if not spawner.dead and spawner.owner == os.getpid() and len(idle) < _MAX_IDLE:
            idle.append(spawner)
            return
    spawner.close()


def _forget_after_fork() -> None:
    # A forked child must not talk to its parent's spawners (replies would interleave).
    global _lock
    for idle in _pool.values():
        for spawner in idle:
            try:
                spawner.sock.close()
            except OSError:
                pass
    for spawner in _blank:
        try:
            spawner.sock.close()
        except OSError:
            pass
    _pool.clear()
    _blank.clear()
    _lock = _thread.allocate_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# ---------------------------------------------------------------------------------------------
# Server side (``python -I -S -c _BOOT DIR OWNER_PID SOCKET_FD LIMITS EXEC_ALLOW``)
# ---------------------------------------------------------------------------------------------
def _cpu_self() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Server:
    def __init__(self, owner: int, sock_fd: int, limits: str, confine: str = "") -> None:
        import resource

        self.resource = resource
        self.sock = socket.socket(fileno=sock_fd)
        self.buf = bytearray()
        self.fds: list[int] = []
        os.set_inheritable(sock_fd, False)
        self.owner_fd = os.pidfd_open(owner)
        if os.getppid() != owner:  # the owner died before we could watch it
            raise SystemExit(0)
        self.null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.root = os.geteuid() == 0
        os.chdir("/")  # never keeps a directory busy; chdir back here after each fast spawn
        self.home = "/"
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # our own brief CPU limit (fast path)
        self.reset_signals: list[int] = [signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU]
        for num in range(1, signal.NSIG):
            try:
                if signal.getsignal(num) == signal.SIG_IGN and num not in self.reset_signals:
                    self.reset_signals.append(num)
            except (ValueError, OSError):
                continue
        self.libc: Any
        try:
            import ctypes

            self.libc = ctypes.CDLL(None, use_errno=True)
        except (ImportError, OSError):
            self.libc = None
        # Subreaper: an orphan of a run is re-parented to us, not to init, wherever it went
        # (another session, another cgroup it may write to): ``kill_strays`` finds it.
        self.subreaper = self.libc is not None and self.libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        self.children_file = f"/proc/self/task/{os.getpid()}/children"
        self.cgroup_dir: str | None = None
        self.pid: int | None = None
        self.prepared: str | None = None
        self.own_limits: list[tuple[int, ...]] | None = None
        self.cpu_hard: int | None = None
        self._worn_calls = 0
        self._worn = False
        self.confined = False
        self.confined_writes = False  # and that plan confines writes to the write roots
        self.configured = False  # limits and plan are set once, before the first child
        if limits or confine:
            self.configure(limits, confine)

    def configure(self, limits: str, confine: str) -> bool:
        """Take the rlimit table ``limits`` and the Landlock plan ``confine`` (``Plan.encode()``)
        for ourselves; False (nothing changed) once configured or once a child was started.

        A spawner started for one rlimit table carries it itself (hard limits can only be
        lowered, even by root without CAP_SYS_RESOURCE), so posix_spawn children inherit it.
        ``prestart`` spawners get both by a ``configure`` message instead of on the command
        line, so they can start before the launcher knows the policy."""
        if self.configured:
            return False
        self.configured = True
        if limits:
            table = [tuple(int(v) for v in row.split(":")) for row in limits.split(",")]
            for res, soft, hard in table:
                self.resource.setrlimit(res, (soft, hard))
                if res == self.resource.RLIMIT_CPU:
                    self.cpu_hard = hard
            self.own_limits = table
        self.confined = bool(confine) and _confine(confine)
        self.confined_writes = self.confined and _restricts_write(confine)
        return True

    # -- main loop ------------------------------------------------------------------------
    def serve(self) -> None:
        _send(self.sock, ("ready", os.getppid(), self.confined))
        while True:
            if not self.buf:  # a message read ahead with the previous one is handled first
                ready, _, _ = select.select([self.sock.fileno(), self.owner_fd], [], [])
            else:
                ready, _, _ = select.select([self.owner_fd], [], [], 0)
            if self.owner_fd in ready:
                return
            try:
                request = _recv(self.sock, self.buf, self.fds)
            except (EOFError, OSError):
                return
            if isinstance(request, tuple):
                self.housekeeping(request)
                continue
            fds, self.fds = self.fds, []
            try:
                self.handle(request, fds)  # type: ignore[arg-type]
            finally:
                _close_all(fds)

    def housekeeping(self, msg: tuple[object, ...]) -> None:
        if msg[0] == "configure":
            try:
                ok = self.configure(str(msg[1]), str(msg[2]))
            except (OSError, ValueError):
                ok = False  # a limit we could not take: the client closes us
            _send(self.sock, ("configured", ok, self.confined))
        elif msg[0] == "prepare":
            self.prepare(str(msg[1]))
        elif msg[0] == "cleanup":
            used, upcoming = str(msg[1]), str(msg[2])
            self.kill_strays()  # the supervisor killed the cgroup: orphans of those are ours now
            ok = _remove_private(used)
            if used == self.prepared:
                self.prepared = None
            _send(self.sock, ("cleaned", ok))
            self.prepare(upcoming)  # while the supervisor finishes its own side of the run

    def prepare(self, path: str) -> None:
        if self.prepared is not None:
            _remove_private(self.prepared)
            self.prepared = None
        try:
            _make_private(path)
            self.prepared = path
        except OSError:
            pass  # made (or refused) again when the run asks for it

    def handle(self, req: dict[str, object], fds: list[int]) -> None:
        """Start the child, report its pid, wait, report its exit. Closes (and empties) ``fds``
        once the child is started: the pipes' write ends then belong to the child alone, so
        the supervisor sees EOF as soon as the tree is dead."""
        layout = req["layout"]
        if not isinstance(layout, list) or len(layout) != len(fds):
            _send(self.sock, ("err", errno.EBADF, "descriptors lost in transit", None, True))
            return
        procs = home = current = None
        places: list[tuple[int, int]] = []
        for target, fd in zip(layout, fds, strict=True):
            if target == CGROUP_PROCS:
                procs = fd
            elif target == HOME_PROCS:
                home = fd
            elif target == CGROUP_CURRENT:
                current = fd
            else:
                places.append((fd, int(target)))
        # Every source fd above every target, so a dup2 never clobbers a later source and
        # never is its own target (dup2 onto itself would keep close-on-exec). Received
        # descriptors usually are above already; only those that are not are moved up.
        top = max([t for _, t in places] + [2]) + 1
        moved: list[tuple[int, int]] = []  # (descriptor made here, target): closed below
        private = req.get("private")
        try:
            for i, (fd, target) in enumerate(places):
                if fd < top:
                    high = _fcntl.fcntl(fd, _fcntl.F_DUPFD_CLOEXEC, top)
                    moved.append((high, target))
                    places[i] = (high, target)
            self.cgroup_dir = req.get("cgroup_dir")  # type: ignore[assignment]
            if private is not None and private != self.prepared:
                try:
                    _make_private(str(private))
                    self.prepared = str(private)
                except OSError as exc:
                    _send(self.sock, ("err", exc.errno or errno.EIO, f"private directory: {exc.strerror}",
                                      str(private), False))
                    return
            self.configured = True  # a ``configure`` after a child would come too late
            mode, pid, error = self.start(req, places, procs, home)
        finally:
            _close_all([fd for fd, _ in moved])
            keep = [current] if current is not None else []
            _close_all([fd for fd in fds if fd not in keep])
            fds[:] = keep
        if error is not None:
            code, message, filename = error
            _send(self.sock, ("err", code, message, filename, False))
            return
        assert pid is not None
        self.pid = pid
        _send(self.sock, ("pid", pid, mode))
        status, cpu = self.wait(pid)
        self.pid = None
        self.kill_strays()
        # The child is reaped and its process group was killed before that (while its pid
        # could not be reused). When nothing of the run is left in its cgroup, no process can
        # write to the private directory any more: remove it now and say so with the exit
        # report, saving the supervisor a round trip. Otherwise the supervisor kills the rest
        # of the tree and asks for ``cleanup``.
        cleaned = None
        upcoming = req.get("next_private")
        if private is not None and upcoming is not None and current is not None and _tree_gone(current):
            cleaned = _remove_private(str(private))
            if private == self.prepared:
                self.prepared = None
        _send(self.sock, ("exit", status, cpu, self.worn_out(), cleaned))
        if cleaned is not None:
            self.prepare(str(upcoming))  # while the supervisor finishes its own side of the run

    def wait(self, pid: int) -> tuple[int, float]:
        try:
            child_fd: int | None = os.pidfd_open(pid)
        except OSError:
            child_fd = None
        try:
            while True:
                watch = [self.sock.fileno(), self.owner_fd] + ([child_fd] if child_fd is not None else [])
                ready, _, _ = select.select(watch, [], [], None if child_fd is not None else 0.01)
                if self.sock.fileno() in ready or self.owner_fd in ready:
                    # The owner is gone (or broke the protocol): nothing may outlive it.
                    self.kill_run(pid)
                    raise SystemExit(0)
                if child_fd is None:
                    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                        continue
                elif child_fd not in ready:
                    continue
                try:  # the group of the (unreaped, so not reusable) pid: what it left behind
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                _got, status, usage = os.wait4(pid, 0)
                return status, usage.ru_utime + usage.ru_stime
        finally:
            if child_fd is not None:
                os.close(child_fd)

    def kill_strays(self) -> None:
        """Kill and reap every process still our child once a run's main child is reaped.

        We start nothing else, so any child left is part of a run: an orphan re-parented to
        us (``PR_SET_CHILD_SUBREAPER``) that left the run's process group and cgroup. Each
        pass kills our current children; their own children then become ours, so passes
        repeat until none is left (bounded: a process stuck in the kernel is reported by
        the supervisor's own checks, never waited for here forever).
        """
        if not self.subreaper:
            return
        deadline = None
        while True:
            while True:  # reap whatever has exited
                try:
                    got, _status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return  # no children at all
                if got == 0:
                    break
            try:
                with open(self.children_file, encoding="ascii") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (OSError, ValueError):
                return
            if not kids:
                return
            for kid in kids:
                try:
                    os.kill(kid, signal.SIGKILL)
                except OSError:
                    pass
            now = _monotonic()
            if deadline is None:
                deadline = now + 2.0
            elif now > deadline:
                return
            select.select([], [], [], 0.001)

    def kill_run(self, pid: int) -> None:
        for _ in range(1000):
            members: list[int] = []
            if self.cgroup_dir:
                try:
                    with open(os.path.join(self.cgroup_dir, "cgroup.procs"), encoding="ascii") as fh:
                        members = [int(x) for x in fh.read().split()]
                except (OSError, ValueError):
                    members = []
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            for member in members:
                try:
                    os.kill(member, signal.SIGKILL)
                except OSError:
                    pass
            if not members:
                break
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
        self.kill_strays()

    # -- starting a child -----------------------------------------------------------------
    def start(
        self, req: dict[str, object], moved: list[tuple[int, int]], procs: int | None, home: int | None
    ) -> tuple[str, int | None, tuple[int, str, str | None] | None]:
        table = [tuple(x) for x in req["limits"]]  # type: ignore[attr-defined]
        env = req.get("env")
        if self.confined_writes and isinstance(env, dict) and "CAPGATE_POLICY" in env:
            # A soft-sandboxed child: tell its hooks the kernel holds its writes to the write
            # roots (said here, by the process that applied the plan, once it took effect).
            req["env"] = {**env, LANDLOCK_ENV: LANDLOCK_WRITES}
        fast = (
            self.own_limits is not None
            and table == self.own_limits
            and req.get("uid") is None
            and procs is not None
            and home is not None
            and bool(req.get("fast"))
            and not self.worn_out()
        )
        if fast:
            try:
                return "spawn", self.spawn_fast(req, moved, procs, home), None  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno in _EXEC_ERRORS:
                    return "spawn", None, (exc.errno or errno.EIO, exc.strerror or str(exc), exc.filename)
                # ENOMEM/EMFILE/EAGAIN under the tight limits: the fork path decides for real.
        return self.spawn_fork(req, moved, procs, table)

    def worn_out(self) -> bool:
        """Our own CPU time nears the hard RLIMIT_CPU we carry for our children: retire.

        ``getrusage`` on every 4th call only (twice per run): a run costs us well under a
        millisecond of CPU — at most ~0.1 s when ``kill_strays`` chases a fork chain for its
        full 2 s — and the margin is half a second."""
        if self.cpu_hard is None:
            return False
        self._worn_calls += 1
        if self._worn_calls % 4 == 1:
            self._worn = _cpu_self() + 0.5 >= self.cpu_hard
        return self._worn

    def spawn_fast(
        self, req: dict[str, object], moved: list[tuple[int, int]], procs: int, home: int,
    ) -> int:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in moved]
        os.chdir(req["cwd"])  # type: ignore[arg-type]
        try:
            os.write(procs, b"0")  # into the run's cgroup: the child is born there
            try:
                return os.posix_spawn(
                    req["exe"],  # type: ignore[arg-type]
                    req["argv"],  # type: ignore[arg-type]
                    req["env"],  # type: ignore[arg-type]
                    file_actions=actions,
                    setsid=True,
                    setsigmask=(),
                    setsigdef=self.reset_signals,
                )
            finally:
                os.write(home, b"0")  # back out before anything else happens
        finally:
            os.chdir(self.home)

    def spawn_fork(
        self, req: dict[str, object], moved: list[tuple[int, int]], procs: int | None,
        table: list[tuple[int, ...]],
    ) -> tuple[str, int | None, tuple[int, str, str | None] | None]:
        exe = req["exe"]
        argv = req["argv"]
        env = req["env"]
        cwd = req["cwd"]
        uid = req.get("uid")
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        me = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(err_r)
            os.close(err_w)
            return "fork", None, (exc.errno or errno.EAGAIN, exc.strerror or str(exc), None)
        if pid == 0:  # child: nothing here may return
            step = "setsid"
            try:
                os.setsid()
                if procs is not None:
                    step = "cgroup"
                    os.write(procs, b"0")
                step = "fds"
                for fd, target in moved:
                    os.dup2(fd, target, inheritable=True)
                step = "cwd"
                os.chdir(cwd)  # type: ignore[arg-type]
                if uid is not None:
                    step = "uid"
                    os.setgroups([])
                    os.setgid(uid)  # type: ignore[arg-type]
                    os.setuid(uid)  # type: ignore[arg-type]
                step = "rlimits"
                for res, soft, hard in table:
                    self.resource.setrlimit(res, (soft, hard))
                if self.libc is not None:
                    self.libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
                    if os.getppid() != me:  # the spawner died before prctl took effect
                        os._exit(127)
                for sig in self.reset_signals:
                    signal.signal(sig, signal.SIG_DFL)
                step = "exec"
                os.execve(exe, argv, env)  # type: ignore[arg-type]  # noqa: S606
            except OSError as exc:
                code = exc.errno or errno.EIO
                try:
                    os.write(err_w, f"{code}:{step}".encode())
                except OSError:
                    pass
            except BaseException:
                try:
                    os.write(err_w, f"{errno.EIO}:{step}".encode())
                except OSError:
                    pass
            os._exit(127)
        os.close(err_w)
        try:
            data = b""
            while True:
                chunk = os.read(err_r, 64)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(err_r)
        if not data:
            return "fork", pid, None
        os.waitpid(pid, 0)
        code_s, _, step = data.decode("ascii", "replace").partition(":")
        code = int(code_s) if code_s.isdigit() else errno.EIO
        message = os.strerror(code) if step == "exec" else f"{os.strerror(code)} (while setting up: {step})"
        return "fork", None, (code, message, exe if step == "exec" else None)  # type: ignore[return-value]


def _confine(encoded: str) -> bool:
    """Put ourselves (and so every child) under the Landlock plan ``encoded``; False if the
    kernel cannot (the supervisor reports that, it never assumes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.append(here)  # (started by _BOOT it is there already)
    import landlock  # type: ignore[import-not-found]  # this directory's stdlib-only module

    try:
        ruleset = landlock.Ruleset(landlock.Plan.decode(encoded))
    except (OSError, ValueError):
        return False
    try:
        return bool(ruleset.restrict_self() == 0)
    finally:
        ruleset.close()


def _restricts_write(encoded: str) -> bool:
    import landlock  # (on sys.path: _confine put it there)

    try:
        return bool(landlock.Plan.decode(encoded).restricts_write)
    except ValueError:
        return False


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _tree_gone(current_fd: int) -> bool:
    """The run's cgroup holds no task, not even an unreaped zombie (``pids.current`` is 0)."""
    try:
        return int(os.pread(current_fd, 32, 0)) == 0
    except (OSError, ValueError):
        return False


def _make_private(path: str) -> None:
    os.mkdir(path, 0o700)
    os.mkdir(os.path.join(path, "tmp"), 0o700)


def _remove_private(path: str) -> bool:
    """Remove a run's private directory; True when it is gone."""
    try:
        os.rmdir(os.path.join(path, "tmp"))
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return not os.path.lexists(path)
    except OSError:
        pass
    import shutil  # fd-based walk: a planted symlink is removed, never followed

    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _main(args: list[str]) -> None:
    """Serve the owner until it goes away; then exit without a word.

    The spawner shares its owner's stderr (the user's terminal), and it outlives the owner
    by a moment: a launcher that stops at once (a policy error before the child) may exit
    before this process has even started. Whatever then goes wrong here — the owner's pid
    gone before ``pidfd_open``, ``EPIPE`` on the greeting, a reset socket mid-run — is the
    owner leaving, never news: it must not print a traceback after the owner's last line.
    An error while the owner is still there and listening is a bug, and is shown."""
    owner = int(args[0])
    try:
        server = _Server(owner, int(args[1]), args[2] if len(args) > 2 else "", args[3] if len(args) > 3 else "")
    except ProcessLookupError:  # the owner exited before we could watch it: nothing to serve
        raise SystemExit(0) from None
    try:
        server.serve()
    except (EOFError, OSError):
        if not _owner_left(server):
            raise
        raise SystemExit(0) from None
    finally:
        if server.pid is not None:
            server.kill_run(server.pid)
        if server.prepared is not None:
            _remove_private(server.prepared)


def _owner_left(server: _Server) -> bool:
    """The owner exited or closed its end of the socket (so nobody reads what we would say)."""
    try:
        if select.select([server.owner_fd], [], [], 0)[0]:
            return True
        return bool(select.select([server.sock.fileno()], [], [], 0)[0]) and not server.sock.recv(
            1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return True


if __name__ == "__main__":
    _main(sys.argv[1:])
