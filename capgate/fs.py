"""The gated filesystem: ``from capgate import fs``.

What it enforces: every call asks the active gate (``capgate.current_gate()``) about the
*canonical* target and then acts on exactly that object.

* Relative paths are relative to the workspace root, never the process cwd; ``~`` is
  ``$HOME``; absolute paths are judged as given, after canonicalization.
* Check and use are one object. The decision is made on a symlink-free absolute path, and
  that path is then opened with ``openat2(RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`` —
  ``RESOLVE_BENEATH`` the workspace descriptor for workspace paths — or, without openat2, a
  component-wise ``O_NOFOLLOW`` walk. A symlink swapped in after the check makes the open
  fail (``ELOOP``) instead of leading elsewhere. The opened descriptor is verified (regular
  file, not hard-linked to a name we cannot see) before a byte is read.
* Fast path: a path without ``..`` is decided as written and opened refusing symlinks; only
  when that open meets a symlink is the path resolved (``realpath``) and decided again.
* Writes never clobber half-way and never go through a link: data goes to a temp file in the
  target's directory, is fsynced and renamed over the name (the rename replaces a symlink or a
  hard link, it never writes into what they point at). ``limits.maxFileSizeMb`` and
  ``limits.outputQuotaMb`` hold for every write.

What it does not do: protect against another process of the same user racing directory
renames outside the gate (a non-goal: the threat is hostile *inputs*, not a hostile local
user). Linux only; elsewhere every call raises ``UnsupportedPlatform``.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import stat as stat_mod
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from capgate.decision import Decision
from capgate.errors import PermissionDenied, UnsupportedPlatform
from capgate.gate import Gate, current_gate, hard_link_denial
from capgate.ops import FS_DELETE, FS_READ, FS_WRITE
from capgate.paths import coerce_path, expand_home, is_within

__all__ = [
    "chmod",
    "exists",
    "listdir",
    "mkdir",
    "open",
    "read_bytes",
    "read_text",
    "remove",
    "rename",
    "rmtree",
    "stat",
    "utime",
    "write_bytes",
    "write_text",
]

_builtin_open = open
_LINUX = sys.platform.startswith("linux")
_MAX_TREE_ENTRIES = 100_000
# Changes to the namespace (mkdir, remove, rename, rmtree, and the final rename of a write) are
# decided and done one at a time in this process: a directory renamed by one thread between
# another thread's decision and its mkdir would otherwise carry the new entry under a name that
# was never checked (``output/d/hooks`` + ``output/d`` -> ``output/.git``). Other processes
# racing the filesystem are out of scope (the threat is hostile inputs, not a hostile local user).
_namespace_lock = threading.RLock()

if _LINUX:
    from capgate._sys import openat2 as _openat2
    from capgate._sys.nofollow_walk import open_nofollow

    _O_PATH = os.O_PATH
    _RESOLVE_EXACT = _openat2.RESOLVE_NO_SYMLINKS | _openat2.RESOLVE_NO_MAGICLINKS
    MECHANISM = "openat2" if _openat2.AVAILABLE else "nofollow-walk"
else:  # pragma: no cover - exercised only off Linux
    _O_PATH = 0
    MECHANISM = "unsupported"

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
_READ_CHUNK = 1 << 20  # the most read_bytes asks os.read for at once
_F = TypeVar("_F", bound=Callable[..., Any])


def _serialized(function: _F) -> _F:
    """Run a namespace change under ``_namespace_lock``, decision and action together."""

    def serialized(*args: Any, **kwargs: Any) -> Any:
        with _namespace_lock:
            return function(*args, **kwargs)

    serialized.__name__ = function.__name__
    serialized.__qualname__ = function.__qualname__
    serialized.__doc__ = function.__doc__
    serialized.__wrapped__ = function  # type: ignore[attr-defined]
    return serialized  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# resolution: target -> canonical path -> exactly that object
# --------------------------------------------------------------------------------------
def _gate() -> Gate:
    if not _LINUX:  # pragma: no cover
        raise UnsupportedPlatform(f"capgate.fs needs Linux (openat2 or O_PATH and /proc); not {sys.platform}")
    return current_gate()


def _absolute(gate: Gate, target: object) -> str:
    try:
        path = expand_home(coerce_path(target), gate.policy.home)
    except (TypeError, ValueError) as exc:
        # Non-string paths, NUL bytes, empty paths: refused like any other denial, and logged.
        shown = repr(target)[:200]
        raise gate.deny("fs", shown, f"malformed path: {exc}", "fs.path") from exc
    if not path.startswith("/"):
        path = gate.policy.workspace.rstrip("/") + "/" + path
    return path


def _lexical(path: str) -> str | None:
    """A symlink-free candidate for the fast path, or None when only realpath can say
    (``..`` means "parent of what the previous component *resolves* to")."""
    if "/../" in path or path.endswith("/..") or path.startswith("//"):
        return None
    if "//" not in path and "/." not in path and not path.endswith("/"):
        return path  # already normal: normpath (pure Python on 3.11) would return it unchanged
    return os.path.normpath(path)


def _open_exact(gate: Gate, path: str, flags: int, mode: int = 0o666) -> int:
    """Open the absolute, symlink-free ``path`` refusing every symlink on the way (ELOOP)."""
    workspace = gate.policy.workspace
    if is_within(path, workspace) and path != workspace:
        dirfd, rel, resolve = gate.workspace_fd(), path[len(workspace) + 1 :], _openat2.RESOLVE_BENEATH
    else:
        dirfd, rel, resolve = -100, path, 0  # AT_FDCWD; the path is absolute
    if _openat2.AVAILABLE:
        return _openat2.openat2(dirfd, rel, flags, resolve | _RESOLVE_EXACT, mode)
    return open_nofollow(dirfd, rel, flags, mode)


def _canonical_nofollow(gate: Gate, absolute: str) -> str:
    """Canonical path of the *name* itself (its parent resolved, the last component not
    followed): what ``remove``/``rename``/``rmtree`` act on."""
    lexical = _lexical(absolute)
    if lexical is not None and lexical != "/":
        parent, name = os.path.split(lexical)
    else:
        parent, name = os.path.split(absolute.rstrip("/") or "/")
    if name in ("", ".", ".."):
        return os.path.realpath(absolute)
    return os.path.join(os.path.realpath(parent), name)


def _denied(gate: Gate, op: str, path: str, decision: Decision) -> PermissionDenied:
    return PermissionDenied(op, gate.show(path), decision.reason, decision.rule)


def _resolve_and_open(gate: Gate, op: str, target: object, flags: int) -> tuple[int, str]:
    """Decide ``op`` on the canonical target and open it with ``flags``; return (fd, path).

    The decision is logged once, after the descriptor has been verified.
    """
    fd, path, _st = _resolve_open_stat(gate, op, target, flags)
    return fd, path


def _resolve_open_stat(gate: Gate, op: str, target: object, flags: int) -> tuple[int, str, os.stat_result]:
    """``_resolve_and_open``, also returning the verified descriptor's ``fstat``."""
    absolute = _absolute(gate, target)
    lexical = _lexical(absolute)
    if lexical is not None:
        decision = gate.peek_path(op, lexical)
        if decision.allowed:
            try:
                fd = _open_exact(gate, lexical, flags)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                    if not isinstance(exc, PermissionDenied):
                        gate.record(op, gate.show(lexical), decision)
                    raise _os_error(exc, lexical)
            else:
                fd, st = _verified_stat(gate, op, fd, lexical, decision)
                return fd, lexical, st
    canonical = os.path.realpath(absolute)
    decision = gate.peek_path(op, canonical)
    if not decision.allowed:
        gate.record(op, gate.show(canonical), decision)
        raise _denied(gate, op, canonical, decision)
    try:
        fd = _open_exact(gate, canonical, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            raise gate.deny(op, gate.show(canonical), "path changed while being opened (symlink race)", "fs.race")
        if not isinstance(exc, PermissionDenied):
            gate.record(op, gate.show(canonical), decision)
        raise _os_error(exc, canonical)
    fd, st = _verified_stat(gate, op, fd, canonical, decision)
    return fd, canonical, st


def _os_error(exc: OSError, path: str) -> OSError:
    if isinstance(exc, PermissionDenied):
        # A refusal from a layer below (the soft sandbox's hooks, inside ``capgate run``):
        # already logged there, and it already names the operation, target and rule.
        return exc
    return type(exc)(exc.errno, exc.strerror, path) if exc.errno else exc


def _verified_stat(gate: Gate, op: str, fd: int, path: str, decision: Decision) -> tuple[int, os.stat_result]:
    """Check the opened descriptor itself, then log the decision; return it with its
    ``fstat`` (readers need the size and type next)."""
    try:
        st = os.fstat(fd)
        if st.st_nlink > 1 and stat_mod.S_ISREG(st.st_mode):
            # Another name of this inode may be a secret outside every allowed root (a hard
            # link planted in the workspace); we cannot see that name, so we refuse to read it
            # or change its metadata (chmod/utime act on the inode, i.e. on every name).
            denial = hard_link_denial(path, st.st_nlink)
            raise gate.deny(op, gate.show(path), denial.reason, denial.rule)
        if op == FS_READ and st.st_nlink == 0 and not stat_mod.S_ISDIR(st.st_mode):
            raise gate.deny(op, gate.show(path), "file was deleted while being opened", "fs.race")
    except BaseException:
        os.close(fd)
        raise
    if decision.allowed and not gate.audit.logs_allowed:
        gate.audit.count_allowed()  # nothing to write: skip building the line's fields
    else:
        gate.record(op, gate.show(path), decision, mechanism=MECHANISM)
    return fd, st


def _open_regular_for_read(target: object) -> tuple[int, os.stat_result]:
    """Open a regular file for reading. ``O_NONBLOCK`` (so a FIFO cannot hang the open) has
    no effect on regular files, the only kind returned."""
    gate = _gate()
    fd, path, st = _resolve_open_stat(gate, FS_READ, target, _READ_FLAGS)
    if not stat_mod.S_ISREG(st.st_mode):
        os.close(fd)
        if stat_mod.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        raise gate.deny(FS_READ, gate.show(path), "not a regular file (device, FIFO or socket)", "fs.fileType")
    return fd, st


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a whole file the policy lets you read."""
    fd, st = _open_regular_for_read(path)
    try:
        # The expected size (+1) in one read, without a 64 KiB buffer for a small file, but
        # never more than _READ_CHUNK at once: st_size is what the file claims (a sparse file
        # can claim terabytes), and os.read allocates the whole request up front. Then read on
        # until b"" as FileIO.readall does (the file may have grown meanwhile).
        size = st.st_size + 1
        first = os.read(fd, size if size <= _READ_CHUNK else _READ_CHUNK)
        if not first:
            return first
        chunks = [first]
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    return read_bytes(path).decode(encoding, errors)


def listdir(path: str | os.PathLike[str] = ".") -> list[str]:
    """Names in a directory the policy lets you read."""
    gate = _gate()
    fd, _ = _resolve_and_open(gate, FS_READ, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def stat(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat`` of a path the policy lets you read (following symlinks, checked)."""
    gate = _gate()
    fd, _ = _resolve_and_open(gate, FS_READ, path, _O_PATH)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether a readable path exists; a denied path raises ``PermissionDenied`` rather than
    answering, so existence of secrets is not an oracle."""
    try:
        stat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    return True


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
class _Target:
    """A checked write target: its directory open as a descriptor, and the final name."""

    def __init__(self, gate: Gate, op: str, target: object, *, follow: bool = True) -> None:
        self.gate = gate
        absolute = _absolute(gate, target)
        path = os.path.realpath(absolute) if follow else _canonical_nofollow(gate, absolute)
        parent, name = os.path.split(path)
        if name in ("", ".", ".."):
            raise gate.deny(op, gate.show(path), "not a file name", "fs.path")
        decision = gate.peek_path(op, path)
        gate.record(op, gate.show(path), decision)
        if not decision.allowed:
            raise _denied(gate, op, path, decision)
        self.path, self.parent, self.name, self.op = path, parent, name, op
        try:
            try:
                self.dirfd = _open_exact(gate, parent, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                if not _make_missing_write_root(gate, parent):
                    raise
                self.dirfd = _open_exact(gate, parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EXDEV):
                raise gate.deny(op, gate.show(path), "path changed while being opened (symlink race)", "fs.race")
            raise _os_error(exc, parent)

    def lstat(self) -> os.stat_result | None:
        try:
            return os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        os.close(self.dirfd)

    def __enter__(self) -> _Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_missing_write_root(gate: Gate, directory: str) -> bool:
    """Create ``directory`` when it is a write root inside the workspace that does not exist
    yet (``output/``, ``.cache/agent`` in a new workspace), as ``capgate run`` does before the
    child starts; True if it now exists. Only a policy's own write roots, never the workspace
    itself or a root outside it; the file is then opened beneath it as any other (a symlink
    planted there meanwhile is refused by that open)."""
    from capgate.paths import is_within

    policy = gate.policy
    if directory == policy.workspace or directory not in policy.filesystem.write:
        return False
    if not is_within(directory, policy.workspace):
        return False
    # Component by component beneath the workspace, never following a symlink: one planted
    # on the way (``.cache`` -> elsewhere) must not make a directory outside.
    try:
        fd = os.open(policy.workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        for part in os.path.relpath(directory, policy.workspace).split(os.sep):
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _max_file_bytes(gate: Gate) -> int:
    return gate.policy.limits.max_file_size_mb * 1024 * 1024


class _CappedFileIO(io.FileIO):
    """The raw temp file under an ``AtomicFile``: refuses to grow past the per-file cap
    (checked on every write), and remembers any failure.

    Every byte the layers above (buffer, text encoder) write ends up here, whoever calls and
    whenever the buffer is flushed — so this is the one place that sees every failed write
    (the cap, the quota's ``ENOSPC`` cousin, disk full, ``EIO``). A file that failed once
    holds data nobody can vouch for: ``failed`` makes its ``AtomicFile`` discard it instead of
    renaming it over the target. ``discarding`` turns writes into no-ops so that closing the
    layers above cannot raise (or write) again while the temp file is thrown away.
    """

    def __init__(self, fd: int, mode: str, cap: int, on_exceed: Any) -> None:
        super().__init__(fd, mode, closefd=True)
        self._cap = cap
        self._on_exceed = on_exceed
        self.failed: BaseException | None = None
        self.discarding = False

    def write(self, b: Any) -> int:
        size = len(memoryview(b))
        if self.discarding:
            return size
        if self.failed is not None:
            raise _already_failed(self.failed)
        try:
            if self.tell() + size > self._cap:
                raise self._on_exceed()
            n = super().write(b)
        except BaseException as exc:
            self.failed = exc
            raise
        return n if n is not None else 0

    def truncate(self, size: int | None = None) -> int:
        if self.discarding:
            return self.tell() if size is None else size
        if self.failed is not None:
            raise _already_failed(self.failed)
        try:
            # truncate() can grow a file too (a sparse extension): same cap as write().
            if (self.tell() if size is None else size) > self._cap:
                raise self._on_exceed()
            return super().truncate(size)
        except BaseException as exc:
            self.failed = exc
            raise


def _already_failed(first: BaseException) -> OSError:
    return OSError(errno.EIO, f"an earlier write to this file failed ({first}); its new content will be discarded")


class AtomicFile:
    """What ``fs.open`` returns for writing: a temp file that replaces the target on a clean
    ``close()`` and is discarded on an exception, on ``discard()`` or if never closed."""

    def __init__(self, target: _Target, mode: str, initial: bytes, **text: Any) -> None:
        # Set first: __del__ and __getattr__ must work on a half-built object.
        self._done = True
        self._target = target
        gate = target.gate
        self._tmp = _temp_name(target.name)
        existing = target.lstat()
        perms = stat_mod.S_IMODE(existing.st_mode) if existing is not None else 0o666
        try:
            fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, perms,
                         dir_fd=target.dirfd)
        except BaseException:
            target.close()
            raise
        try:
            raw = _CappedFileIO(fd, "r+", _max_file_bytes(gate), lambda: gate.deny(
                FS_WRITE, gate.show(target.path),
                f"file larger than maxFileSizeMb={gate.policy.limits.max_file_size_mb}", "limits.maxFileSizeMb"))
        except BaseException:
            os.close(fd)
            self._unlink_tmp()
            target.close()
            raise
        try:
            if existing is not None:
                os.fchmod(fd, perms & 0o777)
            if initial:
                raw.write(initial)
                if "a" not in mode and "+" in mode:
                    raw.seek(0)
            buffered: IO[bytes] = io.BufferedRandom(raw)
            # A bad encoding or newline argument fails here, before anything is handed out.
            self._file: IO[Any] = buffered if "b" in mode else io.TextIOWrapper(buffered, **text)
        except BaseException:
            self._abort_raw(raw)
            raise
        self._raw = raw
        self._exclusive = "x" in mode
        # Bytes this write adds: all of it when replacing, only the growth when appending.
        self._charge_from = len(initial) if ("a" in mode or "r" in mode) else 0
        self._done = False
        self.name = target.path
        self.mode = mode

    def _abort_raw(self, raw: io.FileIO) -> None:
        raw.close()
        self._unlink_tmp()
        self._target.close()
        self._done = True

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self._tmp, dir_fd=self._target.dirfd)
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never recurse on our own attributes of a half-built object
            raise AttributeError(name)
        return getattr(self._file, name)

    # The calls a writer makes, defined here rather than reached through __getattr__: a bound
    # method of the inner file would let this object be collected (and discarded) while the
    # call runs — ``fs.open(p, "w").write(data)`` then failed with "I/O operation on closed file".
    def write(self, data: Any) -> int:
        return int(self._file.write(data))

    def writelines(self, lines: Any) -> None:
        self._file.writelines(lines)

    def flush(self) -> None:
        self._file.flush()

    def read(self, size: int = -1) -> Any:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def truncate(self, size: int | None = None) -> int:
        return int(self._file.truncate(size))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._file)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    @property
    def closed(self) -> bool:
        return self._done

    def discard(self) -> None:
        """Throw the new content away; the target stays as it was. Never raises for the
        buffered data: it is dropped, not flushed."""
        if self._done:
            return
        self._done = True
        self._raw.discarding = True
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            self._raw.close()
            self._unlink_tmp()
            self._target.close()

    def close(self) -> None:
        """Flush, fsync and rename over the target (checked against size cap and quota).

        If any write failed — here while flushing, or earlier (the caller saw the error and
        closes in a ``finally``) — the temp file is discarded and the target keeps its old
        bytes: a refused write never commits a partial or empty file."""
        if self._done:
            return
        if self._raw.failed is not None:
            self.discard()
            return
        target, gate = self._target, self._target.gate
        try:
            self._file.flush()
            fd = self._file.fileno()
            total = os.fstat(fd).st_size
            if total > _max_file_bytes(gate):
                raise gate.deny(FS_WRITE, gate.show(target.path),
                                f"file larger than maxFileSizeMb={gate.policy.limits.max_file_size_mb}",
                                "limits.maxFileSizeMb")
            os.fsync(fd)
            with _namespace_lock:
                _recheck_directory(target)
                size = max(0, total - self._charge_from)
                gate.charge_output(size, gate.show(target.path))
                try:
                    self._file.close()
                    if self._exclusive:
                        os.link(self._tmp, target.name, src_dir_fd=target.dirfd, dst_dir_fd=target.dirfd,
                                follow_symlinks=False)
                        os.unlink(self._tmp, dir_fd=target.dirfd)
                    else:
                        os.replace(self._tmp, target.name, src_dir_fd=target.dirfd, dst_dir_fd=target.dirfd)
                    os.fsync(target.dirfd)
                except BaseException:
                    gate.refund_output(size)
                    raise
        except BaseException:
            self._done = False
            self.discard()
            raise
        self._done = True
        target.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            # As Python warns of an unclosed file: here the content is also thrown away, since
            # only close() commits (``fs.open(p, "w").write(data)`` writes nothing).
            warnings.warn(
                f"capgate.fs: {self.name} was opened for writing and never closed; its new content "
                "was discarded (use 'with fs.open(...)', fs.write_text or close())",
                ResourceWarning,
                stacklevel=2,
            )
            self.discard()


def _temp_name(name: str) -> str:
    """A sibling temp name that fits NAME_MAX (255 bytes) whatever the target's name is. The gate
    refuses to write, rename or remove such names (``paths._TEMP_NAME``, rule ``fs.tempFile``)."""
    stem = os.fsencode(name)[:200].decode(sys.getfilesystemencoding(), "ignore")
    return f".{stem}.capgate-{secrets.token_hex(6)}.tmp"


def _recheck_directory(target: _Target) -> None:
    """The directory descriptor was checked under its name at open time; if the directory
    has been renamed since (``output/g`` -> ``.git``), the final rename would land under a name
    that was never checked. Decide again on where the directory is *now*."""
    gate = target.gate
    try:
        now = os.readlink(f"/proc/self/fd/{target.dirfd}")
    except OSError as exc:
        raise gate.deny(FS_WRITE, gate.show(target.path), f"cannot confirm the directory: {exc}", "fs.race")
    if now == target.parent:
        return
    if not now.startswith("/") or now.endswith(" (deleted)"):
        raise gate.deny(FS_WRITE, gate.show(target.path), "directory was removed while the file was open", "fs.race")
    moved = os.path.join(now, target.name)
    decision = gate.peek_path(FS_WRITE, moved)
    gate.record(FS_WRITE, gate.show(moved), decision)
    if not decision.allowed:
        raise _denied(gate, FS_WRITE, moved, decision)


def _read_existing(target: _Target) -> bytes:
    st = target.lstat()
    if st is None:
        return b""
    if not stat_mod.S_ISREG(st.st_mode):
        raise target.gate.deny(FS_WRITE, target.gate.show(target.path), "not a regular file", "fs.fileType")
    gate = target.gate
    read_decision = gate.peek_path(FS_READ, target.path)
    if not read_decision.allowed:
        raise _denied(gate, FS_READ, target.path, read_decision)
    fd = os.open(target.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=target.dirfd)
    with _builtin_open(fd, "rb") as fh:
        if os.fstat(fd).st_nlink > 1:
            # Appending copies the old bytes into the new file: a hard link to a secret
            # would come back readable under a name we allow. Same rule as reading.
            raise gate.deny(FS_READ, gate.show(target.path), "hard-linked file: its other names cannot be checked",
                            "filesystem.hardLinks")
        return fh.read()


def _open_for_write(path: object, mode: str, text: dict[str, Any]) -> AtomicFile:
    gate = _gate()
    target = _Target(gate, FS_WRITE, path)
    try:
        existing = target.lstat()
        if existing is not None and stat_mod.S_ISLNK(existing.st_mode):
            raise gate.deny(FS_WRITE, gate.show(target.path), "path changed while being opened (symlink race)",
                            "fs.race")
        if existing is not None and stat_mod.S_ISDIR(existing.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", target.path)
        if "x" in mode and existing is not None:
            raise FileExistsError(errno.EEXIST, "File exists", target.path)
        initial = _read_existing(target) if ("a" in mode or "r" in mode) else b""
        if "r" in mode and existing is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", target.path)
    except BaseException:
        target.close()
        raise
    return AtomicFile(target, mode, initial, **text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> int:
    """Atomically replace ``path`` with ``data``; returns the number of bytes written."""
    view = memoryview(data)
    with _open_for_write(path, "wb", {}) as fh:
        fh.write(view)
    return len(view)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8", errors: str = "strict") -> int:
    data = text.encode(encoding, errors)
    write_bytes(path, data)
    return len(text)


def open(
    path: str | os.PathLike[str],
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> IO[Any]:
    """``open()`` with the mode checked: read modes need read permission; any mode that can
    write (``w``, ``a``, ``x``, ``+``) needs write permission and returns an atomic file."""
    if not isinstance(mode, str) or set(mode) - set("rwxab+t") or len(set(mode)) != len(mode):
        raise ValueError(f"invalid mode: {mode!r}")
    kinds = sum(c in mode for c in "rwxa")
    if kinds != 1:
        raise ValueError(f"mode must have exactly one of r, w, x, a: {mode!r}")
    text = {} if "b" in mode else {"encoding": encoding or "utf-8", "errors": errors, "newline": newline}
    if mode.replace("b", "").replace("t", "") == "r":
        fd, _ = _open_regular_for_read(path)
        return _builtin_open(fd, mode, buffering, **text)  # type: ignore[call-overload,no-any-return]
    return _open_for_write(path, mode, text)  # type: ignore[return-value]


@_serialized
def mkdir(path: str | os.PathLike[str], *, parents: bool = False, exist_ok: bool = False, mode: int = 0o777) -> None:
    """Create a directory; with ``parents`` each missing ancestor is checked on its own."""
    gate = _gate()
    canonical = os.path.realpath(_absolute(gate, path))
    missing = [canonical]
    if parents:
        parent = os.path.dirname(canonical)
        while parent != "/" and not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
    for directory in reversed(missing):
        with _Target(gate, FS_WRITE, directory) as target:
            try:
                os.mkdir(target.name, mode & 0o777, dir_fd=target.dirfd)
            except FileExistsError:
                st = target.lstat()
                if not (exist_ok or directory != canonical) or st is None or not stat_mod.S_ISDIR(st.st_mode):
                    raise FileExistsError(errno.EEXIST, "File exists", directory)


@_serialized
def remove(path: str | os.PathLike[str]) -> None:
    """Remove a file or symlink (the link itself, never what it points at)."""
    gate = _gate()
    with _Target(gate, FS_DELETE, path, follow=False) as target:
        st = target.lstat()
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory (use fs.rmtree)", target.path)
        os.unlink(target.name, dir_fd=target.dirfd)


def _walk_names(dirfd: int, prefix: str, budget: list[int]) -> Iterator[str]:
    """Relative names of everything under an open directory, without following symlinks."""
    with os.scandir(dirfd) as entries:
        items = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in items:
        budget[0] -= 1
        if budget[0] < 0:
            raise OSError(errno.E2BIG, "directory tree too large to check")
        rel = f"{prefix}/{name}" if prefix else name
        yield rel
        if is_dir:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                yield from _walk_names(sub, rel, budget)
            finally:
                os.close(sub)


def _check_subtree(gate: Gate, target: _Target, checks: list[tuple[str, str]]) -> None:
    """Refuse up front when any entry of a directory being moved or deleted may not be:
    a directory rename or delete acts on everything beneath it (``output/evil`` renamed to
    ``.git`` would plant ``.git/hooks``). ``checks``: (op, new base path) pairs."""
    st = target.lstat()
    if st is None or not stat_mod.S_ISDIR(st.st_mode):
        return
    fd = os.open(target.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=target.dirfd)
    try:
        for rel in _walk_names(fd, "", [_MAX_TREE_ENTRIES]):
            for op, base in checks:
                candidate = f"{base}/{rel}"
                decision = gate.peek_path(op, candidate)
                if not decision.allowed:
                    gate.record(op, gate.show(candidate), decision)
                    raise _denied(gate, op, candidate, decision)
    finally:
        os.close(fd)


@_serialized
def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``: deleting at one end and writing at the other are both
    checked, for the directory and everything in it."""
    gate = _gate()
    with _Target(gate, FS_DELETE, src, follow=False) as source, _Target(gate, FS_WRITE, dst, follow=False) as dest:
        if source.lstat() is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", source.path)
        _check_subtree(gate, source, [(FS_DELETE, source.path), (FS_WRITE, dest.path)])
        os.rename(source.name, dest.name, src_dir_fd=source.dirfd, dst_dir_fd=dest.dirfd)


@_serialized
def rmtree(path: str | os.PathLike[str]) -> None:
    """Delete a directory tree. Needs ``filesystem.recursiveDelete`` to cover it, and every
    entry must be deletable: otherwise nothing is deleted."""
    gate = _gate()
    with _Target(gate, FS_DELETE, path, follow=False) as target:
        if gate.recursive_delete_root(target.path) is None:
            raise gate.deny(FS_DELETE, gate.show(target.path), "recursive delete is not allowed here",
                            "filesystem.recursiveDelete")
        st = target.lstat()
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", target.path)
        if not stat_mod.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", target.path)
        _check_subtree(gate, target, [(FS_DELETE, target.path)])
        fd = os.open(target.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=target.dirfd)
        try:
            _remove_contents(fd)
        finally:
            os.close(fd)
        os.rmdir(target.name, dir_fd=target.dirfd)


def _remove_contents(dirfd: int) -> None:
    with os.scandir(dirfd) as entries:
        items = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in items:
        if is_dir:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                _remove_contents(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dirfd)
        else:
            os.unlink(name, dir_fd=dirfd)


# --------------------------------------------------------------------------------------
# metadata changes: act through the checked descriptor
# --------------------------------------------------------------------------------------
def _with_write_fd(path: object, action: Any) -> None:
    gate = _gate()
    fd, _ = _resolve_and_open(gate, FS_WRITE, path, _O_PATH)
    try:
        # /proc/self/fd/N reaches exactly the inode we opened and checked.
        action(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def chmod(path: str | os.PathLike[str], mode: int) -> None:
    """Change permission bits; set-user-ID, set-group-ID and sticky bits are refused."""
    if not isinstance(mode, int) or isinstance(mode, bool):
        raise TypeError("mode must be an int")
    if mode & ~0o777:
        gate = _gate()
        raise gate.deny(FS_WRITE, gate.show(_absolute(gate, path)), "setuid/setgid/sticky bits are not allowed",
                        "fs.chmod")
    _with_write_fd(path, lambda p: os.chmod(p, mode))


def utime(
    path: str | os.PathLike[str],
    times: tuple[float, float] | None = None,
    *,
    ns: tuple[int, int] | None = None,
) -> None:
    if ns is not None:
        _with_write_fd(path, lambda p: os.utime(p, ns=ns))
    else:
        _with_write_fd(path, lambda p: os.utime(p, times))
