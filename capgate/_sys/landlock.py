"""Landlock: a process tree that may execute only listed files, and write only beneath listed roots.

Why: ``capgate.cmdrules`` decides the command line it is given, but an allowed program can run
another one by itself — ``git`` runs a repository's filter through ``/bin/sh -c``, ``tar``
``--to-command``, ``awk``'s ``system()``, ``sed``'s ``e``, ``make``'s recipes, ``python``'s
``os.system``. Argument rules can only chase such options one by one. With ``allowShell:
false``, capgate instead asks the kernel to refuse ``execve`` of any file that is not an
allowed command (or the ELF loader / script interpreter an allowed command needs): a whole
class closed in one place, for the child and every descendant, and no descendant can lift it.
The soft sandbox also hands the kernel its write roots: whatever the audit hooks cannot see
(native code, non-Python children), nothing is created, changed or removed outside them.

A ``Plan`` names the access rights handled and, per path, the rights allowed beneath it (a
rule on a file may only carry file rights). Rights the running kernel's ABI lacks are left
out. ``PR_SET_NO_NEW_PRIVS`` comes with it (the kernel requires it; set-uid programs then run
without their privileges). Reads are never restricted here: the deny lists inside read roots
cannot be expressed as Landlock rules, and the gate decides reads.

What it does not do: stop the ELF loader. The kernel checks ``EXECUTE`` on a binary's
interpreter too, so ``ld-linux*.so`` must be allowed, and whoever can ``execve`` it can make it
map and run any *readable* file (``ld.so /bin/sh``) with no further check. So the exec
allowlist closes the class only together with the rules that no allowed program may be told
which program to run: trampolines' targets are decided (``env``, ``xargs``, ``find -exec``…),
git refuses repository configuration that names programs, ``tar -I``/``sort
--compress-program``… are refused, ``make`` counts as a shell, and option variables
(``TAR_OPTIONS``, ``MAKEFLAGS``…) never reach a child. An allowed interpreter (``python``,
``perl``) can always do this: list interpreters knowingly.

Stdlib only (``ctypes``): the spawner (``python -I -S``) imports this file by path. Linux with
Landlock (5.13+) only; ``available()`` says whether it can be used, and callers report the
confinement they actually got rather than pretend.
"""

from __future__ import annotations

import os
import stat
import struct
import sys

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: the spawner imports this file (typing costs ~5 ms)
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Sequence

__all__ = ["EXECUTE", "READ", "WRITE", "LandlockUnavailable", "Plan", "Ruleset", "available", "exec_dependencies",
           "plan"]

_SYS_CREATE_RULESET = 444  # the same number on every architecture (added after the syscall table merge)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
_REFER = 1 << 13  # ABI 2: rename/link across directories
_TRUNCATE = 1 << 14  # ABI 3
READ_FILE, READ_DIR = 1 << 2, 1 << 3
READ = READ_FILE | READ_DIR
# Every right that creates, changes or removes a file system object (reads and ioctls stay free).
WRITE = (WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_CHAR | _MAKE_DIR | _MAKE_REG | _MAKE_SOCK
         | _MAKE_FIFO | _MAKE_BLOCK | _MAKE_SYM | _REFER | _TRUNCATE)
# What a write root allows: everything in WRITE but device nodes (a block device made in
# output/ would write the disk itself; the kernel checks only the node's own path).
_WRITE_ALLOWED = WRITE & ~(_MAKE_CHAR | _MAKE_BLOCK)
CONNECT_TCP = 1 << 1  # handled_access_net (ABI 4); bind stays free
_RULE_NET_PORT = 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_FILE_RIGHTS = EXECUTE | WRITE_FILE | (1 << 2) | _TRUNCATE | (1 << 15)  # what a rule on a non-directory may carry
_ABI_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1}  # ABI >= 3: up to TRUNCATE (higher bits unused here)

_libc: ctypes.CDLL | None = None  # (ctypes is imported when Landlock is first asked: ~2 ms the
# container shim, which only plans with this module and applies through ``_ctypes``, never pays)


class LandlockUnavailable(OSError):
    """The kernel (or platform) cannot restrict with Landlock."""


