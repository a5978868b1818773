"""Soft sandbox: route a Python process's own actions through the gate with audit hooks.

``install(gate)`` adds a PEP 578 audit hook that maps the interpreter's audit events to gate
operations and raises ``PermissionDenied`` (a ``PermissionError``) inside the process for a
denial, before the action happens. The launcher arranges for this to run before any user code
(see ``capgate._soft_boot``); user programs are not modified.

What is routed, and how:

* ``open`` (builtin ``open``, ``io.open_code``, ``os.open``): read or write from the *flags*
  (``O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND``) and the mode string. Relative paths resolve
  against the process cwd; ``os.open(name, dir_fd=fd)`` only reports ``name``, so a relative
  ``os.open`` must be allowed against the cwd *and* against every directory descriptor the
  process holds (read from ``/proc/self/fd``) — fail closed, since we cannot tell which was meant.
* ``os.listdir/scandir`` (read); ``os.mkdir``, ``os.chmod/chown/utime/truncate``,
  ``os.setxattr/removexattr`` (write; on a descriptor, the file it refers to);
  ``os.remove/rmdir``, ``shutil.rmtree`` (delete); ``os.rename`` (delete source, write
  destination); ``os.symlink`` (write the link, read its target); ``os.link`` (write both:
  a hard link makes the source writable through the new name). ``dir_fd`` arguments are
  resolved through ``/proc/self/fd``. Removing or renaming a symlink judges the link, not its
  target. ``sqlite3.connect`` is a write of the database file.
* Paths are canonicalized first (symlinks, ``..``, ``/proc/self/fd/N``): an ``O_PATH`` open
  and a ``readlink`` of its ``/proc/self/fd`` entry, else ``os.path.realpath``.
* ``socket.connect/sendto``: with network off, every inet connect is denied; with network on,
  only the launcher's egress proxy (``proxy=(host, port)``) may be reached, and the proxy asks
  the gate about each real destination. ``socket.getaddrinfo`` and the other name lookups are
  denied (a DNS query is an exfiltration channel) except for the proxy's own host. Unix-socket
  connects need a listed socket (``network.allowedUnixSockets``). Binding inet sockets
  (listening) is denied; binding a unix socket is a write of its path. Raw, packet and netlink
  sockets are denied.
* Processes: ``subprocess.Popen``, ``os.exec*``, ``os.posix_spawn[p]`` are ``proc.exec`` of the
  *resolved* executable (found on the PATH the child will really use); any shell needs
  ``process.allowShell``; ``os.system`` is a shell. ``_posixsubprocess`` is replaced by a
  wrapper that only runs what a ``subprocess.Popen`` event just approved, on the resolved path
  that was checked; importing or reloading the real module again is denied. ``os.fork`` is
  allowed (the forked process keeps these hooks).
* ``ctypes``: ``ctypes.dlopen`` of any library is denied (only the interpreter's own handle,
  which ``import ctypes`` opens, is allowed) and ``dlsym`` on it is limited to the public
  ``Py*`` C API (nothing with ``Audit`` in its name): ``CDLL("libc.so.6")`` and
  ``CDLL(None).open`` fail. Importing ctypes stays possible because honest libraries do it.
* Also denied: ``sqlite3`` extension loading, ``fcntl.ioctl(TIOCSTI/TIOCLINUX)`` (typing into
  the user's terminal), signals to processes outside this session, raising rlimits, ``syslog``,
  and ``gc.get_objects/get_referrers/get_referents`` (fishing out the hook's own references).

What this does NOT do — it is a seat belt, not isolation (``SOFT_SANDBOX=true``):

* No event exists for ``os.stat``, ``os.access``, ``os.readlink``: metadata of any path can be
  read. Non-Python children (and native extension code) are not hooked at all.
* No event exists when a ctypes function pointer is built from a raw address and called
  (``CFUNCTYPE(...)(address)``): code that computes libc addresses can call anything.
* Check and use are not one object: a path is judged, then the interpreter opens it by name, so
  a concurrent symlink swap (by another thread or process) can race the check.
* Python code in the process can reach the hook's objects through frames and closures and
  undo them; a determined program written against capgate can escape. Use the container
  backend for isolation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from capgate import ops
from capgate.decision import Decision
from capgate.errors import PermissionDenied

if TYPE_CHECKING:
    from capgate.gate import Gate

__all__ = ["SHELLS", "SoftHooks", "install", "installed"]

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish", "csh", "tcsh"})

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_AT_FDCWD = -100
_O_PATH = getattr(os, "O_PATH", 0)
_AF_UNIX = 1
_AF_INET = 2
_AF_INET6 = 10
_SOCK_STREAM = 1
_SOCK_DGRAM = 2
_SOCK_TYPE_MASK = 0xF  # strips SOCK_NONBLOCK / SOCK_CLOEXEC
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_MODULES_DENIED_AFTER_BOOT = frozenset({"_posixsubprocess"})
_FS_READ = ops.FS_READ
_FS_WRITE = ops.FS_WRITE
_MEMO_MAX = 16384  # remembered allowed decisions; the table is emptied when full

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

    def __init__(self, gate: Gate, *, proxy: tuple[str, int] | None = None) -> None:
        self.gate = gate
        self.policy = gate.policy
        self.proxy = proxy
        self._busy: set[int] = set()  # thread idents currently deciding (re-entrancy)
        self._approved: dict[int, tuple[list[bytes], bytes]] = {}  # thread -> Popen approved
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
            "os.killpg": self._on_kill,
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

        def hook(event: str, args: tuple[Any, ...]) -> None:
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

    def _decide(self, op: str, canonical: str) -> None:
        key = (op, canonical)
        log = self._memo.get(key)
        if log is not None:
            log()
            return
        gate = self.gate
        decision = gate.peek_path(op, canonical)
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
            self._decide(op, _fd_path(path))
            return
        absolute = self._absolute(path, dir_fd)
        canonical = _canonical(absolute) if follow else _canonical_nofollow(absolute)
        self._decide(op, canonical)

    # -- filesystem events ------------------------------------------------------------
    def _on_open(self, args: tuple[Any, ...]) -> None:
        # The hottest handler (every file a program opens, every module it imports).
        path, mode, flags = args
        if isinstance(path, int) or path is None:
            return
        write = bool((flags or 0) & _WRITE_FLAGS) or (
            isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        )
        op = _FS_WRITE if write else _FS_READ
        text = path if type(path) is str and path and "\x00" not in path else _text_path(path)
        if mode is None and not text.startswith("/"):
            # os.open: a dir_fd may have been given, and the event does not say. Every
            # directory we hold is a possible base; all of them must allow it.
            self._check(op, text)
            for base in _directory_fds():
                self._decide(op, _canonical(base.rstrip("/") + "/" + text))
            return
        # The common case (builtin open, io.open_code, absolute os.open): resolve the name
        # as the open will, relative to the real cwd, without building an absolute path.
        canonical = _canonical_here(text)
        log = self._memo.get((op, canonical))
        if log is not None:
            log()
            return
        self._decide(op, canonical)

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
        database = args[0]
        if isinstance(database, (bytes, bytearray)):
            database = os.fsdecode(bytes(database))
        if not isinstance(database, (str, os.PathLike)):
            raise self._fail(ops.FS_WRITE, _shown(args), "unrecognised sqlite database argument", "soft.sqlite")
        text = os.fspath(database)
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
        if not isinstance(address, tuple) or len(address) < 2:
            raise self._fail(ops.NET_CONNECT, _shown((address,)), "unrecognised socket address", "soft.socket")
        host, port = str(address[0]), address[1]
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

    def _unix(self, address: Any) -> None:
        if isinstance(address, (bytes, bytearray)):
            address = os.fsdecode(bytes(address))
        if not isinstance(address, str):
            raise self._fail(ops.NET_CONNECT, _shown((address,)), "unrecognised unix socket address", "soft.socket")
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
            if isinstance(address, (bytes, bytearray)):
                address = os.fsdecode(bytes(address))
            if not isinstance(address, str) or not address or address.startswith("\x00"):
                raise self._fail(ops.NET_CONNECT, "unix:@", "abstract unix sockets are not allowed",
                                 "network.allowedUnixSockets")
            self._check(ops.FS_WRITE, address, follow=False)
            return
        raise self._fail(ops.NET_CONNECT, "bind " + _shown((address,)),
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

    def _exec_decision(self, exe: str, argv: Sequence[Any]) -> None:
        name = os.path.basename(exe)
        if name in SHELLS or os.path.basename(_text_path(argv[0]) if argv else "") in SHELLS:
            if not self.policy.process.allow_shell:
                raise self._fail(ops.PROC_EXEC, f"{exe} (shell)", "shells are not allowed (allowShell is false)",
                                 "process.allowShell")
        rules = self.gate.command_rules
        decide_argv = getattr(rules, "decide_argv", None)
        if decide_argv is not None:
            # The command rules judge the resolved program with its arguments (trampolines
            # such as env/xargs, deniedArguments); argv[0] is replaced by what will really run.
            decision, _resolved = decide_argv([exe, *(_text_path(a) for a in argv[1:])], os.getcwd())
            self.gate.record(ops.PROC_EXEC, exe, decision, via="soft")
        else:
            decision = self.gate.check(ops.PROC_EXEC, exe)
        if not decision.allowed:
            raise _Denied(PermissionDenied(ops.PROC_EXEC, exe, decision.reason, decision.rule))

    def _on_popen(self, args: tuple[Any, ...]) -> None:
        executable, argv, _cwd, env = args[0], list(args[1] or ()), args[2], args[3]
        if executable is None:
            executable = argv[0] if argv else ""
        exe = self._resolve_exe(executable, self._path_env(env))
        self._exec_decision(exe, argv)
        self._approved[self._get_ident()] = ([os.fsencode(_text_path(a)) for a in argv], os.fsencode(exe))

    def _on_system(self, args: tuple[Any, ...]) -> None:
        command = _shown(args)
        if not self.policy.process.allow_shell:
            raise self._fail(ops.PROC_EXEC, f"os.system({command})", "shells are not allowed (allowShell is false)",
                             "process.allowShell")
        self._exec_decision(self._resolve_exe("/bin/sh", os.defpath), ["sh", "-c", command])

    def _on_exec(self, args: tuple[Any, ...]) -> None:
        path, argv = args[0], list(args[1] or ())
        self._exec_decision(_canonical(self._absolute(path)), argv)

    def _on_spawn(self, args: tuple[Any, ...]) -> None:
        path, argv = args[0], list(args[1] or ())
        self._exec_decision(self._resolve_exe(path, os.environ.get("PATH", os.defpath)), argv)

    def fork_exec_guard(self, real: Callable[..., int]) -> Callable[..., int]:
        """Wrap ``_posixsubprocess.fork_exec``: run only what a Popen event just approved,
        and exec exactly the resolved path that was checked."""
        approved = self._approved
        get_ident = self._get_ident
        gate = self.gate

        def fork_exec(*args: Any) -> int:
            ticket = approved.pop(get_ident(), None)
            argv = [os.fsencode(a) if isinstance(a, str) else bytes(a) for a in (args[0] or ())]
            if ticket is None or ticket[0] != argv:
                shown = " ".join(os.fsdecode(a) for a in argv)[:200] or "?"
                raise gate.deny(ops.PROC_EXEC, shown, "direct use of _posixsubprocess is not allowed",
                                "soft.posixsubprocess", via="soft")
            return real(args[0], (ticket[1],), *args[2:])

        return fork_exec

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
            raise self._fail(ops.PROC_EXEC, str(name), "loading _posixsubprocess again is not allowed",
                             "soft.posixsubprocess")

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


def _text_path(path: Any) -> str:
    if isinstance(path, (bytes, bytearray)):
        path = os.fsdecode(bytes(path))
    elif not isinstance(path, str):
        path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
    if "\x00" in path:
        raise ValueError("path contains a NUL byte")
    if not path:
        raise ValueError("empty path")
    return str(path)


def _shown(args: tuple[Any, ...]) -> str:
    try:
        first = args[0] if args else ""
        text = os.fsdecode(first) if isinstance(first, (bytes, str)) else repr(first)
    except Exception:
        text = "?"
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= 300 else text[:297] + "..."


def _fd_path(fd: int) -> str:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        raise ValueError(f"cannot tell which file descriptor {fd} refers to") from exc
    if not target.startswith("/") or target.endswith(" (deleted)"):
        raise ValueError(f"descriptor {fd} refers to {target!r}, not a path")
    return target


def _canonical(absolute: str) -> str:
    """Canonical path: open it ``O_PATH`` (follows every link, touches no data) and ask the
    kernel what it opened; a path that does not exist yet goes through ``realpath``."""
    if _O_PATH:
        try:
            fd = os.open(absolute, _O_PATH | os.O_CLOEXEC)
        except OSError:
            return os.path.realpath(absolute)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        finally:
            os.close(fd)
        if target.startswith("/") and not target.endswith(" (deleted)"):
            return target
    return os.path.realpath(absolute)


def _canonical_here(text: str) -> str:
    """``_canonical`` of ``text`` as given (relative to the process cwd, as ``open`` will
    resolve it); ``getcwd`` only for a path that does not exist yet."""
    if _O_PATH:
        try:
            fd = os.open(text, _O_PATH | os.O_CLOEXEC)
        except OSError:
            pass
        else:
            try:
                target = os.readlink(f"/proc/{os.getpid()}/fd/{fd}")  # cheaper than /proc/self
            except OSError:
                target = ""
            finally:
                os.close(fd)
            if target.startswith("/") and not target.endswith(" (deleted)"):
                return target
    if not text.startswith("/"):
        text = os.getcwd().rstrip("/") + "/" + text
    return os.path.realpath(text)


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


def install(gate: Gate, *, proxy: tuple[str, int] | None = None) -> SoftHooks:
    """Route this process's audit events through ``gate``; cannot be undone.

    Also swaps ``_posixsubprocess`` for a guarded module. Call once, before user code.
    """
    global _installed
    if _installed is not None:
        raise RuntimeError("the soft sandbox hooks are already installed in this process")
    import _posixsubprocess
    import types

    hooks = SoftHooks(gate, proxy=proxy)
    guarded = types.ModuleType("_posixsubprocess", "capgate guard around _posixsubprocess")
    guarded.fork_exec = hooks.fork_exec_guard(_posixsubprocess.fork_exec)  # type: ignore[attr-defined]
    guarded.__spec__ = getattr(_posixsubprocess, "__spec__", None)
    sys.modules["_posixsubprocess"] = guarded
    # gate.network_rules / gate.command_rules (~10 ms of imports and compiling) are built on
    # first use, inside the hook: the import's own events are skipped by the re-entrancy
    # guard, and an import that fails there is a denial (fail closed). Most children never
    # start a process or touch a unix socket.
    os.register_at_fork(after_in_child=hooks._memo.clear)
    sys.addaudithook(hooks.hook)
    _installed = hooks
    return hooks
