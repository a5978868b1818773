"""Soft sandbox: route a Python process's own actions through the gate with audit hooks.

``install(gate)`` adds a PEP 578 audit hook that maps the interpreter's audit events to gate
operations and raises ``PermissionDenied`` (a ``PermissionError``) inside the process for a
denial, before the action happens. The launcher arranges for this to run before any user code
(see ``capgate._soft_boot``); user programs are not modified.

What is routed, and how:

* ``open`` (builtin ``open``, ``io.open``/``io.FileIO``, ``io.open_code``, ``os.open``, and so
  ``pathlib``, ``shutil.copy*``...): read or write from the *flags*
  (``O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND``) and the mode string. Relative paths resolve
  against the process cwd; ``os.open(name, dir_fd=fd)`` only reports ``name``, so ``os.open``
  is replaced by a wrapper that tells the hook the ``dir_fd`` of the call in flight. Should the
  real function be reached another way, a relative ``os.open`` must be allowed against the cwd
  *and* every directory descriptor the process holds (fail closed). ``O_PATH`` opens are not
  judged: such a descriptor reads and changes nothing (what ``os.stat`` does without an event).
* Hard links: a regular file with more than one name gets the gate's answer (``fs``,
  ``gate.check``: rule ``filesystem.hardLinks``) for a read, a write in place (any write open,
  ``O_TRUNC`` included: the hooks cannot replace the name as ``fs`` does), ``os.truncate``,
  ``chmod/chown/utime``, xattrs, ``sqlite3.connect`` and the source of ``os.link``. The link
  count comes from an ``fstat`` of the descriptor the lookup opens anyway (``O_PATH`` or
  ``openat2``); ``os.open``'s wrapper checks the descriptor it returns too.
* ``os.open`` is judged twice: by name in the hook, then on the descriptor it returned (the
  path ``/proc/self/fd`` names, and its link count), so a ``dir_fd`` number ``dup2``-ed to
  another directory, a ``chdir`` or a swapped symlink between the two is refused; a refused
  descriptor is closed, a file that open created is removed, and ``O_TRUNC`` is applied only
  after the second check (see ``os_open_guard``). Removing or renaming
  a hard link acts on the name only and is judged as any name.
* ``os.listdir/scandir`` (read); ``os.mkdir``, ``os.chmod/chown/utime/truncate``,
  ``os.setxattr/removexattr`` (write; on a descriptor, the file it refers to);
  ``os.remove/rmdir``, ``shutil.rmtree`` (delete); ``os.rename`` (delete source, write
  destination); ``os.symlink`` (write the link, read its target); ``os.link`` (write both:
  a hard link makes the source writable through the new name). ``dir_fd`` arguments are
  resolved through ``/proc/self/fd``. Removing or renaming a symlink judges the link, not its
  target. ``sqlite3.connect`` is a write of the database file.
* Paths are canonicalized first (symlinks, ``..``, ``/proc/self/fd/N``): an ``O_PATH`` open
  and a ``readlink`` of its ``/proc/self/fd`` entry, else ``os.path.realpath``.
* Remembered reads: when the process that applied the run's Landlock plan says it confines
  the tree's writes to the write roots (``CAPGATE_LANDLOCK=writes``), a read ``open`` of a
  path the no-symlink lookup confirmed as written, naming a file with one link, in a directory
  no process of the tree can change (``capgate._sys.frozen_dirs``: outside every write root,
  through every mount), reuses that decision without the lookup next time (logged again).
  Relative paths use a remembered cwd while the cwd is such a directory; ``os.chdir`` and
  ``os.fchdir`` are wrapped to invalidate it around the call, and a chdir seen only by its
  event (the real function reached another way) turns the remembered cwd off for good.
* An event argument is read as the C code that raised the event read it, never converted a
  second time (``_event_text``): ``str``/``bytes`` by content (a subclass's ``__str__`` or
  ``__fspath__`` is not called), the standard library's own ``pathlib`` objects through their
  cached string; any other path object (an ``__fspath__`` may answer the C conversion one
  path and the hook another: ``io.FileIO(obj)``), ``bytearray`` or ``memoryview`` is refused
  (rule ``soft.path``: pass ``str(path)``). This holds for paths, unix socket addresses,
  ``sqlite3.connect`` and command lines; a ``Popen`` runs exactly the argv that was judged.
* ``socket.connect/sendto/sendmsg`` (``sendmsg`` with an address, e.g. a UDP datagram or a
  TCP ``MSG_FASTOPEN`` connect; without one the socket is already connected, and that
  connect was judged): with network off, every inet connect is denied; with network on,
  only the launcher's egress proxy (``proxy=(host, port)``) may be reached, and the proxy asks
  the gate about each real destination. ``socket.getaddrinfo`` and the other name lookups are
  denied (a DNS query is an exfiltration channel) except for the proxy's own host. Unix-socket
  connects need a listed socket (``network.allowedUnixSockets``). Binding inet sockets
  (listening) is denied. A bind of a loopback IP literal to port 0 — a capability probe
  (urllib3's ``HAS_IPV6``) — is not logged as a denial (rule ``soft.bindProbe``) but fails
  with ``EADDRNOTAVAIL`` as on a host without that address: nothing is ever bound, so there
  is no socket to ``listen`` on (which raises no event to judge). Binding a unix socket is a
  write of its path. Raw, packet and netlink
  sockets are denied.
* Processes: ``subprocess.Popen``, ``os.exec*``, ``os.posix_spawn[p]`` are ``proc.exec`` of the
  *resolved* executable (found on the PATH the child will really use); any shell needs
  ``process.allowShell``; ``os.system`` is a shell. ``_posixsubprocess`` is replaced by a
  wrapper that only runs what a ``subprocess.Popen`` event just approved, on the resolved path
  that was checked; importing or reloading the real module again is denied. ``os.fork`` is
  allowed (the forked process keeps these hooks).
* git: a command line naming git (also behind a trampoline) runs with capgate's git
  overrides (``cmdrules.GIT_ENV``: ``core.hooksPath=/dev/null``, no fsmonitor, pager, editor
  or credential helper), as ``proc.run``'s git does: a ``Popen`` gets them put in place of
  whatever its environment says; ``os.exec*``/``posix_spawn`` (environment already
  converted) must carry them (the launcher gives them to the whole tree), else refused
  (``soft.git``). The repository's configuration is checked first (``capgate.gitconfig``).
* Python grandchildren: when the program that will run is a Python interpreter (by name,
  this interpreter under another name, or a script whose ``#!`` line runs one), ``-I``/``-E``/
  ``-S`` are refused (the launcher's own check, ``python_script_index``), and its environment
  must carry what the launcher gave this process for every ``PYTHON*`` variable that changes
  start-up (``PYTHONPATH`` = the boot directory, ``PYTHONNOUSERSITE``, ``PYTHONDONTWRITEBYTECODE``)
  and for ``CAPGATE_POLICY``/``CAPGATE_PROXY``, and set no other such variable (``PYTHONHOME``,
  ``PYTHONPLATLIBDIR``, ...; harmless ones such as ``PYTHONUNBUFFERED`` are free). A ``Popen``
  whose environment lacks them gets them back (in the ``fork_exec`` guard, on the list that
  really runs); a different value is refused, and so is anything but an exact match for
  ``os.exec*``/``posix_spawn`` (whose environment is already converted when the event is
  raised; give them a plain dict). The inherited environment is followed through the
  ``os.putenv``/``os.unsetenv`` events.
* ``ctypes``: ``ctypes.dlopen`` of any library is denied (only the interpreter's own handle,
  which ``import ctypes`` opens, is allowed) and ``dlsym`` on it is limited to the public
  ``Py*`` C API (nothing with ``Audit`` in its name): ``CDLL("libc.so.6")`` and
  ``CDLL(None).open`` fail. Importing ctypes stays possible because honest libraries do it.
* Functions that raise no audit event, replaced in ``os``/``posix`` (and ``_signal``/``signal``)
  by wrappers that run a check first, as the hook would (re-importing ``posix`` or ``_signal``
  is denied, like ``_posixsubprocess``):
  ``os.mkfifo``, ``os.mknod`` — ``fs.write`` of the new name (``dir_fd`` honoured, the name not
  followed); character and block device nodes are refused outright.
  ``os.pidfd_open``, ``signal.pidfd_send_signal`` (the process a pidfd or an open ``/proc/<pid>``
  refers to), ``os.sched_setaffinity/sched_setscheduler/sched_setparam``, ``os.setpriority`` —
  the same session check as ``os.kill``; ``setpriority(PRIO_USER)`` is refused.
  ``os.chroot``, ``os.unshare``, ``os.setns`` (3.12+) — refused.
  Checked and found to have events (handled above): ``os.truncate``, ``os.setxattr``,
  ``os.removexattr``, ``os.lchown``/``fchown`` (``os.chown``), ``os.fchmod`` (``os.chmod``),
  ``os.replace`` (``os.rename``), ``os.unlink`` (``os.remove``). Left alone, descriptor-based
  and so bounded by the open that was judged: ``os.ftruncate``, ``os.posix_fallocate``,
  ``os.sendfile``, ``os.copy_file_range``, ``os.splice``; ``os.memfd_create``/``eventfd``
  create no path. ``os.lchmod`` and ``os.chflags`` do not exist on Linux.
* ``fs.tempFile`` (the names of ``capgate.fs``'s unfinished writes) is not applied here: it
  guards ``fs``'s output quota, which plain writes do not have, and ``capgate.fs`` in the
  child makes and commits its temp files through these hooks.
* Also denied: ``sqlite3`` extension loading, ``fcntl.ioctl(TIOCSTI/TIOCLINUX)`` (typing into
  the user's terminal), signals to processes outside this session, raising rlimits, ``syslog``,
  and ``gc.get_objects/get_referrers/get_referents`` (fishing out the hook's own references).

What this does NOT do — it is a seat belt, not isolation (``SOFT_SANDBOX=true``):

* No event exists for ``os.stat``, ``os.access``, ``os.readlink``: metadata of any path can be
  read. Non-Python children (and native extension code) are not hooked at all.
* No event exists when a ctypes function pointer is built from a raw address and called
  (``CFUNCTYPE(...)(address)``): code that computes libc addresses can call anything.
* Check and use are not one object: a path is judged, then the interpreter opens it by name, so
  a concurrent symlink swap (by another thread or process) can race the check. For hard links
  the window is narrower, and ``os.open`` (and ``capgate.fs``, built on it here) re-checks the
  descriptor it opened (path and links) before returning it; builtin ``open`` is judged on the
  object the lookup found, and a link renamed over that name (or a ``chdir`` by another
  thread) in the microseconds before the real open is not seen.
* Python code in the process can reach the hook's objects through frames and closures and
  undo them (the wrapped ``os``/``signal`` functions keep the real ones in a closure, and the
  no-symlink path lookup keeps a ctypes libc ``syscall``); a determined program written
  against capgate can escape the hooks (not the kernel layer). Use the container backend for
  isolation.
* Non-Python programs the child may run (a shell, ``make``) can start Python without these
  hooks: they are not hooked themselves.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from capgate import ops
from capgate._sys.frozen_dirs import CONFINED_ENV, CONFINED_WRITES, FrozenDirs
from capgate.decision import Decision
from capgate.errors import PermissionDenied
from capgate.gate import hard_link_denial

if TYPE_CHECKING:
    from capgate.gate import Gate

__all__ = ["SHELLS", "HookSkippingOption", "SoftHooks", "install", "installed", "is_python_command",
           "python_script_index"]

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish", "csh", "tcsh"})

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_AT_FDCWD = -100
_O_PATH = getattr(os, "O_PATH", 0)
_O_TMPFILE = getattr(os, "O_TMPFILE", 0) or -1  # (-1: no flag set has it)
_S_IFMT = 0o170000
_S_IFREG = 0o100000
# The real os.open, kept before ``install`` replaces it with ``SoftHooks.os_open_guard``: the
# hooks' own lookups call it while deciding.
_os_open = os.open
_AF_UNIX = 1
_AF_INET = 2
_AF_INET6 = 10
_SOCK_STREAM = 1
_SOCK_DGRAM = 2
_SOCK_TYPE_MASK = 0xF  # strips SOCK_NONBLOCK / SOCK_CLOEXEC
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_MODULES_DENIED_AFTER_BOOT = frozenset({"_posixsubprocess", "posix", "_signal"})
_FS_READ = ops.FS_READ
# The hook's fast path (a read seen before, see ``SoftHooks._on_stable_read``) takes only the
# modes and flags of a plain read; anything else goes the general way.
_READ_MODES = frozenset({"r", "rb", "rt", "br", "tr"})
_NOT_PLAIN_READ = _WRITE_FLAGS | _O_PATH
_FS_WRITE = ops.FS_WRITE
_MEMO_MAX = 16384  # remembered allowed decisions; the table is emptied when full
_ENV_PREFIXES = ("PYTHON", "CAPGATE_", "GIT_")  # (GIT_: _check_exec_git_env)
# PYTHON* variables that cannot make an interpreter skip or replace its start-up (site,
# sitecustomize, the stdlib it loads, where it writes bytecode): a Python program started in
# the sandbox may set these freely. Every other PYTHON* variable, and CAPGATE_*, must be
# exactly what the launcher gave this process (see SoftHooks._python_env_problems).
_HARMLESS_PYTHON_VARS = frozenset({
    "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONWARNINGS", "PYTHONHASHSEED", "PYTHONFAULTHANDLER",
    "PYTHONUTF8", "PYTHONBREAKPOINT", "PYTHONSAFEPATH", "PYTHONDEVMODE", "PYTHONTRACEMALLOC",
    "PYTHONOPTIMIZE", "PYTHONVERBOSE", "PYTHONDEBUG", "PYTHONINSPECT", "PYTHONCOERCECLOCALE",
    "PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONASYNCIODEBUG", "PYTHONNODEBUGRANGES",
    "PYTHONPROFILEIMPORTTIME", "PYTHONINTMAXSTRDIGITS", "PYTHONWARNDEFAULTENCODING", "PYTHONSTARTUP",
    "PYTHONCASEOK", "PYTHONLEGACYWINDOWSSTDIO", "PYTHONLEGACYWINDOWSFSENCODING",
})
_FREE_CAPGATE_VARS = frozenset({"CAPGATE_AUDIT_FD"})  # where a child logs; removed at boot

_installed: SoftHooks | None = None


def installed() -> SoftHooks | None:
    """The hooks installed in this process, if any."""
    return _installed


class _Denied(Exception):
    """Internal: a denial already logged; turned into PermissionDenied by the hook."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


