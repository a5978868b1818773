"""The staged run's outer step: an overlay of the workspace, then bubblewrap inside it.

``capgate run --staged`` on the namespace backend starts this program in place of bubblewrap.
It makes a user and mount namespace of its own, mounts an overlay on the workspace path
(lower: the real workspace, read-only to the overlay; upper and work: the run's staging
directory under the user's state directory), and starts bubblewrap there: bubblewrap binds
the workspace path from this namespace, so the child tree sees the overlay, and every change
it makes lands in the upper directory. The real workspace is never written.

Why a step of our own before bubblewrap: the overlay must be mounted by a process that holds
``CAP_SYS_ADMIN`` in the user namespace owning the mount, and bubblewrap 0.8 (Debian's) has
no overlay option; inside the view every capability is dropped. The mount is private to this
namespace: nothing on the host sees it, and it goes away with the run.

Ownership (measured, kernel 6.18): overlayfs copies a file up with the mounter's credentials
and gives the copy the original owner, which must be mapped in the mounter's namespace, else
``EOVERFLOW``. Started by root, the whole id range is mapped (root may); started by anyone
else, only their uid and gid are, and the backend binds files of other owners read-only in
the view (``namespace_view.scan(owner=...)``) so that they fail with ``EROFS``, not a
surprising ``EOVERFLOW``.

While the tree runs this process stays as its parent and watches the staged bytes: past
``QUOTA`` bytes (``limits.outputQuotaMb``) it kills the tree (bubblewrap dies with its parent)
and leaves a ``quota-exceeded`` file beside ``UPPER`` for the launcher. The check is a walk of
the upper directory, repeated (the interval grows with the walk's cost): a writer can pass
the quota by what it writes between two walks before it is stopped.

It forks first: the child makes the namespaces and mounts, then becomes bubblewrap; this
process maps the child's ids from outside (see ``map_ids``) and then watches.

Run as ``python -I -S stage_mount.py LOWER UPPER WORK QUOTA -- COMMAND...``. Standard library
only; exits 125 with a message when the overlay cannot be made, else with the tree's status.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import stat
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
QUOTA_MARK = "quota-exceeded"


def _die(message: str) -> None:
    os.write(2, f"capgate: staged run: {message}\n".encode())
    os._exit(125)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_namespace(libc: ctypes.CDLL) -> None:
    """A new user and mount namespace for this process (its ids are mapped by the parent:
    ``map_ids``)."""
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot make a user and mount namespace: {os.strerror(err)}")


def map_ids(pid: int) -> None:
    """Map ``pid``'s new user namespace, from outside it (only a process with ``CAP_SETUID``
    in the parent namespace may map more than its own id, and a process inside has none
    there): root maps the whole range, anyone else their own uid and gid."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        _write(f"/proc/{pid}/uid_map", "0 0 4294967295")
        _write(f"/proc/{pid}/gid_map", "0 0 4294967295")
    else:
        _write(f"/proc/{pid}/setgroups", "deny")
        _write(f"/proc/{pid}/uid_map", f"{uid} {uid} 1")
        _write(f"/proc/{pid}/gid_map", f"{gid} {gid} 1")


def private_mounts(libc: ctypes.CDLL) -> None:
    """Nothing mounted in this namespace propagates to the host."""
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot make the mounts private: {os.strerror(err)}")


def mount_overlay(libc: ctypes.CDLL, lower: str, upper: str, work: str) -> None:
    """Mount the overlay on ``lower`` itself. The three directories are named to the kernel
    as ``/proc/self/fd/N`` of descriptors opened here without following a symlink: no path
    with a comma or colon can break the option string, and none can be swapped meanwhile.
    Options: ``userxattr`` (the overlay's marks as ``user.overlay.*``, the only kind a user
    namespace may set; the child cannot set them through the overlay), no directory
    redirects (a rename of a workspace directory is copied instead, so the upper directory
    says plainly what changed) and no metadata-only copy-up (every changed file's bytes are
    in the upper directory: ``changes`` reads them)."""
    fds = []
    try:
        for path in (lower, upper, work):
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        options = (f"lowerdir=/proc/self/fd/{fds[0]},upperdir=/proc/self/fd/{fds[1]},"
                   f"workdir=/proc/self/fd/{fds[2]},userxattr,redirect_dir=nofollow,metacopy=off,index=off").encode()
        if libc.mount(b"overlay", os.fsencode(lower), b"overlay", 0, options) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot mount the overlay on {lower}: {os.strerror(err)}")
    finally:
        for fd in fds:
            os.close(fd)


