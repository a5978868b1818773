"""Where staged runs live: ``$XDG_STATE_HOME/capgate/staging/<RUN_ID>/`` (``~/.local/state``).

Each run's directory (mode ``0700``, owned by the user, never inside the workspace or a
write root — the launcher refuses to start otherwise) holds:

* ``run.json``: the run id, the workspace, when it started (``stamp_ns``: the time that
  ``apply`` judges conflicts against), the launcher's pid and the backend;
* ``policy.json``: the effective policy the run was given — ``apply`` re-checks every change
  against it (not against whatever a policy file says by then);
* ``upper/`` and ``work/``: the overlay's upper and work directories (``upper`` *is* the
  change set: new and modified files, whiteouts for deletions);
* ``quota-exceeded``: present when the run was stopped at ``limits.outputQuotaMb``.

A run in progress holds an ``flock`` on its directory: ``capgate changes`` shows a run whose
launcher died (``SIGKILL``) as ``interrupted``, and ``discard``/``apply`` refuse a run that
is still going. Nothing here is read from the workspace, and nothing in it is trusted more
than its owner and mode say: a directory that is not ours, or open to others, is refused.

This is also the seam for other backends: a backend that can mount an overlay (the container
backend: podman's ``-v WS:WS:O,upperdir=,workdir=``, Docker's ``local`` overlay volume; see
``container_argv``) mounts ``lower`` = ``StagedRun.workspace`` with ``StagedRun.upper`` and
``StagedRun.work`` and needs nothing else from this package; ``changes`` and ``apply`` work the
same on what it leaves.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass

from capgate.errors import StagingError

__all__ = ["StagedRun", "create_run", "find_run", "list_runs", "staging_root"]

_RUN_JSON_MAX = 64 * 1024
# Changes made this long before the run's start are still counted as "since the run began":
# file timestamps come from the kernel's coarse clock (one tick, 1-10 ms), which can lag the
# fine clock ``stamp_ns`` is read from. Erring this way only ever reports a conflict too many.
STAMP_SLACK_NS = 50_000_000


def staging_root(environ: Mapping[str, str] | None = None) -> str:
    """The parent of every run's staging directory."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")
    state = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(os.path.abspath(state), "capgate", "staging")


