"""``capgate apply``: the one code that writes a staged run's changes into the real workspace.

Built like the gate, because it is the dangerous step: the changes were made by the agent.

1. Check everything first, apply nothing on any refusal (exit 1, naming each path): every
   change is decided again by the gate of the policy the run was given (``fs.write`` for what
   is added or modified, ``fs.delete`` for what is deleted: the deny lists, the mandatory
   write-deny list, ``denyWrite``, the write roots); a ``.git`` that is not a directory; a
   special file (FIFO, socket, device); a staged symlink whose target leaves the workspace or
   passes through a symlink; set-user-ID, set-group-ID or sticky bits; a file past
   ``limits.maxFileSizeMb`` or, all together, past ``limits.outputQuotaMb``; a *conflict* —
   the real name changed (content, mode, type: its ``ctime``) since the run began, or the run
   modified a file that has been deleted since — unless ``--force``; a real directory on the
   way that cannot be reached without following a symlink, also with ``--force``.
2. Write: every new content goes to a temp file beside its target (opened beneath the
   workspace descriptor refusing every symlink: ``fs._open_exact``, the gate's own opening),
   then one ``syncfs`` makes all of them durable, and only then are they renamed over their
   names, one ``rename`` each (a symlink planted at a name is replaced, never followed).
   Deletions remove a file or symlink by name; a directory only when it is empty after the
   other deletions. Directories are created before the files in them.

A failure half-way (disk full, a directory renamed meanwhile) stops there: every file is
either old or new, never partial; temp files are removed; the result says which changes were
applied. Hard links in the change set are written as separate files (a hard link in the
workspace is unreadable to the gate anyway: its other names cannot be checked).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from capgate.backends.namespace_view import GIT_REDIRECT_RULE
from capgate.errors import StagingError
from capgate.gate import Gate
from capgate.ops import FS_DELETE, FS_WRITE
from capgate.paths import is_within
from capgate.staging.changes import Change, compute_changes, copied_up, with_renames
from capgate.staging.store import StagedRun

__all__ = ["ApplyResult", "Refusal", "apply_changes", "check_changes"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str
    rule: str


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    failed: tuple[str, str] | None = None  # (path, what went wrong) of a failure half-way
    pending: int = 0  # changes left after this apply

    @property
    def ok(self) -> bool:
        return not self.refused and self.failed is None


def _link_refusal(change: Change, workspace: str, real_fd: int, staged_links: set[str]) -> str | None:
    """Why a staged symlink may not land, or None. Its target is walked as the kernel walks it,
    one component at a time (never ``normpath`` first: that would take ``s/..`` as a step down
    and back, where the kernel follows ``s``), and every directory on the way must be a real
    directory in the workspace — not a symlink there, nor one the run staged (``staged_links``:
    they do not exist yet when this runs, and ``s -> ..`` then ``s/../x`` leads out). Where the
    walk ends must be beneath the workspace."""
    target = change.target or ""
    if not target:
        return "an empty symlink"
    ws_parts = [p for p in workspace.split("/") if p]
    if target.startswith("/"):
        stack: list[str] = []
    else:
        stack = [*ws_parts, *[p for p in change.path.split("/")[:-1] if p]]
    parts = [p for p in target.split("/") if p and p != "."]
    for i, part in enumerate(parts):
        if part == "..":
            if stack:
                stack.pop()
            continue
        stack.append(part)
        if i == len(parts) - 1 or len(stack) <= len(ws_parts) or stack[: len(ws_parts)] != ws_parts:
            continue  # (the last component is the link's own target; outside: judged at the end)
        rel = "/".join(stack[len(ws_parts):])
        if rel in staged_links:
            return f"its target passes through a symlink the run made ({target})"
        try:
            st = os.stat(rel, dir_fd=real_fd, follow_symlinks=False)  # (every step before: a real directory)
        except FileNotFoundError:
            continue  # (not there yet: a directory the run makes, or the kernel stops here)
        except NotADirectoryError:
            return None  # (beneath a file: the kernel cannot go on)
        if stat.S_ISLNK(st.st_mode):
            return f"its target passes through a symlink in the workspace ({target})"
        if not stat.S_ISDIR(st.st_mode):
            return None
    resolved = "/" + "/".join(stack)
    if not is_within(resolved, workspace):
        return f"points outside the workspace ({target})"
    return None


def check_changes(changes: Sequence[Change], run: StagedRun, gate: Gate, *, force: bool,
                  log: bool = True, workspace_checks: bool = True) -> list[Refusal]:
    """Every reason not to apply ``changes`` (empty: go ahead). Logs each decision (unless
    ``log`` is False: the launcher's preview records its refusals itself).
    ``workspace_checks=False`` leaves out what depends on the real workspace at apply time
    (conflicts, symlinks on the way): the launcher's preview of what the policy refuses."""
    workspace = gate.policy.workspace
    limits = gate.policy.limits
    refusals: list[Refusal] = []
    staged_paths = {c.path for c in changes}
    staged_links = {c.path for c in changes if c.kind == "symlink" and c.status != "D"}
    try:
        real_root = os.open(workspace, _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as exc:
        raise StagingError(f"cannot open the workspace {workspace}: {exc.strerror or exc}") from exc
    try:
        for change in changes:
            path = os.path.join(workspace, change.path)
            op = FS_DELETE if change.status == "D" else FS_WRITE
            decision = gate.peek_path(op, path)
            if log and not decision.allowed:
                gate.record(op, gate.show(path), decision, source="apply")
            elif log:
                gate.audit.count_allowed()  # (the applied paths are logged as one event at the end)
            if not decision.allowed:
                refusals.append(Refusal(change.path, decision.reason, decision.rule))
                continue
            if change.status == "D":
                continue
            if os.path.basename(change.path) == ".git" and change.kind != "dir":
                refusals.append(Refusal(change.path, "a .git that is not a directory points git at hooks and a "
                                        "config the mandatory list does not see", GIT_REDIRECT_RULE))
            elif change.kind == "special":
                refusals.append(Refusal(change.path, "a special file (FIFO, socket or device)", "fs.fileType"))
            elif change.kind == "symlink":
                why = _link_refusal(change, workspace, real_root, staged_links)
                if why is not None:
                    refusals.append(Refusal(change.path, f"staged symlink {why}", "staging.symlink"))
            elif change.mode & ~0o777:
                refusals.append(Refusal(change.path, "setuid/setgid/sticky bits are not allowed", "fs.chmod"))
            elif change.kind == "file" and change.size > limits.max_file_size_mb * 1024 * 1024:
                refusals.append(Refusal(change.path, f"file larger than maxFileSizeMb={limits.max_file_size_mb}",
                                        "limits.maxFileSizeMb"))
        total = sum(c.size for c in changes if c.status != "D" and c.kind == "file")
        if total > limits.output_quota_mb * 1024 * 1024:
            refusals.append(Refusal(".", f"{total} staged bytes: more than outputQuotaMb={limits.output_quota_mb}",
                                    "limits.outputQuotaMb"))
        for change in changes if workspace_checks else ():
            refusals.extend(_reach_and_conflict(change, run, real_root, force, staged_paths))
    finally:
        os.close(real_root)
    return refusals


def _reach_and_conflict(change: Change, run: StagedRun, real_root: int, force: bool,
                        staged: set[str]) -> list[Refusal]:
    """A real directory on the way that is a symlink (always refused: the write would land
    elsewhere), and a conflict with what happened to the workspace since the run began."""
    parts = change.path.split("/")
    fd = os.dup(real_root)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return []  # created by the run's own A entries, beneath a checked parent
                sub = "/".join(parts[: i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and sub not in staged:
                    return [Refusal(change.path, f"{sub} in the workspace is no longer a directory (a symlink or "
                                    "file now): refusing to write through it", "staging.symlinkOnTheWay")]
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return []  # the run replaces it: its own D/A entries come first
                raise
            os.close(fd)
            fd = nxt
        try:
            real = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            real = None
        parent_changed = os.fstat(fd).st_ctime_ns >= run.stamp_ns
    finally:
        os.close(fd)
    if force:
        return []
    if real is not None and real.st_ctime_ns >= run.stamp_ns and not (change.kind == "dir" and change.status == "A"):
        return [Refusal(change.path, "changed in the workspace since the run began (conflict; --force applies "
                        "the staged version anyway)", "staging.conflict")]
    # A file the run copied up (it existed) that the workspace no longer has: deleted since
    # the run began, if its directory changed since (else the run itself renamed it here).
    if (real is None and parent_changed and change.status == "A" and change.kind == "file" and change.staged
            and copied_up(change.staged)):
        return [Refusal(change.path, "the run changed a file that may have been deleted from the workspace since "
                        "(conflict; --force applies the staged version anyway)", "staging.conflict")]
    return []


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
class _Dirs:
    """Directory descriptors of the real workspace, opened as the gate opens (beneath the
    workspace descriptor, refusing every symlink), one per directory, kept for the apply."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.fds: dict[str, int] = {}

    def get(self, rel_dir: str) -> int:
        fd = self.fds.get(rel_dir)
        if fd is None:
            from capgate.fs import _open_exact

            path = os.path.join(self.gate.policy.workspace, rel_dir) if rel_dir else self.gate.policy.workspace
            fd = self.fds[rel_dir] = _open_exact(self.gate, path, _DIR_FLAGS)
        return fd

    def confirm(self, rel_dir: str) -> None:
        """The directory is still where it was checked (not renamed meanwhile)."""
        fd = self.get(rel_dir)
        want = os.path.join(self.gate.policy.workspace, rel_dir) if rel_dir else self.gate.policy.workspace
        if os.readlink(f"/proc/self/fd/{fd}") != want:
            raise OSError(errno.ESTALE, f"{want} was moved or removed during the apply")

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _syncfs(fd: int) -> None:
    """Make everything written on ``fd``'s filesystem durable (one call for all the temp
    files, instead of an fsync each)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Temp:
    def __init__(self, change: Change, rel_dir: str, name: str, tmp: str) -> None:
        self.change, self.rel_dir, self.name, self.tmp = change, rel_dir, name, tmp


def _write_temp(change: Change, dirs: _Dirs) -> _Temp:
    """The staged content of one file or symlink in a temp file beside its target."""
    from capgate.fs import _temp_name

    rel_dir, name = os.path.split(change.path)
    dirfd = dirs.get(rel_dir)
    tmp = _temp_name(name)
    assert change.staged is not None
    if change.kind == "symlink":
        os.symlink(change.target or "", tmp, dir_fd=dirfd)
        return _Temp(change, rel_dir, name, tmp)
    src = os.open(change.staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        sst = os.fstat(src)
        if not stat.S_ISREG(sst.st_mode):
            raise OSError(errno.EINVAL, f"{change.path}: the staged file is no longer a regular file")
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
        try:
            remaining = sst.st_size
            if sst.st_size != change.size:
                raise OSError(errno.EIO, f"{change.path}: the staged file changed since the change list was made")
            while remaining > 0:
                copied = os.copy_file_range(src, dst, remaining)
                if copied == 0:
                    raise OSError(errno.EIO, f"{change.path}: the staged file shrank while it was copied")
                remaining -= copied
            os.fchmod(dst, change.mode & 0o777)
        except BaseException:
            os.close(dst)
            _unlink_quietly(dirfd, tmp)
            raise
        os.close(dst)
    finally:
        os.close(src)
    return _Temp(change, rel_dir, name, tmp)


def _unlink_quietly(dirfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dirfd)
    except OSError:
        pass


def apply_changes(run: StagedRun, gate: Gate, *, force: bool = False,
                  only: Sequence[str] = ()) -> ApplyResult:
    """Apply the run's pending changes (those at or beneath ``only``, when given)."""
    changes = compute_changes(run.upper, gate.policy.workspace)
    if only:
        wanted = [p.strip("/") for p in only]
        # a rename named by its new name takes its old name's deletion along (and the other way)
        for shown in with_renames(changes, gate.policy.workspace):
            if shown.source is not None:
                if shown.path in wanted and shown.source not in wanted:
                    wanted.append(shown.source)
                elif shown.source in wanted and shown.path not in wanted:
                    wanted.append(shown.path)
        changes = [c for c in changes if any(c.path == w or c.path.startswith(w + "/") for w in wanted)]
    result = ApplyResult()
    result.refused = check_changes(changes, run, gate, force=force)
    if result.refused:
        result.pending = len(changes)
        return result
    _raise_nofile()
    dirs = _Dirs(gate)
    temps: list[_Temp | None] = []
    current = ""
    try:
        try:
            deletions = [c for c in changes if c.status == "D"]
            new_dirs = [c for c in changes if c.status != "D" and c.kind == "dir"]
            contents = [c for c in changes if c.status != "D" and c.kind != "dir"]
            # 1. every new content, beside its target where that directory exists already
            # (not beneath a directory the run adds or replaces: those after step 3)
            made = {c.path for c in new_dirs if c.status == "A"}
            later = []
            for change in contents:
                current = change.path
                parent = os.path.dirname(change.path)
                if parent in made:
                    later.append(change)
                    continue
                try:
                    temps.append(_write_temp(change, dirs))
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        later.append(change)  # beneath a name the run replaces
                    else:
                        raise
            if temps:
                _syncfs(dirs.get(""))
            # 2. deletions: files and links, then directories deepest first (empty by now)
            for change in sorted(deletions, key=lambda c: (c.kind == "dir", -c.path.count("/"))):
                current = change.path
                rel_dir, name = os.path.split(change.path)
                dirs.confirm(rel_dir)
                dirfd = dirs.get(rel_dir)
                if change.kind == "dir":
                    stale = dirs.fds.pop(change.path, None)
                    if stale is not None:
                        os.close(stale)
                    os.rmdir(name, dir_fd=dirfd)
                else:
                    os.unlink(name, dir_fd=dirfd)
                result.applied.append(change.path)
            # 3. new directories, outermost first (private until their mode is set in step 5)
            for change in sorted(new_dirs, key=lambda c: c.path.count("/")):
                current = change.path
                if change.status == "A":
                    rel_dir, name = os.path.split(change.path)
                    os.mkdir(name, 0o700, dir_fd=dirs.get(rel_dir))
            if later:
                for change in later:
                    current = change.path
                    temps.append(_write_temp(change, dirs))
                _syncfs(dirs.get(""))
            # 4. the new contents take their names, one rename each
            for index, temp in enumerate(temps):
                if temp is None:
                    continue
                current = temp.change.path
                dirs.confirm(temp.rel_dir)
                dirfd = dirs.get(temp.rel_dir)
                existing = _lstat_at(dirfd, temp.name)
                if existing is not None and stat.S_ISDIR(existing.st_mode):
                    raise OSError(errno.EISDIR, f"{temp.change.path} is a directory in the workspace")
                os.replace(temp.tmp, temp.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
                temps[index] = None
                result.applied.append(temp.change.path)
            # 5. directory modes, innermost first (a read-only directory last of all)
            for change in sorted(new_dirs, key=lambda c: -c.path.count("/")):
                current = change.path
                os.fchmod(dirs.get(change.path), change.mode & 0o777)
                result.applied.append(change.path)
            _syncfs(dirs.get(""))  # the renames, durable (one call, not an fsync per directory)
        except OSError as exc:
            result.failed = (current, exc.strerror or str(exc))
            for left in temps:
                if left is None:
                    continue
                try:
                    _unlink_quietly(dirs.get(left.rel_dir), left.tmp)
                except OSError:
                    pass
    finally:
        dirs.close()
    result.pending = len(changes) - len(result.applied)
    gate.audit.event("staging.apply", run=run.run_id, applied=len(result.applied), pending=result.pending,
                     failed=result.failed[0] if result.failed else None, paths=result.applied[:1000])
    return result


def _lstat_at(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