def staged_bytes(upper: str) -> int:
    """What the upper directory holds: regular files by size (what ``apply`` would write),
    anything else by its on-disk blocks. Never follows a symlink."""
    total = 0
    stack = [upper]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += max(st.st_size, st.st_blocks * 512)
            else:
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total


def mark_quota_exceeded(upper: str, used: int, quota: int) -> None:
    """Leave the ``quota-exceeded`` mark beside ``upper`` (the launcher's report reads it)
    and say so; the caller stops the tree."""
    try:
        fd = os.open(os.path.join(os.path.dirname(upper), QUOTA_MARK),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.write(fd, str(used).encode())
        os.close(fd)
    except OSError:
        pass
    os.write(2, f"capgate: staged run: {used} staged bytes passed limits.outputQuotaMb "
                f"({quota // (1024 * 1024)} MB); the child's tree is stopped\n".encode())


def watch(pid: int, upper: str, quota: int) -> int:
    """Wait for ``pid``, walking ``upper`` in between; return its wait status."""
    pidfd = os.pidfd_open(pid)
    interval = 0.05
    while True:
        ready, _, _ = select.select([pidfd], [], [], interval)
        if ready:
            break
        started = time.monotonic()
        used = staged_bytes(upper)
        cost = time.monotonic() - started
        if used > quota:
            mark_quota_exceeded(upper, used, quota)
            os.kill(pid, signal.SIGKILL)
            break
        # Walk at most ~5% of the time; at least every second.
        interval = min(1.0, max(0.05, cost * 20))
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return status


def _child(libc: ctypes.CDLL, lower: str, upper: str, work: str, command: list[str], to_parent: int,
           from_parent: int) -> None:
    """In the forked child: the namespace, wait for the ids, the overlay, then bubblewrap."""
    try:
        enter_namespace(libc)
        os.write(to_parent, b"u")
        if os.read(from_parent, 1) != b"m":
            _die("the parent could not map the namespace's ids")
        private_mounts(libc)
        mount_overlay(libc, lower, upper, work)
    except OSError as exc:
        _die(str(exc))
    os.close(to_parent)
    os.close(from_parent)
    try:
        os.execv(command[0], command)  # noqa: S606 (bubblewrap, built by the backend)
    except OSError as exc:
        _die(f"cannot run {command[0]}: {exc.strerror or exc}")


def main(argv: list[str]) -> None:
    if "--" not in argv or argv.index("--") != 5 or len(argv) < 7:
        _die("usage: stage_mount.py LOWER UPPER WORK QUOTA -- COMMAND...")
    lower, upper, work, quota_text = argv[1:5]
    command = argv[6:]
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        quota = int(quota_text)
    except ValueError:
        _die(f"bad quota {quota_text!r}")
    up_r, up_w = os.pipe2(os.O_CLOEXEC)
    down_r, down_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(up_r)
        os.close(down_w)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _child(libc, lower, upper, work, command, up_w, down_r)
        os._exit(125)
    os.close(up_w)
    os.close(down_r)
    if os.read(up_r, 1) == b"u":
        try:
            map_ids(pid)
            os.write(down_w, b"m")
        except OSError as exc:
            os.write(2, f"capgate: staged run: cannot map the ids of the namespace: {exc}\n".encode())
    os.close(up_r)
    os.close(down_w)
    status = watch(pid, upper, quota)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main(sys.argv)