@dataclass(frozen=True)
class StagedRun:
    """One staged run's directory and what ``run.json`` says about it."""

    run_id: str
    path: str
    workspace: str
    stamp_ns: int
    pid: int
    backend: str
    started: str

    @property
    def upper(self) -> str:
        return os.path.join(self.path, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")

    @property
    def policy_file(self) -> str:
        return os.path.join(self.path, "policy.json")

    @property
    def quota_exceeded(self) -> bool:
        return os.path.lexists(os.path.join(self.path, "quota-exceeded"))

    def running(self) -> bool:
        """Whether a launcher still holds the run (its lock is taken)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def state(self) -> str:
        """``running``, ``interrupted`` (its launcher ended without finishing the run: killed)
        or ``finished``."""
        if self.running():
            return "running"
        return "finished" if os.path.lexists(os.path.join(self.path, "finished")) else "interrupted"


class RunLock:
    """The launcher's hold on a run it is staging (released at the end, or by its death)."""

    def __init__(self, run: StagedRun) -> None:
        import fcntl

        self.run = run
        self._fd = os.open(run.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def fileno(self) -> int:
        """The locked descriptor (a child that inherits it holds the lock as long as it lives)."""
        return self._fd

    def finish(self) -> None:
        """Mark the run as having ended normally, and let go."""
        fd = os.open(os.path.join(self.run.path, "finished"),
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _private_dir(path: str) -> None:
    """Make ``path`` (and missing parents) ``0700``; refuse one that is not ours or is open to
    others (the change set would be someone else's to edit before ``apply``)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise StagingError(f"{path} must be a directory owned by you with mode 0700 (it holds staged changes); "
                           f"it is {'not a directory' if not stat.S_ISDIR(st.st_mode) else oct(st.st_mode & 0o777)}"
                           f" owned by uid {st.st_uid}")


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def create_run(workspace: str, policy_json: str, *, backend: str,
               environ: Mapping[str, str] | None = None) -> tuple[StagedRun, RunLock]:
    """Make a new run's directory (locked by the caller until it ends) and return it."""
    root = staging_root(environ)
    _private_dir(root)
    run_id = new_run_id()
    path = os.path.join(root, run_id)
    os.mkdir(path, 0o700)
    os.mkdir(os.path.join(path, "upper"), 0o700)
    os.mkdir(os.path.join(path, "work"), 0o700)
    run = StagedRun(run_id=run_id, path=path, workspace=workspace, stamp_ns=time.time_ns() - STAMP_SLACK_NS,
                    pid=os.getpid(), backend=backend,
                    started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    lock = RunLock(run)
    _write_new(os.path.join(path, "policy.json"), policy_json)
    _write_new(os.path.join(path, "run.json"), json.dumps({
        "run": run.run_id, "workspace": run.workspace, "stamp_ns": run.stamp_ns, "pid": run.pid,
        "backend": run.backend, "started": run.started}))
    return run, lock


def _write_new(path: str, text: str) -> None:
    """A new file of ours. Not fsynced: the staging outlives a killed launcher (the page cache
    does), and after a machine crash the overlay's own upper files are no more durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def load_run(path: str) -> StagedRun:
    """Read one run's ``run.json``; refuse a directory or file that is not ours alone."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise StagingError(f"{path}: not a staging directory of yours (mode 0700)")
    try:
        fd = os.open(os.path.join(path, "run.json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StagingError(f"{path}: no run.json ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as fh:
        fst = os.fstat(fh.fileno())
        if fst.st_uid != os.geteuid() or fst.st_mode & 0o022:
            raise StagingError(f"{path}/run.json is not yours alone")
        raw = fh.read(_RUN_JSON_MAX + 1)
    try:
        data = json.loads(raw)
        run = StagedRun(run_id=str(data["run"]), path=path, workspace=str(data["workspace"]),
                        stamp_ns=int(data["stamp_ns"]), pid=int(data["pid"]), backend=str(data["backend"]),
                        started=str(data["started"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StagingError(f"{path}/run.json is damaged: {exc}") from exc
    if run.run_id != os.path.basename(path) or not os.path.isabs(run.workspace):
        raise StagingError(f"{path}/run.json does not describe this run")
    return run


def list_runs(workspace: str | None = None, environ: Mapping[str, str] | None = None) -> list[StagedRun]:
    """Every staged run (of ``workspace``, when given), oldest first."""
    root = staging_root(environ)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    runs = []
    for name in names:
        try:
            run = load_run(os.path.join(root, name))
        except (OSError, StagingError):
            continue
        if workspace is None or run.workspace == workspace:
            runs.append(run)
    return runs


def find_run(run_id: str | None, workspace: str, environ: Mapping[str, str] | None = None) -> StagedRun:
    """The run called ``run_id``, or the workspace's last staged run."""
    if run_id is not None:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise StagingError(f"no staged run {run_id!r}")
        path = os.path.join(staging_root(environ), run_id)
        if not os.path.lexists(path):
            raise StagingError(f"no staged run {run_id}")
        return load_run(path)
    runs = list_runs(workspace, environ)
    if not runs:
        raise StagingError(f"no staged run of {workspace}")
    return runs[-1]


def remove_run(run: StagedRun) -> None:
    """Delete a run's staging directory, everything in it (the overlay's ``work/work`` is
    made ``000`` by the kernel: opened up first). Never follows a symlink."""
    from capgate.launcher import _remove_tree

    if run.running():
        raise StagingError(f"run {run.run_id} is still going (its launcher holds it)")
    _remove_tree(run.path)
    if os.path.lexists(run.path) and run.backend == "container" and os.geteuid() != 0:
        # A rootless podman run whose launcher was killed: the overlay's work/work belongs to a
        # subordinate uid (see ``container.clear_rootless_work``).
        import shutil

        from capgate.backends.container import clear_rootless_work

        podman = shutil.which("podman")
        if podman is not None:
            clear_rootless_work(podman, run.work)
            _remove_tree(run.path)
    if os.path.lexists(run.path):
        raise StagingError(f"could not remove {run.path} entirely")