def _syscall() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    import ctypes

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
    import ctypes

    try:
        version = _syscall()(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                             ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


class Plan:
    """What a tree may do: ``handled`` file rights are denied except ``rules`` (path, rights);
    with ``net_handled``, TCP connects only to ``ports``; ``scoped``: no signals (and no
    abstract Unix sockets) to processes outside the tree's domain.

    Immutable and hashable: spawners are pooled per plan."""

    __slots__ = ("handled", "net_handled", "ports", "rules", "scoped")

    def __init__(self, handled: int, rules: tuple[tuple[str, int], ...], net_handled: int = 0,
                 ports: tuple[int, ...] = (), scoped: int = 0) -> None:
        self.handled = handled
        self.rules = rules
        self.net_handled = net_handled
        self.ports = ports
        self.scoped = scoped

    def _key(self) -> tuple[object, ...]:
        return (self.handled, self.rules, self.net_handled, self.ports, self.scoped)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Plan(handled={self.handled:#x}, rules={len(self.rules)}, net_handled={self.net_handled:#x}, "
                f"ports={self.ports!r}, scoped={self.scoped:#x})")

    @property
    def restricts_exec(self) -> bool:
        return bool(self.handled & EXECUTE)

    @property
    def restricts_write(self) -> bool:
        return bool(self.handled & WRITE_FILE)

    @property
    def restricts_read(self) -> bool:
        return bool(self.handled & READ_FILE)

    @property
    def restricts_connect(self) -> bool:
        return bool(self.net_handled & CONNECT_TCP)

    def with_connect_ports(self, ports: tuple[int, ...]) -> Plan:
        """The same plan, allowing TCP connects to ``ports`` (when connects are handled)."""
        return Plan(self.handled, self.rules, self.net_handled, ports if self.net_handled else (), self.scoped)

    def encode(self) -> str:
        """One argv-safe string (for the spawner's command line)."""
        head = f"{self.handled},{self.net_handled},{self.scoped},{'/'.join(str(p) for p in self.ports)}"
        fields = [head] + [f"{rights}:{path}" for path, rights in self.rules]
        return os.fsencode("\0".join(fields)).hex()

    @classmethod
    def decode(cls, text: str) -> Plan:
        head, *fields = os.fsdecode(bytes.fromhex(text)).split("\0")
        handled, net_handled, scoped, ports = head.split(",")
        rules = tuple((path, int(rights)) for rights, _, path in (f.partition(":") for f in fields))
        return cls(int(handled), rules, int(net_handled), tuple(int(p) for p in ports.split("/") if p), int(scoped))


def plan(exec_allow: Sequence[str] | None, write_roots: Sequence[str] | None, *,
         read_roots: Sequence[str] | None = None, connect_ports: Sequence[int] | None = None,
         scope: bool = False) -> Plan | None:
    """The plan for a tree that may execute only ``exec_allow``, write only beneath
    ``write_roots``, read only beneath ``read_roots`` (plus the write roots and executables),
    connect over TCP only to ``connect_ports``, and (``scope``) signal no process outside it.
    None for any of them: not restricted. None when nothing is restricted or this kernel has
    no Landlock. Rights and scopes the kernel's ABI lacks are left out. Paths that do not
    exist are left out: nothing can be executed, created or read beneath them."""
    abi = available()
    if abi == 0 or (exec_allow is None and write_roots is None and read_roots is None and connect_ports is None
                    and not scope):
        return None
    supported = _ABI_RIGHTS.get(abi, (1 << 15) - 1)
    handled = ((EXECUTE if exec_allow is not None else 0) | (WRITE if write_roots is not None else 0)
               | (READ if read_roots is not None else 0)) & supported
    reads = READ & handled
    wanted: dict[str, int] = {}
    writes = (_WRITE_ALLOWED & supported) | reads
    for paths, rights in ((exec_allow or (), EXECUTE | reads), (write_roots or (), writes), (read_roots or (), reads)):
        for path in paths:
            wanted[path] = wanted.get(path, 0) | rights
    rules: list[tuple[str, int]] = []
    for path, rights in sorted(wanted.items()):
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            continue
        rights &= handled if is_dir else handled & _FILE_RIGHTS
        if rights:
            rules.append((path, rights))
    net_handled = CONNECT_TCP if connect_ports is not None and abi >= 4 else 0
    ports = tuple(sorted(set(connect_ports or ()))) if net_handled else ()
    scoped = (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if scope and abi >= 6 else 0
    return Plan(handled, tuple(rules), net_handled, ports, scoped)


class Ruleset:
    """A built Landlock ruleset for one ``Plan``.

    Build it in the parent (it opens each path), then call ``restrict_self`` in the process
    that must be confined (a spawner, or a child between fork and exec: no allocation there).
    """

    def __init__(self, wanted: Plan) -> None:
        if not available():
            raise LandlockUnavailable(38, "Landlock is not available on this kernel")
        import ctypes

        call = _syscall()
        if wanted.scoped:  # struct landlock_ruleset_attr grew with the ABI: send the smallest that fits
            attr = struct.pack("=QQQ", wanted.handled, wanted.net_handled, wanted.scoped)
        elif wanted.net_handled:
            attr = struct.pack("=QQ", wanted.handled, wanted.net_handled)
        else:
            attr = struct.pack("=Q", wanted.handled)
        buf = ctypes.create_string_buffer(attr, len(attr))
        fd = call(ctypes.c_long(_SYS_CREATE_RULESET), buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockUnavailable(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self.fd = int(fd)
        try:
            for path, rights in wanted.rules:
                try:
                    target = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # gone since the plan was made: nothing to allow there
                try:
                    rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, target), 12)
                    if call(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(self.fd), ctypes.c_int(_RULE_PATH_BENEATH),
                            rule, ctypes.c_uint32(0)) < 0:
                        err = ctypes.get_errno()
                        raise LandlockUnavailable(err, f"landlock_add_rule {path}: {os.strerror(err)}")
                finally:
                    os.close(target)
            for port in wanted.ports:
                rule = ctypes.create_string_buffer(struct.pack("=QQ", CONNECT_TCP, port), 16)
                if call(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(self.fd), ctypes.c_int(_RULE_NET_PORT),
                        rule, ctypes.c_uint32(0)) < 0:
                    err = ctypes.get_errno()
                    raise LandlockUnavailable(err, f"landlock_add_rule port {port}: {os.strerror(err)}")
        except BaseException:
            os.close(self.fd)
            raise
        self._call = call
        self._ctypes = ctypes  # (restrict_self may run between fork and exec: no import there)
        self._prctl = _libc.prctl if _libc is not None else None

    def restrict_self(self) -> int:
        """Confine the calling process (and all it will start); 0 on success, else an errno.

        Allocation-free once built, so it may run in a child between fork and exec.
        """
        ctypes = self._ctypes
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