class SoftHooks:
    """The audit-hook handlers for one gate. Build with ``install``."""

    def __init__(self, gate: Gate, *, proxy: tuple[str, int] | None = None,
                 python_env: Mapping[str, str] | None = None) -> None:
        self.gate = gate
        self.policy = gate.policy
        self.proxy = proxy
        self._busy: set[int] = set()  # thread idents currently deciding (re-entrancy)
        # thread -> (argv, resolved program, runs Python) of the Popen just approved
        # thread -> (argv, resolved program, runs Python, names git) of the Popen just approved
        self._approved: dict[int, tuple[list[bytes], bytes, bool, bool]] = {}
        # thread -> (path, dir_fd) of the os.open in flight (os_open_guard), for the event
        self._open_hints: dict[int, tuple[Any, int | None]] = {}
        # thread -> the canonical path the hook judged for that os.open (``_recheck_opened``)
        self._open_judged: dict[int, str] = {}
        # What a Python program started from here must carry to boot these hooks itself
        # (None: not started by the launcher, nothing to carry). See _python_env_problems.
        self._python_env: dict[str, str] | None = None
        if python_env is not None:
            self._python_env = {k: v for k, v in python_env.items() if _guarded_env_name(k)}
        # The guarded names as the C environment holds them (what an os.exec* or a Popen
        # with env=None hands on), kept current from the os.putenv/os.unsetenv events.
        self._c_env: dict[str, str] = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        import _thread

        self._get_ident = _thread.get_ident
        self._handlers: dict[str, Callable[[tuple[Any, ...]], None]] = {
            "open": self._on_open,
            "os.listdir": self._on_listdir,
            "os.scandir": self._on_listdir,
            "os.mkdir": self._on_mkdir,
            "os.rmdir": self._on_remove,
            "os.remove": self._on_remove,
            "os.rename": self._on_rename,
            "os.symlink": self._on_symlink,
            "os.link": self._on_link,
            "os.chmod": self._on_attr,
            "os.chown": self._on_attr,
            "os.utime": self._on_attr,
            "os.setxattr": self._on_xattr,
            "os.removexattr": self._on_xattr,
            "os.truncate": self._on_truncate,
            "shutil.rmtree": self._on_rmtree,
            "sqlite3.connect": self._on_sqlite,
            "sqlite3.enable_load_extension": self._deny_event("loading native sqlite extensions"),
            "sqlite3.load_extension": self._deny_event("loading native sqlite extensions"),
            "socket.__new__": self._on_socket_new,
            "socket.connect": self._on_connect,
            "socket.sendto": self._on_connect,
            "socket.sendmsg": self._on_sendmsg,
            "socket.bind": self._on_bind,
            "socket.getaddrinfo": self._on_lookup,
            "socket.gethostbyname": self._on_lookup,
            "socket.gethostbyname_ex": self._on_lookup,
            "socket.gethostbyaddr": self._on_lookup,
            "socket.getnameinfo": self._on_lookup_nameinfo,
            "socket.sethostname": self._deny_event("changing the host name"),
            "subprocess.Popen": self._on_popen,
            "os.system": self._on_system,
            "os.exec": self._on_exec,
            "os.posix_spawn": self._on_spawn,
            "os.posix_spawnp": self._on_spawn,
            "ctypes.dlopen": self._on_dlopen,
            "ctypes.dlsym": self._on_dlsym,
            "ctypes.dlsym/handle": self._on_dlsym,
            "import": self._on_import,
            "fcntl.ioctl": self._on_ioctl,
            "os.kill": self._on_kill,
            "os.chdir": self._on_chdir,
            "os.killpg": self._on_kill,
            "os.putenv": self._on_putenv,
            "os.unsetenv": self._on_unsetenv,
            "resource.setrlimit": self._on_setrlimit,
            "resource.prlimit": self._on_prlimit,
            "syslog.openlog": self._deny_event("writing to the system log"),
            "syslog.syslog": self._deny_event("writing to the system log"),
            "gc.get_objects": self._deny_event("walking all interpreter objects"),
            "gc.get_referrers": self._deny_event("walking interpreter object references"),
            "gc.get_referents": self._deny_event("walking interpreter object references"),
        }
        self._sid = os.getsid(0)
        # Allowed filesystem decisions, keyed by (op, canonical path): the policy is frozen
        # for the life of the process and ``PathRules.decide`` looks at nothing but the path
        # string, so the same key always gets the same answer. Only the *decision* is reused:
        # every event still resolves its path first (a swapped symlink gives a new key), and
        # every reuse is logged again. The value logs it: the encoded audit line when the
        # audit is a ``ChildAudit``, else a ``gate.record`` call. Cleared in a forked child
        # (the lines carry the pid).
        self._memo: dict[tuple[str, str], Callable[[], None]] = {}
        # Reads of files whose directory chain the tree cannot change (``FrozenDirs``), keyed by
        # the absolute path as the open will resolve it: the lookup (symlinks, link count)
        # found nothing to refuse the first time, and under Landlock no process of the tree can
        # make it find anything else later, so only the memo's log is reused (the same
        # decision, logged again). Only when the launcher's tree is confined to the policy's
        # write roots (``CAPGATE_LANDLOCK=writes``, set by whoever applied the plan, after it
        # took effect); None until the first open decides whether it can be used.
        self._stable: dict[str, Callable[[], None]] = {}
        self._frozen: FrozenDirs | None = None
        self._stable_on = os.environ.get(CONFINED_ENV) == CONFINED_WRITES and _nosym_state >= 0
        # The cwd, remembered for relative reads (``_frozen_cwd``): (generation, path + "/").
        self._cwd: tuple[int, str] | None = None
        self._cwd_gen = 0
        self._chdirs: set[int] = set()  # threads inside the os.chdir/os.fchdir wrappers
        self._cwd_cache_ok = True
        self._encode: Callable[..., bytes] | None = getattr(gate.audit, "encode", None)
        self._append: Callable[[bytes], None] | None = getattr(gate.audit, "append_allowed", None)
        self.hook = self._make_hook()

    # -- the hook ---------------------------------------------------------------------
    def _make_hook(self) -> Callable[[str, tuple[Any, ...]], None]:
        # A closure over locals: this runs for every audit event the process raises.
        handlers = self._handlers
        get_ident = self._get_ident
        busy = self._busy
        deny = self._deny

        stable = self._stable
        chdirs = self._chdirs
        read_modes = _READ_MODES
        not_plain = _NOT_PLAIN_READ

        def hook(event: str, args: tuple[Any, ...]) -> None:
            if event == "open" and stable and not busy and len(args) == 3:
                # A read seen before in a frozen directory (``_on_stable_read``), answered
                # before the general machinery: only dict lookups and the audit line, nothing
                # that could raise an event of its own.
                path, mode, flags = args
                if type(path) is str and mode in read_modes and type(flags) is int and not flags & not_plain:
                    if path[:1] == "/":
                        log = stable.get(path)
                    else:
                        cwd = self._cwd
                        log = (stable.get(cwd[1] + path)
                               if cwd is not None and cwd[0] == self._cwd_gen and not chdirs else None)
                    if log is not None:
                        log()
                        return
            handler = handlers.get(event)
            if handler is None:
                return
            ident = get_ident()
            if ident in busy:  # an event raised by our own deciding (realpath, lazy imports)
                return
            busy.add(ident)
            try:
                handler(args)
            except _Denied as denied:
                raise denied.exc from None
            except _UnsafePath as exc:
                raise deny(_op_of(event), _shown(args), str(exc), "soft.path") from None
            except Exception as exc:  # fail closed: an error while deciding is a denial
                raise deny(_op_of(event), _shown(args), f"error while deciding {event}: {exc!r}",
                           "soft.error") from None
            finally:
                busy.discard(ident)

        return hook

    # -- helpers ----------------------------------------------------------------------
    def _deny(self, op: str, target: str, reason: str, rule: str) -> PermissionDenied:
        return self.gate.deny(op, target, reason, rule, via="soft")

    def _fail(self, op: str, target: str, reason: str, rule: str) -> _Denied:
        return _Denied(self._deny(op, target, reason, rule))

    def _deny_event(self, what: str) -> Callable[[tuple[Any, ...]], None]:
        def handler(args: tuple[Any, ...]) -> None:
            raise self._fail("soft.event", _shown(args), f"{what} is not allowed in the soft sandbox",
                             "soft.denied")

        return handler

    def _decide(self, op: str, canonical: str, links: int = 1) -> None:
        """Decide and log ``op`` on ``canonical`` as the gate does: the path rules, then, for
        a regular file with ``links`` > 1 names, the gate's hard-link rule. ``links`` is
        passed only for what acts on the file's content or inode in place (reads, in-place
        writes, metadata changes); a remove or rename acts on the name and passes 1."""
        key = (op, canonical)
        log = self._memo.get(key)
        if log is not None and links == 1:
            log()
            return
        gate = self.gate
        decision = gate.peek_path(op, canonical, temp_rule=False)
        if decision.allowed and links > 1:
            decision = hard_link_denial(canonical, links)
        shown = gate.show(canonical)
        if not decision.allowed:
            gate.record(op, shown, decision, via="soft")
            raise _Denied(PermissionDenied(op, shown, decision.reason, decision.rule))
        if self._encode is not None and self._append is not None:
            log = partial(self._append, self._encode(op, shown, decision, via="soft"))
        else:
            log = partial(gate.record, op, shown, decision, via="soft")
        memo = self._memo
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[key] = log
        log()

    def _absolute(self, path: Any, dir_fd: Any = None) -> str:
        text = _text_path(path)
        if text.startswith("/"):
            return text
        if dir_fd is None or dir_fd == _AT_FDCWD or dir_fd == -1:
            base = os.getcwd()
        else:
            base = _fd_path(int(dir_fd))
        return base.rstrip("/") + "/" + text

    def _check(self, op: str, path: Any, dir_fd: Any = None, *, follow: bool = True) -> None:
        if isinstance(path, int):  # an open descriptor: judge the file it refers to
            if op == ops.FS_READ:
                return  # reading through a descriptor the gate let us open
            self._decide(op, _fd_path(path), _links(path))
            return
        absolute = self._absolute(path, dir_fd)
        if follow:
            self._decide(op, *_resolved(absolute))
        else:
            self._decide(op, _canonical_nofollow(absolute))

    # -- filesystem events ------------------------------------------------------------
    def _on_open(self, args: tuple[Any, ...]) -> None:
        # The hottest handler (every file a program opens, every module it imports).
        path, mode, flags = args
        if isinstance(path, int) or path is None:
            return
        flags = flags or 0
        if flags & _O_PATH:
            # An O_PATH descriptor reads and changes nothing (no read, write, getdents,
            # fchmod...): it is what os.stat does, which raises no event at all. Opening
            # anything through it (dir_fd, /proc/self/fd/N) is an open judged here again.
            return
        write = bool(flags & _WRITE_FLAGS) or (
            isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        )
        op = _FS_WRITE if write else _FS_READ
        text = path if type(path) is str and path and "\x00" not in path else _text_path(path)
        if mode is None and not text.startswith("/"):
            self._on_relative_os_open(op, path, text)
            return
        if self._stable_on and op is _FS_READ:
            self._on_stable_read(text, mode is None)
            return
        # The common case (builtin open, io.open_code, absolute os.open): resolve the name
        # as the open will, relative to the real cwd, without building an absolute path.
        canonical, links = _lookup_here(text)
        if mode is None:  # os.open: its wrapper checks the descriptor against this path
            self._open_judged[self._get_ident()] = canonical
        if links == 1:
            log = self._memo.get((op, canonical))
            if log is not None:
                log()
                return
        self._decide(op, canonical, links)

    def _on_stable_read(self, text: str, os_open: bool) -> None:
        """A read ``open`` while the stable reads are on (see ``_stable``): a path seen before
        in a frozen directory costs a dict lookup; any other is resolved once, decided, and
        remembered when it may be: written the way the no-symlink lookup confirmed it (no
        symlink, no ``.``/``..``/``//`` on the way), a file with one link, in a frozen directory."""
        if text.startswith("/"):
            absolute = text
        else:
            cwd = self._frozen_cwd()
            absolute = (cwd if cwd != "/" else "") + "/" + text
        log = self._stable.get(absolute)
        if log is not None:
            if os_open:  # its wrapper checks the descriptor against this path
                self._open_judged[self._get_ident()] = absolute
            log()
            return
        found = _lexical_canonical(absolute)
        confirmed = found is not None and found[0] == absolute and found[1] == 1
        canonical, links = found if found is not None else _resolved_fallback(absolute)
        if os_open:
            self._open_judged[self._get_ident()] = canonical
        self._decide(_FS_READ, canonical, links)  # (raises for a denial)
        if not confirmed or "/./" in absolute or "/../" in absolute or absolute.endswith(("/.", "/..")):
            return
        frozen = self._frozen_dirs()
        if frozen is not None and frozen.frozen(absolute.rsplit("/", 1)[0] or "/"):
            log = self._memo.get((_FS_READ, absolute))
            if log is not None:
                if len(self._stable) >= _MEMO_MAX:
                    self._stable.clear()
                self._stable[absolute] = log

    def _frozen_dirs(self) -> FrozenDirs | None:
        frozen = self._frozen
        if frozen is None:
            frozen = self._frozen = _frozen_dirs(self.policy.filesystem.write)
            if frozen is None:
                self._stable_on = False
        return frozen

    def _frozen_cwd(self) -> str:
        """``os.getcwd()``, remembered while it cannot change under us: the directory is
        frozen (no process of the tree can rename it or a parent), and it changes only through
        ``os.chdir``/``os.fchdir``, which this process's wrappers (``chdir_guard``) count
        around the real call. A chdir reached another way (the ``os.chdir`` event outside the
        wrappers) turns this off for good."""
        cached = self._cwd
        if cached is not None and cached[0] == self._cwd_gen and not self._chdirs:
            return cached[1][:-1]
        generation = self._cwd_gen
        cwd = os.getcwd()
        if self._cwd_cache_ok and not self._chdirs:
            frozen = self._frozen_dirs()
            if frozen is not None and frozen.frozen(cwd):
                self._cwd = (generation, cwd + "/")
        return cwd

    def chdir_guard(self, real: Callable[[Any], None]) -> Callable[[Any], None]:
        """``os.chdir``/``os.fchdir`` for ``_frozen_cwd``: the remembered cwd is invalid from
        before the call until after it returned (a generation bumped on both sides)."""
        get_ident = self._get_ident
        chdirs = self._chdirs

        def chdir(path: Any) -> None:
            ident = get_ident()
            chdirs.add(ident)
            self._cwd_gen += 1
            try:
                real(path)
            finally:
                self._cwd_gen += 1
                chdirs.discard(ident)

        chdir.__name__ = chdir.__qualname__ = getattr(real, "__name__", "chdir")
        chdir.__doc__ = getattr(real, "__doc__", None)
        return chdir

    def _on_chdir(self, args: tuple[Any, ...]) -> None:
        if self._get_ident() not in self._chdirs:
            self._cwd_cache_ok = False
            self._cwd = None

    def forget(self) -> None:
        """Drop the remembered decisions (after a fork: their audit lines carry the pid)."""
        self._memo.clear()
        self._stable.clear()

    def _on_relative_os_open(self, op: str, path: Any, text: str) -> None:
        """``os.open`` of a relative name. The event does not say which ``dir_fd`` was given;
        ``os_open_guard`` (what ``os.open`` is in this process) does, for the call in flight
        on this thread. Without it (the real function reached some other way) every
        directory this process holds is a possible base, and all of them must allow it."""
        hint = self._open_hints.get(self._get_ident())
        if hint is not None and hint[0] is path:
            dir_fd = hint[1]
            found: tuple[str, int] | None
            if dir_fd is None or dir_fd == _AT_FDCWD:
                found = _lookup_here(text)
            else:
                found = _opened(text, dir_fd)
                if found is None:  # does not exist yet (O_CREAT): the directory's path + the name
                    found = _resolved(_fd_path(dir_fd).rstrip("/") + "/" + text)
            self._open_judged[self._get_ident()] = found[0]
            self._decide(op, *found)
            return
        self._check(op, text)
        for base in _directory_fds():
            self._decide(op, *_resolved(base.rstrip("/") + "/" + text))

    def _on_listdir(self, args: tuple[Any, ...]) -> None:
        path = args[0] if args else "."
        if path is None:
            path = "."
        if isinstance(path, int):
            return
        self._check(ops.FS_READ, path)

    def _on_mkdir(self, args: tuple[Any, ...]) -> None:
        self._check(ops.FS_WRITE, args[0], args[2] if len(args) > 2 else None, follow=False)

    def _on_remove(self, args: tuple[Any, ...]) -> None:
        self._check(ops.FS_DELETE, args[0], args[1] if len(args) > 1 else None, follow=False)

    def _on_rmtree(self, args: tuple[Any, ...]) -> None:
        self._check(ops.FS_DELETE, args[0], args[1] if len(args) > 1 else None, follow=False)

    def _on_rename(self, args: tuple[Any, ...]) -> None:
        src, dst = args[0], args[1]
        src_fd = args[2] if len(args) > 2 else None
        dst_fd = args[3] if len(args) > 3 else None
        self._check(ops.FS_DELETE, src, src_fd, follow=False)
        self._check(ops.FS_WRITE, dst, dst_fd, follow=False)

    def _on_symlink(self, args: tuple[Any, ...]) -> None:
        target, link = args[0], args[1]
        dir_fd = args[2] if len(args) > 2 else None
        link_abs = self._absolute(link, dir_fd)
        self._decide(ops.FS_WRITE, _canonical_nofollow(link_abs))
        # The link must not point anywhere the process could not read itself.
        text = _text_path(target)
        pointed = text if text.startswith("/") else os.path.dirname(link_abs) + "/" + text
        self._decide(ops.FS_READ, _canonical(pointed))

    def _on_link(self, args: tuple[Any, ...]) -> None:
        src, dst = args[0], args[1]
        src_fd = args[2] if len(args) > 2 else None
        dst_fd = args[3] if len(args) > 3 else None
        self._check(ops.FS_WRITE, src, src_fd)
        self._check(ops.FS_WRITE, dst, dst_fd, follow=False)

    def _on_attr(self, args: tuple[Any, ...]) -> None:
        dir_fd = args[-1] if len(args) >= 3 else None
        self._check(ops.FS_WRITE, args[0], dir_fd)

    def _on_xattr(self, args: tuple[Any, ...]) -> None:
        self._check(ops.FS_WRITE, args[0])

    def _on_truncate(self, args: tuple[Any, ...]) -> None:
        if isinstance(args[0], int):
            return  # the kernel requires a descriptor opened for writing
        self._check(ops.FS_WRITE, args[0])

    def _on_sqlite(self, args: tuple[Any, ...]) -> None:
        text = _event_text(args[0])
        if text in ("", ":memory:") or text.startswith("file::memory:"):
            return
        if text.startswith("file:"):
            from urllib.parse import parse_qs, unquote, urlsplit

            parts = urlsplit(text)
            query = parse_qs(parts.query)
            if query.get("mode", [""])[-1] == "memory":
                return
            op = ops.FS_READ if query.get("mode", [""])[-1] == "ro" else ops.FS_WRITE
            self._check(op, unquote(parts.path) or ".")
            return
        self._check(ops.FS_WRITE, text)

    # -- network events ---------------------------------------------------------------
    def _network_off(self, target: str) -> _Denied:
        return self._fail(ops.NET_CONNECT, target, "network is disabled (offline mode)", "network.enabled")

    def _on_socket_new(self, args: tuple[Any, ...]) -> None:
        family, kind = args[1], args[2]
        if family == -1 or family is None:
            return  # socket.socket(fileno=...) adopts a descriptor: family is read later
        if family == _AF_UNIX:
            return
        if family in (_AF_INET, _AF_INET6) and (kind & _SOCK_TYPE_MASK) in (_SOCK_STREAM, _SOCK_DGRAM, 0):
            return
        raise self._fail(ops.NET_CONNECT, f"socket(family={family}, type={kind})",
                         "only TCP, UDP and unix sockets are allowed", "soft.socket")

    def _on_connect(self, args: tuple[Any, ...]) -> None:
        sock, address = args[0], args[1]
        family = getattr(sock, "family", None)
        if family == _AF_UNIX or isinstance(address, (str, bytes)):
            self._unix(address)
            return
        if not isinstance(address, tuple) or len(address) < 2 or not isinstance(address[0], str) \
                or not isinstance(address[1], int):
            raise self._fail(ops.NET_CONNECT, _shown((address,)), "unrecognised socket address", "soft.socket")
        # The content the C code used (a str or int subclass's own __str__/__eq__ could tell
        # this check one address and the connect another).
        host, port = str.__str__(address[0]), int.__index__(address[1])
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not self.policy.network.enabled:
            raise self._network_off(target)
        if self.proxy is not None and (host, port) == self.proxy:
            self.gate.record(ops.NET_CONNECT, target, Decision.allow("the egress proxy", "soft.proxy", target),
                             via="soft")
            return
        raise self._fail(ops.NET_CONNECT, target,
                         "direct connections are not allowed: traffic goes through the egress proxy "
                         "(HTTP_PROXY/HTTPS_PROXY)", "soft.proxy")

    def _on_sendmsg(self, args: tuple[Any, ...]) -> None:
        # socket.sendmsg(buffers, ancdata, flags, address): the same check as sendto (a UDP
        # datagram, or a TCP connect with MSG_FASTOPEN). No address: the socket is already
        # connected, and that connect was judged.
        if len(args) > 1 and args[1] is not None:
            self._on_connect(args)

    def _unix(self, address: Any) -> None:
        address = _event_text(address)
        if address.startswith("\x00") or not address:
            shown = "unix:@" + address[1:]
            raise self._fail(ops.NET_CONNECT, shown, "abstract unix sockets are not allowed",
                             "network.allowedUnixSockets")
        canonical = _canonical(self._absolute(address))
        shown = "unix:" + self.gate.show(canonical)
        rules = self.gate.network_rules
        decide_unix = getattr(rules, "decide_unix", None)
        if decide_unix is not None:
            decision = decide_unix(canonical)
            decision = decision[0] if isinstance(decision, tuple) else decision
        elif canonical in self.policy.network.allowed_unix_sockets:
            decision = Decision.allow("listed unix socket", "network.allowedUnixSockets", canonical)
        else:
            decision = Decision.deny("unix socket not listed", "network.allowedUnixSockets", canonical)
        self.gate.record(ops.NET_CONNECT, shown, decision, via="soft")
        if not decision.allowed:
            raise _Denied(PermissionDenied(ops.NET_CONNECT, shown, decision.reason, decision.rule))

    def _on_bind(self, args: tuple[Any, ...]) -> None:
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) == _AF_UNIX or isinstance(address, (str, bytes)):
            address = _event_text(address)
            if not address or address.startswith("\x00"):
                raise self._fail(ops.NET_CONNECT, "unix:@", "abstract unix sockets are not allowed",
                                 "network.allowedUnixSockets")
            self._check(ops.FS_WRITE, address, follow=False)
            return
        target = "bind " + _shown((address,))
        if _loopback_port_zero(address):
            # A capability probe (urllib3's HAS_IPV6: bind ("::1", 0), then close): answered as
            # a host without that address would answer it, and nothing is bound — no socket
            # of this process ever gets a local address to serve on. Logged as the probe it
            # is (allowed, rule soft.bindProbe), so the summary does not count a denial.
            import errno

            self.gate.record(ops.NET_CONNECT, target, Decision.allow(
                "a loopback bind to port 0 (a capability probe): answered 'address not available' "
                "(EADDRNOTAVAIL); nothing was bound, so no server", "soft.bindProbe", target), via="soft")
            raise _Denied(OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address (soft sandbox: "
                                  "capability probe answered, nothing bound)"))
        raise self._fail(ops.NET_CONNECT, target,
                         "listening on network sockets is not allowed in the soft sandbox", "soft.listen")

    def _on_lookup(self, args: tuple[Any, ...]) -> None:
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        host = "" if host is None else str(host)
        if self.proxy is not None and self.policy.network.enabled and host == self.proxy[0]:
            return
        target = host + (f":{args[1]}" if len(args) > 1 and args[1] not in (None, 0) else "")
        if not self.policy.network.enabled:
            raise self._network_off(target)
        raise self._fail(ops.NET_CONNECT, target,
                         "name lookups go through the egress proxy, not this process", "soft.proxy")

    def _on_lookup_nameinfo(self, args: tuple[Any, ...]) -> None:
        address = args[0]
        host = address[0] if isinstance(address, tuple) and address else address
        self._on_lookup((host,))

    # -- process events ---------------------------------------------------------------
    def _path_env(self, env: Any) -> str:
        if isinstance(env, dict):
            for key in ("PATH", b"PATH"):
                if key in env:
                    value = env[key]
                    return os.fsdecode(value) if isinstance(value, bytes) else str(value)
            return os.defpath
        return os.environ.get("PATH", os.defpath)

    def _resolve_exe(self, name: Any, path_env: str) -> str:
        text = _text_path(name)
        if "/" in text:
            return _canonical(self._absolute(text))
        import shutil

        found = shutil.which(text, path=path_env)
        if found is None:  # what subprocess would say; nothing to judge, nothing runs
            import errno

            raise _Denied(FileNotFoundError(errno.ENOENT, f"{text}: not found on PATH", text))
        return _canonical(self._absolute(found))

    def _exec_decision(self, exe: str, argv: Sequence[Any], cwd: Any = None, env: Any = None) -> bool:
        """Judge running ``exe`` with ``argv`` (in ``cwd``, with ``env``: None for this
        process's); return whether it starts a Python interpreter (whose command line has
        then been checked by ``_python_command``)."""
        name = os.path.basename(exe)
        if name in SHELLS or os.path.basename(_event_text(argv[0]) if argv else "") in SHELLS:
            if not self.policy.process.allow_shell:
                raise self._fail(ops.PROC_EXEC, f"{exe} (shell)", "shells are not allowed (allowShell is false)",
                                 "process.allowShell")
        rules = self.gate.command_rules
        decide_argv = getattr(rules, "decide_argv", None)
        if decide_argv is not None:
            # The command rules judge the resolved program with its arguments (trampolines
            # such as env/xargs, deniedArguments); argv[0] is replaced by what will really run.
            line = [exe, *(_event_text(a) for a in argv[1:])]
            decision, _resolved = decide_argv(line, os.getcwd())
            if decision.allowed:
                decision = self._git_config_decision(line, cwd, env, decision)
            self.gate.record(ops.PROC_EXEC, exe, decision, via="soft")
        else:
            decision = self.gate.check(ops.PROC_EXEC, exe)
        if not decision.allowed:
            raise _Denied(PermissionDenied(ops.PROC_EXEC, exe, decision.reason, decision.rule))
        return self._python_command(exe, argv)

    def _git_config_decision(self, line: list[str], cwd: Any, env: Any, allowed: Decision) -> Decision:
        """``proc.run``'s git-configuration check (``capgate.gitconfig``) for a git this
        process starts, so a hostile ``.git/config`` is a denial in the audit log rather than
        a program the kernel layer stops without a word. The listing git runs from here, on a
        ticket for exactly its own command line (the ``fork_exec`` guard)."""
        from capgate.gitconfig import GIT_CONFIG_RULE, git_config_refusal, git_in_argv

        if not git_in_argv(line):
            return allowed
        import subprocess

        workdir = os.getcwd() if cwd is None else _canonical(self._absolute(cwd))
        child_env = dict(os.environ) if env is None else {
            os.fsdecode(_raw_bytes(k)): os.fsdecode(_raw_bytes(v)) for k, v in env.items()}
        child_env.update(_git_env())  # what that git will run with (see _with_git_env)
        rules = self.gate.command_rules
        approved = self._approved
        ident = self._get_ident()

        def find_git(word: str) -> str | None:
            return line[0] if word == line[0] else rules.allowed_executable(word, workdir)

        def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
            approved[ident] = ([os.fsencode(a) for a in cmd], os.fsencode(cmd[0]), False, True)
            try:
                return subprocess.run(cmd, **kwargs)
            finally:
                approved.pop(ident, None)

        why = git_config_refusal(line, workdir, child_env, find_git, run=run)
        return allowed if why is None else Decision.deny(why, GIT_CONFIG_RULE, allowed.target)

    def _python_command(self, exe: str, argv: Sequence[Any]) -> bool:
        """Whether ``exe`` runs Python (itself, or through its ``#!`` line); refuse the options
        that would make that interpreter skip ``sitecustomize`` and so these hooks."""
        try:
            line: list[str] | None
            if is_python_command(exe):
                line = [exe, *(_event_text(a) for a in argv[1:])]
            else:
                line = _shebang_python(exe)
                if line is None:
                    return False
            python_script_index(line)
        except HookSkippingOption as exc:
            raise self._fail(ops.PROC_EXEC, exe, str(exc), "soft.python") from None
        return True

    def _python_env_problems(self, exe: str, env: Mapping[str, str], *, fill: bool) -> dict[str, str]:
        """Check the environment a Python program will start with. It must carry the
        launcher's values (the boot ``PYTHONPATH``, ``CAPGATE_POLICY``, ...) unchanged and set
        no other variable that changes how the interpreter starts (``PYTHONHOME``,
        ``PYTHONPLATLIBDIR``, ...). With ``fill``, a missing launcher value is returned to be
        put back; otherwise a missing one is refused too. A different value is always refused:
        that is a program trying to start Python unhooked or under a policy it wrote."""
        required = self._python_env
        if required is None:
            return {}
        problems: list[str] = []
        missing: dict[str, str] = {}
        for name, value in required.items():
            have = env.get(name)
            if have is None:
                if fill:
                    missing[name] = value
                else:
                    problems.append(f"{name} is missing")
            elif have != value:
                problems.append(f"{name} differs from the sandbox's")
        for name in env:
            if name not in required and _guarded_env_name(name):
                problems.append(f"{name} is set")
        if problems:
            raise self._fail(ops.PROC_EXEC, exe, "a Python program started in the soft sandbox must keep "
                             "the sandbox's start-up environment (" + "; ".join(sorted(problems)[:5]) + ")",
                             "soft.python")
        return missing

    def _check_exec_env(self, exe: str, env: Any) -> None:
        """os.exec*/posix_spawn of Python: the environment has already been converted for the
        call, so nothing can be put back; only a plain dict (or the inherited one) is read."""
        if env is None:
            self._python_env_problems(exe, self._c_env, fill=False)
            return
        if type(env) is not dict:
            raise self._fail(ops.PROC_EXEC, exe, "give a Python program started with os.exec*/posix_spawn "
                             "a plain dict as its environment", "soft.python")
        self._python_env_problems(exe, _env_dict(env.items()), fill=False)

    def _check_exec_git_env(self, exe: str, argv: Sequence[Any], env: Any) -> None:
        """os.exec*/posix_spawn of a command line naming git: the environment is already
        converted, so capgate's git overrides (``GIT_ENV``: no repository hooks, no fsmonitor,
        no pager...) cannot be put in; it must carry them (the launcher gives them to the
        whole tree, so the inherited environment does), else the start is refused."""
        if not _names_git(exe, [os.fsencode(_event_text(a)) for a in argv]):
            return
        if env is None:
            have: Mapping[str, str] = self._c_env
        elif type(env) is dict:
            have = _env_dict(env.items())
        else:
            have = {}
        wrong = sorted(k for k, v in _git_env().items() if have.get(k) != v)
        if wrong:
            raise self._fail(ops.PROC_EXEC, exe, "git started in the soft sandbox must run with capgate's git "
                             f"overrides (GIT_ENV: {', '.join(wrong[:4])} missing or changed); keep the "
                             "inherited environment, or use subprocess, which puts them in", "soft.git")

    def _on_popen(self, args: tuple[Any, ...]) -> None:
        executable, argv, _cwd, env = args[0], list(args[1] or ()), args[2], args[3]
        if executable is None:
            executable = argv[0] if argv else ""
        exe = self._resolve_exe(executable, self._path_env(env))
        python = self._exec_decision(exe, argv, args[2], env)
        words = [os.fsencode(_event_text(a)) for a in argv]
        # The environment is checked (and completed) in fork_exec, on the list that runs.
        self._approved[self._get_ident()] = (words, os.fsencode(exe), python, _names_git(exe, words))

    def _on_system(self, args: tuple[Any, ...]) -> None:
        command = _shown(args)
        if not self.policy.process.allow_shell:
            raise self._fail(ops.PROC_EXEC, f"os.system({command})", "shells are not allowed (allowShell is false)",
                             "process.allowShell")
        self._exec_decision(self._resolve_exe("/bin/sh", os.defpath), ["sh", "-c", command])

    def _on_exec(self, args: tuple[Any, ...]) -> None:
        path, argv = args[0], list(args[1] or ())
        exe = _canonical(self._absolute(path))
        env = args[2] if len(args) > 2 else None
        if self._exec_decision(exe, argv, None, env if isinstance(env, dict) else None):
            self._check_exec_env(exe, env)
        self._check_exec_git_env(exe, argv, env)

    def _on_spawn(self, args: tuple[Any, ...]) -> None:
        path, argv = args[0], list(args[1] or ())
        exe = self._resolve_exe(path, os.environ.get("PATH", os.defpath))
        env = args[2] if len(args) > 2 else None
        if self._exec_decision(exe, argv, None, env if isinstance(env, dict) else None):
            self._check_exec_env(exe, env)
        self._check_exec_git_env(exe, argv, env)

    def _on_putenv(self, args: tuple[Any, ...]) -> None:
        name = os.fsdecode(args[0])
        if name.startswith(_ENV_PREFIXES):
            self._c_env[name] = os.fsdecode(args[1])

    def _on_unsetenv(self, args: tuple[Any, ...]) -> None:
        name = os.fsdecode(args[0])
        if name.startswith(_ENV_PREFIXES):
            self._c_env.pop(name, None)

    def _fork_exec_env(self, exe: str, env_list: Any) -> Any:
        """The environment list fork_exec will hand a Python program, checked, with any
        launcher value it lacks put back (``env=None``: the inherited environment)."""
        if env_list is None:
            missing = self._python_env_problems(exe, self._c_env, fill=True)
            if not missing:
                return None
            env_list = [k + b"=" + v for k, v in os.environb.items()]
        entries = [_raw_bytes(e) for e in env_list]
        pairs = []
        for entry in entries:
            name, sep, value = entry.partition(b"=")
            if sep:
                pairs.append((name, value))
        missing = self._python_env_problems(exe, _env_dict(pairs), fill=True)
        return entries + [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in missing.items()]

    def fork_exec_guard(self, real: Callable[..., int]) -> Callable[..., int]:
        """Wrap ``_posixsubprocess.fork_exec``: run only what a Popen event just approved,
        exec exactly the resolved path that was checked, and give a Python program the
        environment that boots these hooks."""
        approved = self._approved
        get_ident = self._get_ident
        gate = self.gate

        def fork_exec(*args: Any) -> int:
            ticket = approved.pop(get_ident(), None)
            try:
                argv = [os.fsencode(_event_text(a)) for a in (args[0] or ())]
            except (TypeError, ValueError):
                argv = None  # (the Popen event refused this argv already: no ticket matches)
            if ticket is None or argv is None or ticket[0] != argv:
                shown = " ".join(os.fsdecode(a) for a in argv or ())[:200] or "?"
                raise gate.deny(ops.PROC_EXEC, shown, "direct use of _posixsubprocess is not allowed",
                                "soft.posixsubprocess", via="soft")
            rest = args[2:]
            if ticket[3] and len(rest) > 3:  # git: capgate's overrides, as proc.run gives them
                rest = (*rest[:3], _with_git_env(rest[3]), *rest[4:])
            if ticket[2] and len(rest) > 3:  # (close_fds, pass_fds, cwd, env_list, ...)
                try:
                    env_list = self._fork_exec_env(os.fsdecode(ticket[1]), rest[3])
                except _Denied as denied:
                    raise denied.exc from None
                except Exception as exc:  # fail closed
                    raise gate.deny(ops.PROC_EXEC, os.fsdecode(ticket[1]), f"error while checking the environment: "
                                    f"{exc!r}", "soft.error", via="soft") from None
                rest = (*rest[:3], env_list, *rest[4:])
            # Exactly the argv that was judged (converted once, above): the original objects
            # would be converted again by the real fork_exec, and could answer differently.
            return real(argv, (ticket[1],), *rest)

        return fork_exec

    def os_open_guard(self, real: Callable[..., int]) -> Callable[..., int]:
        """Wrap ``os.open`` (= ``posix.open``): its audit event gives the name but not the
        ``dir_fd``, so the wrapper tells the hook, for this thread's call in flight, which
        directory a relative name is in (``_on_relative_os_open``). The name, flags, mode and
        ``dir_fd`` are converted once, here, and exactly those values are passed on: an
        ``__fspath__`` or ``__index__`` that answers differently the second time changes nothing.

        The hook judges a *name*; between its look and the real ``openat`` another thread can
        ``dup2`` another directory onto the ``dir_fd`` number, ``chdir``, or swap a symlink or
        a hard link in. So the descriptor the open returns is judged again on the file it
        really is (``_recheck_opened``), and nothing irreversible happens before that: a
        truncating open truncates only once the recheck allows it (``ftruncate``), and a file
        the open created is removed again when it is refused (a creating open without
        ``O_EXCL`` is done as "open, else create exclusively", so the wrapper knows whether
        it created the file — an existing file is never removed)."""
        hints = self._open_hints
        judged = self._open_judged
        get_ident = self._get_ident
        busy = self._busy

        def open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
            ident = get_ident()
            if ident in busy:
                return real(path, flags, mode, dir_fd=dir_fd)
            name = os.fspath(path)
            name = str.__str__(name) if isinstance(name, str) else bytes(name)
            flags = int.__index__(operator.index(flags))
            mode = int.__index__(operator.index(mode))
            base = None if dir_fd is None else int.__index__(operator.index(dir_fd))
            if flags & _O_PATH:  # (reads and changes nothing: see _on_open)
                return real(name, flags, mode, dir_fd=base)
            truncate = bool(flags & os.O_TRUNC) and flags & os.O_ACCMODE != os.O_RDONLY
            first = flags & ~os.O_TRUNC if truncate else flags
            hints[ident] = (name, base)
            judged.pop(ident, None)
            try:
                if flags & os.O_CREAT and not flags & os.O_EXCL:
                    fd, created = _open_or_create(real, name, first, mode, base)
                else:
                    fd, created = real(name, first, mode, dir_fd=base), bool(flags & os.O_CREAT)
            finally:
                hints.pop(ident, None)
            self._recheck_opened(fd, name, flags, created, judged.pop(ident, None))
            if truncate:
                try:
                    if os.fstat(fd).st_mode & _S_IFMT == _S_IFREG:
                        os.ftruncate(fd, 0)
                except BaseException:
                    os.close(fd)
                    raise
            return fd

        open.__name__ = open.__qualname__ = "open"
        open.__doc__ = real.__doc__
        open.__module__ = getattr(real, "__module__", "posix")
        return open

    def _recheck_opened(self, fd: int, name: Any, flags: int, created: bool, judged: str | None) -> None:
        """Judge ``fd`` (just returned by ``os.open``) on the path it really has
        (``/proc/self/fd``) and its link count, unless that is the path the hook judged and
        the file has one name. On a denial (or an error while deciding: fail closed) close
        it, remove the file if this open ``created`` it, and raise the denial."""
        op = _FS_WRITE if flags & _WRITE_FLAGS else _FS_READ
        ident = self._get_ident()
        busy = self._busy
        busy.add(ident)
        try:
            try:
                links = _links(fd)
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.endswith(" (deleted)") and flags & _O_TMPFILE == _O_TMPFILE:
                    target = target[: -len(" (deleted)")].rsplit("/", 1)[0] or "/"  # (its directory)
                elif not target.startswith("/"):
                    return  # not a path (a pipe or socket reopened through /proc/self/fd): judged by name
                elif target.endswith(" (deleted)"):
                    raise ValueError("the file was removed while it was being opened")
                if target == judged and links == 1:
                    return
                self._decide(op, target, links)
            except _Denied as denied:
                refusal: BaseException = denied.exc
            except Exception as exc:
                refusal = self._deny(op, _shown((name,)), f"error while checking the opened file: {exc!r}",
                                     "soft.error")
            else:
                return
            _undo_open(fd, created)
            raise refusal
        finally:
            busy.discard(ident)

    # -- functions that raise no audit event ------------------------------------------
    def guard(self, event: str, check: Callable[[tuple[Any, ...], dict[str, Any]], None],
              real: Callable[..., Any]) -> Callable[..., Any]:
        """``real`` (a function that raises no audit event) with ``check`` run first, exactly
        as the hook runs a handler. No ``__wrapped__``: that would hand out ``real``."""
        busy = self._busy
        get_ident = self._get_ident
        deny = self._deny

        def guarded(*args: Any, **kwargs: Any) -> Any:
            ident = get_ident()
            if ident not in busy:
                busy.add(ident)
                try:
                    check(args, kwargs)
                except _Denied as denied:
                    raise denied.exc from None
                except _UnsafePath as exc:
                    raise deny(_op_of(event), _shown(args), str(exc), "soft.path") from None
                except Exception as exc:  # fail closed
                    raise deny(_op_of(event), _shown(args), f"error while deciding {event}: {exc!r}",
                               "soft.error") from None
                finally:
                    busy.discard(ident)
            return real(*args, **kwargs)

        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            try:
                setattr(guarded, attr, getattr(real, attr))
            except (AttributeError, TypeError):
                pass
        return guarded

    def _on_make_node(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # os.mkfifo(path, mode=0o666, *, dir_fd=None) / os.mknod(path, mode=0o600, device=0, *, dir_fd=None)
        import stat

        path = args[0] if args else kwargs["path"]
        mode = args[1] if len(args) > 1 else kwargs.get("mode", 0o600)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise self._fail(ops.FS_WRITE, _shown((path,)), "creating device nodes is not allowed",
                             "soft.mknod")
        self._check(ops.FS_WRITE, path, kwargs.get("dir_fd"), follow=False)

    def _on_pid_arg(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # os.pidfd_open(pid), os.sched_setaffinity(pid, ...), sched_setscheduler, sched_setparam
        self._on_kill((args[0] if args else kwargs["pid"],))

    def _on_pidfd_send_signal(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._on_kill((_pidfd_target(args[0] if args else kwargs["pidfd"]),))

    def _on_setpriority(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        which, who = args[0], args[1]
        if which == getattr(os, "PRIO_PROCESS", 0):
            self._on_kill((who,))
        elif which == getattr(os, "PRIO_PGRP", 1) and who != 0:
            self._on_kill((who,))  # a group's leader: in this session, or refused
        elif which != getattr(os, "PRIO_PGRP", 1):
            raise self._fail("proc.signal", str(who), "changing the priority of all of a user's processes is "
                             "not allowed", "soft.signal")

    def _refuse(self, what: str) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
        def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            raise self._fail("soft.event", _shown(args), f"{what} is not allowed in the soft sandbox", "soft.denied")

        return check

    def guarded_functions(self) -> dict[str, dict[str, Callable[[tuple[Any, ...], dict[str, Any]], None]]]:
        """Module -> function -> check, for the functions ``install`` replaces."""
        process = {"pidfd_open": self._on_pid_arg, "sched_setaffinity": self._on_pid_arg,
                   "sched_setscheduler": self._on_pid_arg, "sched_setparam": self._on_pid_arg,
                   "setpriority": self._on_setpriority}
        posix = {"mkfifo": self._on_make_node, "mknod": self._on_make_node,
                 "chroot": self._refuse("changing the root directory"),
                 "unshare": self._refuse("entering new namespaces"),
                 "setns": self._refuse("entering other namespaces"), **process}
        return {"posix": posix, "os": posix, "_signal": {"pidfd_send_signal": self._on_pidfd_send_signal},
                "signal": {"pidfd_send_signal": self._on_pidfd_send_signal}}

    # -- native code, imports, signals, limits ----------------------------------------
    def _on_dlopen(self, args: tuple[Any, ...]) -> None:
        if args and args[0] is None:
            return  # the interpreter's own symbols; dlsym below keeps to the Python C API
        raise self._fail("native.load", _shown(args), "loading native libraries through ctypes is not allowed",
                         "soft.ctypes")

    def _on_dlsym(self, args: tuple[Any, ...]) -> None:
        name = args[1] if len(args) > 1 else None
        if isinstance(name, str) and name.startswith("Py") and "Audit" not in name:
            return
        raise self._fail("native.load", _shown(args[1:]), "calling C functions through ctypes is not allowed",
                         "soft.ctypes")

    def _on_import(self, args: tuple[Any, ...]) -> None:
        name = args[0]
        if name in _MODULES_DENIED_AFTER_BOOT:
            raise self._fail(ops.PROC_EXEC, str(name), f"loading {name} again is not allowed (it would bring "
                             "back the unguarded functions)", "soft.posixsubprocess")

    def _on_ioctl(self, args: tuple[Any, ...]) -> None:
        request = args[1] if len(args) > 1 else None
        if request in (_TIOCSTI, _TIOCLINUX):
            raise self._fail("soft.event", f"ioctl({request:#x})", "typing into a terminal is not allowed",
                             "soft.tty")

    def _on_kill(self, args: tuple[Any, ...]) -> None:
        pid = int(args[0])
        if pid == 0 or pid == os.getpid():
            return
        try:
            same_session = pid > 0 and os.getsid(pid) == self._sid
        except OSError:
            same_session = False
        if not same_session:
            raise self._fail("proc.signal", str(pid), "signals may only go to processes of this sandbox",
                             "soft.signal")

    def _on_setrlimit(self, args: tuple[Any, ...]) -> None:
        import resource

        which, limits = args[0], args[1]
        _soft, hard = resource.getrlimit(which)
        new_soft, new_hard = limits

        def above(new: int, old: int) -> bool:
            inf = resource.RLIM_INFINITY
            return old != inf and (new == inf or new > old)

        if above(new_hard, hard) or above(new_soft, hard):
            raise self._fail("proc.limit", str(which), "resource limits can only be lowered", "soft.rlimit")

    def _on_prlimit(self, args: tuple[Any, ...]) -> None:
        pid = args[0]
        if len(args) > 2 and args[2] is not None:
            if pid not in (0, os.getpid()):
                raise self._fail("proc.limit", str(pid), "limits of other processes cannot be changed", "soft.rlimit")
            self._on_setrlimit((args[1], args[2]))


# -- module-level helpers ------------------------------------------------------------
class HookSkippingOption(ValueError):
    """A Python command line with an option that skips the soft sandbox's start-up."""


def is_python_command(exe: str) -> bool:
    """Whether ``exe`` (resolved) is a Python interpreter the soft sandbox can hook:
    ``python``, ``python3``, ``python3.11``..., or this very interpreter under another name."""
    name = os.path.basename(exe)
    if name.startswith("python"):
        version = name[6:]
        if not version or all(part.isdecimal() for part in version.split(".")):
            return True
    try:
        return os.path.realpath(exe) == os.path.realpath(sys.executable)
    except OSError:
        return False


def python_script_index(argv: Sequence[str]) -> int | None:
    """Check a Python command line; return the index of the script path it runs (if any).

    Raises HookSkippingOption for -I, -E and -S (alone or in a cluster such as ``-Esc``),
    which would skip ``sitecustomize`` and so the soft sandbox's boot."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return i + 1 if i + 1 < len(argv) else None
        if arg == "-" or not arg.startswith("-"):
            return None if arg == "-" else i
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                i += 2
                continue
            i += 1
            continue
        cluster = arg[1:]
        for pos, char in enumerate(cluster):
            if char in "IES":
                raise HookSkippingOption(f"python option -{char} would skip the soft sandbox's start-up hooks; "
                                         "run without it")
            if char in "cm":
                return None
            if char in "WX":
                if pos == len(cluster) - 1:
                    i += 1
                break
        i += 1
    return None


def _shebang_python(exe: str) -> list[str] | None:
    """``[interpreter, *options]`` of a script whose ``#!`` line runs Python, else None.
    ``#!/usr/bin/env python3`` counts; ``env`` with options or assignments in front of a
    Python is refused (``env -i``/``-S``/``NAME=value`` change what the interpreter sees)."""
    try:
        with open(exe, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = os.fsdecode(head[2:].split(b"\n", 1)[0]).split()
    if not words or "python" not in " ".join(words).lower():
        return None
    if os.path.basename(words[0]) == "env":
        words = words[1:]
        if not words or words[0].startswith("-") or "=" in words[0]:
            raise HookSkippingOption("a #! line that runs Python through env with options is not allowed in the "
                                     "soft sandbox")
    if not is_python_command(words[0]):
        return None
    return words


def _guarded_env_name(name: str) -> bool:
    if name.startswith("PYTHON"):
        return name not in _HARMLESS_PYTHON_VARS
    return name.startswith("CAPGATE_") and name not in _FREE_CAPGATE_VARS


def _raw_bytes(value: Any) -> bytes:
    """An environment name or value as the C call sees it: exact str or bytes content (a
    subclass's overridden methods are not consulted); anything else is refused."""
    if isinstance(value, str):
        return os.fsencode(str.__str__(value))
    if isinstance(value, bytes):
        return bytes(memoryview(value))
    raise TypeError(f"environment entries must be str or bytes, not {type(value).__name__}")


def _env_dict(pairs: Any) -> dict[str, str]:
    """Name -> value of the guarded variables in ``pairs``; a guarded name given twice is
    refused (which copy a program reads is not ours to guess)."""
    out: dict[str, str] = {}
    for key, value in pairs:
        name = os.fsdecode(_raw_bytes(key))
        if not name.startswith(_ENV_PREFIXES):
            continue
        if name in out:
            raise ValueError(f"{name} is given twice in the environment")
        out[name] = os.fsdecode(_raw_bytes(value))
    return out


def _git_env() -> dict[str, str]:
    """capgate's git overrides (``capgate.cmdrules.GIT_ENV``), imported on first use."""
    from capgate.cmdrules import GIT_ENV

    return GIT_ENV


def _names_git(exe: str, argv: Sequence[bytes]) -> bool:
    """Whether a command line runs git, also behind a trampoline (``env git``, ``timeout 5
    git``): ``proc.run``'s rule for giving a command ``GIT_ENV`` (``gitconfig.git_in_argv``)."""
    return os.path.basename(exe) == "git" or any(os.path.basename(a) == b"git" for a in argv)


def _with_git_env(env_list: Any) -> list[bytes]:
    """The environment list ``fork_exec`` hands a git (None: the inherited environment), with
    capgate's ``GIT_ENV`` values in place of any the program set or left out — the same
    overrides ``proc.run``'s git gets (``child_env.update(GIT_ENV)``)."""
    entries = [k + b"=" + v for k, v in os.environb.items()] if env_list is None else \
        [_raw_bytes(e) for e in env_list]
    ours = {os.fsencode(k): os.fsencode(v) for k, v in _git_env().items()}
    kept = [e for e in entries if e.partition(b"=")[0] not in ours]
    return kept + [k + b"=" + v for k, v in ours.items()]


def _pidfd_target(fd: Any) -> int:
    """The process a pidfd (or an open ``/proc/<pid>`` directory) refers to."""
    fd = int(fd)
    link = os.readlink(f"/proc/self/fd/{fd}")
    if link == "anon_inode:[pidfd]":
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    parts = link.split("/")
    if len(parts) >= 3 and parts[0] == "" and parts[1] == "proc" and parts[-1].isdecimal():
        return int(parts[-1])
    raise ValueError(f"descriptor {fd} is not a process descriptor ({link})")


def _op_of(event: str) -> str:
    if event.startswith("socket."):
        return ops.NET_CONNECT
    if event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.posix_spawnp"):
        return ops.PROC_EXEC
    if event in ("os.remove", "os.rmdir", "shutil.rmtree"):
        return ops.FS_DELETE
    if event in ("open", "os.listdir", "os.scandir"):
        return ops.FS_READ
    return ops.FS_WRITE if event.startswith(("os.", "sqlite3.")) else "soft.event"


class _UnsafePath(TypeError):
    """Internal: an event argument the hooks cannot read as the C code that raised the event
    read it (a path object whose ``__fspath__`` may answer differently the second time, a
    mutable buffer another thread may rewrite). The hook turns it into a ``soft.path`` denial."""


def _stdlib_path_types() -> tuple[type, ...]:
    """The concrete ``pathlib`` classes of the standard library, when ``pathlib`` is loaded
    (when it is not, no event argument can be one of them: nothing is imported to ask)."""
    pathlib = sys.modules.get("pathlib")
    if pathlib is None:
        return ()
    return (pathlib.PurePosixPath, pathlib.PosixPath)


def _event_text(value: Any) -> str:
    """The text an audit event's path (or argv) argument stands for, read exactly as the C
    code that raised the event read it — the one conversion both sides agree on.

    The C code converts its argument *once* and raises the event with the original object;
    converting that object again here (``os.fspath``, ``str()``, ``bytes()``) would judge a
    second answer that need not be the first (``io.FileIO(obj)`` opens what ``__fspath__``
    said first). So: ``str``/``bytes`` are read by their content (a subclass's ``__str__``,
    ``__bytes__`` or ``__fspath__`` is never called: C uses the content too); an object of the
    standard library's own ``pathlib`` classes (exact type: a subclass could override
    ``__fspath__``/``__str__``) through ``PurePath.__str__``, the string it caches; anything
    else — a user ``os.PathLike``, a ``bytearray`` or ``memoryview`` another thread could
    rewrite — is refused (``_UnsafePath``, rule ``soft.path``): pass ``str(path)`` instead."""
    kind = type(value)
    if kind is str:
        return str.__str__(value)  # (itself: the same object, typed)
    if kind is bytes:
        return os.fsdecode(value)
    if isinstance(value, str):
        return str.__str__(value)  # an exact copy of the content
    if isinstance(value, bytes):
        return os.fsdecode(bytes.__getitem__(value, slice(None)))  # (the content, no __bytes__)
    if kind in _stdlib_path_types():
        import pathlib

        text = pathlib.PurePath.__str__(value)
        return text if type(text) is str else str.__str__(text)
    raise _UnsafePath(f"a path given as {kind.__name__}, not str or bytes: its value may change between the "
                      "conversion that acts and the one the sandbox would judge (an __fspath__ may answer "
                      "twice); pass str(path)")


def _text_path(path: Any) -> str:
    """``_event_text`` of a path argument, which must be non-empty and free of NUL bytes."""
    text = _event_text(path)
    if "\x00" in text:
        raise ValueError("path contains a NUL byte")
    if not text:
        raise ValueError("empty path")
    return text


def _shown(args: tuple[Any, ...]) -> str:
    try:
        first = args[0] if args else ""
        text = os.fsdecode(first) if isinstance(first, (bytes, str)) else repr(first)
    except Exception:
        text = "?"
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= 300 else text[:297] + "..."


def _loopback_port_zero(address: Any) -> bool:
    """Whether a bind address is a loopback IP literal with port 0, as exact ``str``/``int``
    (an object that could answer one value here and another to the real bind is not)."""
    if type(address) is not tuple or len(address) < 2 or type(address[0]) is not str or type(address[1]) is not int:
        return False
    if address[1] != 0:
        return False
    import ipaddress

    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return False


def _open_or_create(real: Callable[..., int], name: Any, flags: int, mode: int,
                    dir_fd: int | None) -> tuple[int, bool]:
    """``open(name, flags)`` with ``O_CREAT`` and without ``O_EXCL``, done so that the caller
    knows whether it created the file: open the existing file, else create it exclusively
    (a file that appears in between is opened on the next round). Returns (fd, created)."""
    while True:
        try:
            return real(name, flags & ~os.O_CREAT, mode, dir_fd=dir_fd), False
        except FileNotFoundError:
            pass
        try:
            return real(name, flags | os.O_EXCL, mode, dir_fd=dir_fd), True
        except FileExistsError:
            continue


def _undo_open(fd: int, created: bool) -> None:
    """Close a refused descriptor; when its open created the file, remove that file again —
    by the name it has now, and only while that name is still this very file."""
    try:
        if created:
            mine = os.fstat(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.startswith("/") and not path.endswith(" (deleted)"):
                there = os.stat(path, follow_symlinks=False)
                if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        raise ValueError(f"cannot tell which file descriptor {fd} refers to") from exc
    if not target.startswith("/") or target.endswith(" (deleted)"):
        raise ValueError(f"descriptor {fd} refers to {target!r}, not a path")
    return target


def _links(fd: int) -> int:
    """How many names the file open as ``fd`` has when it is a regular file (else 1): the
    gate refuses to read or change in place a regular file with more than one
    (``filesystem.hardLinks``). One ``fstat`` of a descriptor the lookup holds anyway."""
    st = os.fstat(fd)
    return st.st_nlink if st.st_mode & _S_IFMT == _S_IFREG else 1


def _stat_links(path: str) -> int:
    """``_links`` by name, for the slow paths that hold no descriptor; 1 when it does not exist."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return 1
    return st.st_nlink if st.st_mode & _S_IFMT == _S_IFREG else 1


def _opened(name: str, dir_fd: int | None = None) -> tuple[str, int] | None:
    """Open ``name`` ``O_PATH`` (follows every link, touches no data) and ask the kernel what
    it opened and how many names it has; None when it cannot be opened or named (the callers
    use ``realpath``). ``dir_fd``: resolve a relative ``name`` as ``os.open(..., dir_fd=)`` will."""
    if not _O_PATH:
        return None
    try:
        fd = _os_open(name, _O_PATH | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        target = os.readlink(f"/proc/{os.getpid()}/fd/{fd}")  # cheaper than /proc/self
        links = _links(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not target.startswith("/") or target.endswith(" (deleted)"):
        return None
    return target, links


def _opened_path(name: str) -> str | None:
    """The canonical path ``_opened`` finds, or None."""
    found = _opened(name)
    return None if found is None else found[0]


def _canonical(absolute: str) -> str:
    """Canonical path (``_opened_path``); a path that does not exist yet goes through
    ``realpath``."""
    return _opened_path(absolute) or os.path.realpath(absolute)


def _resolved(absolute: str) -> tuple[str, int]:
    """``_canonical`` and the link count of what it names (``_links``)."""
    found = _opened(absolute)
    if found is not None:
        return found
    canonical = os.path.realpath(absolute)
    return canonical, _stat_links(canonical)


# -- the no-symlink fast path of ``_lookup_here`` -----------------------------------------
# ``openat2(O_PATH, RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`` through ctypes: when the kernel
# confirms that no component of a path is a symlink, the path as written (made absolute
# against the cwd, normalised) *is* its canonical path, and the readlink of /proc/<pid>/fd/N
# (about 3 us of the ~7 us per open) is not needed. Built on first use, inside the hook (its
# own ctypes events are skipped there): a process that opens nothing after start-up never
# pays the ~4 ms of ``import ctypes``. The libc ``syscall`` it holds is, like every object
# of the hooks, reachable by a program written against capgate (see the module docstring);
# ctypes raises no event for calling it. What such a call can do is the kernel layer's to
# bound (Landlock), as for native code.
_SYS_OPENAT2 = 437 if os.uname().machine in ("x86_64", "aarch64", "arm64") else 0
_NOSYM_RESOLVE = 0x04 | 0x02  # RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_nosym_state = 0  # 0: not tried yet, 1: ready, -1: unavailable here
_nosym_open: Callable[[bytes], int] | None = None


def _load_nosym() -> None:
    global _nosym_state, _nosym_open
    _nosym_state = -1
    if not _SYS_OPENAT2 or not _O_PATH:
        return
    try:
        import ctypes

        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

        syscall = ctypes.CDLL(None, use_errno=True).syscall
        syscall.restype = ctypes.c_long
        # No argtypes (their conversion costs ~0.3 us a call): the arguments are ctypes objects
        # of the exact C types, made once; the path is passed as bytes (char *).
        how = ctypes.byref(OpenHow(_O_PATH | os.O_CLOEXEC, 0, _NOSYM_RESOLVE))  # (keeps the struct alive)
        size = ctypes.c_size_t(ctypes.sizeof(OpenHow))
        number = ctypes.c_long(_SYS_OPENAT2)
        at_fdcwd = ctypes.c_long(_AT_FDCWD)
    except (ImportError, OSError, AttributeError, TypeError):
        return

    def open_nosym(encoded: bytes) -> int:
        return int(syscall(number, at_fdcwd, encoded, how, size))

    probe = open_nosym(b"/")  # ENOSYS (old kernel) or EPERM (a seccomp filter): not here
    if probe < 0:
        return
    os.close(probe)
    _nosym_open = open_nosym
    _nosym_state = 1


def _lexical_canonical(text: str) -> tuple[str, int] | None:
    """``text`` (relative to the cwd) as a canonical path, with its link count (``_links``),
    when no component of it is a symlink; None when one is, when it does not exist, or when
    this cannot tell (the caller asks /proc). A relative path is made absolute with the cwd *first* and the absolute
    path is what the kernel checks: the path returned is exactly the one checked (the cwd
    ``getcwd`` gives is physical, free of symlinks itself)."""
    if _nosym_state == 0:
        _load_nosym()
    opener = _nosym_open
    if opener is None:
        return None
    try:
        if not text.startswith("/"):
            cwd = os.getcwd()
            text = (cwd if cwd != "/" else "") + "/" + text
        fd = opener(os.fsencode(text))
    except (OSError, ValueError):
        return None
    if fd < 0:
        return None
    try:
        st = os.fstat(fd)  # (``_links``, inlined: this is the path of nearly every open)
    finally:
        os.close(fd)
    links = st.st_nlink if st.st_mode & _S_IFMT == _S_IFREG else 1
    if "/." in text or "//" in text or (text.endswith("/") and text != "/"):
        # No symlinks on the way, so ".." is the lexical parent; "//x" is "/x" on Linux.
        text = os.path.normpath(text)
        if text.startswith("//"):
            text = "/" + text.lstrip("/")
    return text, links


def _lookup_here(text: str) -> tuple[str, int]:
    """``_resolved`` of ``text`` as given (relative to the process cwd, as ``open`` will
    resolve it); ``getcwd`` only for a path that does not exist yet."""
    if _nosym_state >= 0:
        fast = _lexical_canonical(text)
        if fast is not None:
            return fast
    opened = _opened(text)
    if opened is not None:
        return opened
    if not text.startswith("/"):
        text = os.getcwd().rstrip("/") + "/" + text
    canonical = os.path.realpath(text)
    return canonical, _stat_links(canonical)


def _frozen_dirs(write_roots: Sequence[str]) -> FrozenDirs | None:
    """``FrozenDirs`` for this process's mount table, or None when it cannot be read."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            table = fh.read()
        return FrozenDirs([os.path.realpath(root) for root in write_roots], table)
    except (OSError, ValueError):
        return None


def _resolved_fallback(absolute: str) -> tuple[str, int]:
    """``_lookup_here`` of an absolute path after its no-symlink lookup found nothing."""
    opened = _opened(absolute)
    if opened is not None:
        return opened
    canonical = os.path.realpath(absolute)
    return canonical, _stat_links(canonical)


def _canonical_nofollow(absolute: str) -> str:
    """The canonical path of ``absolute``'s directory plus its last name (the name itself
    is what a remove, rename or link acts on, not what a symlink there points to)."""
    norm = os.path.normpath(absolute)
    head, tail = os.path.split(norm)
    if tail in ("", ".", ".."):
        return _canonical(norm)
    parent = _canonical(head or "/")
    return (parent.rstrip("/") or "") + "/" + tail


def _directory_fds() -> list[str]:
    """Paths of the directories this process holds descriptors to (possible ``dir_fd``s)."""
    out: list[str] = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return out
    import stat

    for name in names:
        try:
            st = os.fstat(int(name))
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                out.append(_fd_path(int(name)))
            except ValueError:
                out.append("/")  # unknown directory: judged as if at the root (fails closed)
    return out


def install(gate: Gate, *, proxy: tuple[str, int] | None = None,
            python_env: Mapping[str, str] | None = None) -> SoftHooks:
    """Route this process's audit events through ``gate``; cannot be undone.

    Also swaps ``_posixsubprocess`` for a guarded module, and replaces the ``os``/``posix``
    and ``signal`` functions that raise no audit event (see the module docstring). Call
    once, before user code. ``python_env``: the environment the launcher gave this process
    (``capgate._soft_boot`` passes it); a Python program started from here must carry its
    start-up variables. Without it, the environment of a Python child is not checked.
    """
    global _installed
    if _installed is not None:
        raise RuntimeError("the soft sandbox hooks are already installed in this process")
    import _posixsubprocess
    import types

    hooks = SoftHooks(gate, proxy=proxy, python_env=python_env)
    for module_name, checks in hooks.guarded_functions().items():
        module = sys.modules.get(module_name)
        if module is None:
            continue  # signal: not imported yet; it copies _signal's (guarded) functions
        for name, check in checks.items():
            real = getattr(module, name, None)
            if real is not None:
                setattr(module, name, hooks.guard(f"{module_name}.{name}", check, real))
    os_open = hooks.os_open_guard(_os_open)
    for module_name in ("os", "posix"):
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "open", None) is _os_open:
            setattr(module, "open", os_open)  # noqa: B010 (a module type has no "open" for mypy)
        for name in ("chdir", "fchdir"):
            real = getattr(module, name, None) if module is not None else None
            if real is not None:
                setattr(module, name, hooks.chdir_guard(real))
    guarded = types.ModuleType("_posixsubprocess", "capgate guard around _posixsubprocess")
    guarded.fork_exec = hooks.fork_exec_guard(_posixsubprocess.fork_exec)  # type: ignore[attr-defined]
    guarded.__spec__ = getattr(_posixsubprocess, "__spec__", None)
    sys.modules["_posixsubprocess"] = guarded
    # gate.network_rules / gate.command_rules (~10 ms of imports and compiling) are built on
    # first use, inside the hook: the import's own events are skipped by the re-entrancy
    # guard, and an import that fails there is a denial (fail closed). Most children never
    # start a process or touch a unix socket.
    os.register_at_fork(after_in_child=hooks.forget)
    sys.addaudithook(hooks.hook)
    _installed = hooks
    return hooks
