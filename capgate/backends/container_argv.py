"""The container backend's command line: one pure builder for podman and Docker.

Nothing is decided here. The mount list is the namespace backend's view of the policy
(``namespace_view.View``: the gate's ``PathRules`` judged every path during ``scan``) turned
into ``--mount`` arguments, and the flags are the hardening the design fixes for every run:
no network (``--network=none``; the egress proxy comes in as a Unix socket), a read-only
root, every capability dropped, ``no-new-privileges``, the launching user's uid:gid, the
policy's limits as a pids limit, a memory limit (swap included) and explicit ulimits, and
``--rm``. Tested on its output alone (``tests/unit/test_container_argv.py``).

Why ``--mount`` and not ``-v``: ``-v`` splits on ``:``, so a path holding one would mount
something else; ``--mount`` splits on ``,`` (and Docker reads it as CSV, so ``"`` counts
too). A path holding ``,``, ``"``, a newline or a NUL cannot be said safely to either
runtime, so ``container_mounts`` refuses it (``UnmountablePath``): fail closed, never a
mount at a different place than the one the gate judged.

Order: both runtimes sort mounts by the depth of their destination, so a cover (deeper)
always lands on top of the root that holds it; the list is built in the namespace backend's
order (roots from the outermost in, read-only re-binds, then covers), each destination kept
once (the last, most restrictive, wins), then sorted by depth the same way, so what the
runtime does is what the list says.

Staged runs (``--staged``): the workspace is an overlay (lower: the real workspace; upper and
work: the run's staging directories, ``capgate.staging.store.StagedRun``) in place of its
bind, and the runtime mounts it, so nothing is left mounted on the host when the container
ends, however the launcher ends. podman says it as an overlay volume (``-v
LOWER:LOWER:O,upperdir=U,workdir=W``, podman 4.3); Docker has no overlay bind, but its
``local`` volume driver mounts an overlay for an anonymous volume (``--mount type=volume``
with ``volume-opt``: the mount options are ours, ``metacopy=off,redirect_dir=nofollow,
index=off``, so every changed file's bytes are in the upper directory and a renamed
directory is copied, not redirected), removed with the container by ``--rm``. No root or
write root beneath the workspace is bound from the host (its writes would land in the real
workspace); the covers and read-only re-binds of the view still are, deeper, so they sit on
top of the overlay exactly as they sit on top of the bind. An overlay's paths also cannot
hold ``:`` (podman's ``-v`` and the kernel's ``lowerdir`` both split on it) nor ``\\`` (the
kernel's overlay options take it as an escape: ``lowerdir=/p/ws\\1`` is ``/p/ws1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from capgate.paths import is_within

if TYPE_CHECKING:
    from capgate.backends.namespace_view import View
    from capgate.policy.model import Limits

__all__ = ["OVERLAY_OPTIONS", "RUNTIMES", "STAGED_VOLUME_LABEL", "ContainerSpec", "Mount", "Overlay",
           "UnmountablePath", "container_argv", "container_mounts"]

RUNTIMES = ("podman", "docker")
MB = 1024 * 1024
_BAD_CHARS = (",", '"', "\n", "\r", "\0")
# What ``capgate changes`` needs of the overlay (Docker's; podman's take the kernel's defaults,
# which ``ContainerBackend`` checks are the same).
OVERLAY_OPTIONS = "metacopy=off,redirect_dir=nofollow,index=off"
STAGED_VOLUME_LABEL = "capgate.staged"


class UnmountablePath(ValueError):
    """A path the runtimes' mount syntax cannot carry exactly (see the module docstring)."""

    def __init__(self, path: str, chars: tuple[str, ...] = _BAD_CHARS) -> None:
        super().__init__(f"{path!r} holds a character ({', '.join(repr(c) for c in chars)}) that the "
                         "container runtime's --mount syntax cannot carry; rename it or use --backend namespace")
        self.path = path


@dataclass(frozen=True)
class Overlay:
    """A staged run's workspace: ``lower`` (the real workspace, mounted at its own path)
    seen through an overlay whose changes land in ``upper`` (``work``: the overlay's own)."""

    lower: str
    upper: str
    work: str


@dataclass(frozen=True)
class Mount:
    """One mount: a host path (``bind``), a named volume (``volume``) or a ``tmpfs``."""

    target: str
    source: str = ""
    readonly: bool = True
    kind: Literal["bind", "volume", "tmpfs", "overlay"] = "bind"
    tmpfs_mode: int = 0o700
    overlay: Overlay | None = None  # kind "overlay": the staged workspace (source: its lower)

    def arguments(self, runtime: str) -> list[str]:
        """The runtime's flag and its value for this mount."""
        if self.kind != "overlay":
            return ["--mount", self.argument()]
        assert self.overlay is not None
        lower, upper, work = (_check(p, colon=True) for p in (self.overlay.lower, self.overlay.upper,
                                                               self.overlay.work))
        target = _check(self.target, colon=True)
        if runtime == "podman":
            return ["-v", f"{lower}:{target}:O,upperdir={upper},workdir={work}"]
        # Docker reads --mount as CSV: the quoted field carries the commas of the mount options.
        # (labelled: a volume left behind, should the runtime ever leave one, is findable)
        return ["--mount", f"type=volume,destination={target},volume-driver=local,volume-nocopy=true,"
                           f"volume-label={STAGED_VOLUME_LABEL}=1,"
                           f"volume-opt=type=overlay,volume-opt=device=overlay,"
                           f'"volume-opt=o=lowerdir={lower},upperdir={upper},workdir={work},{OVERLAY_OPTIONS}"']

    def argument(self) -> str:
        if self.kind == "overlay":
            raise ValueError("an overlay mount is said per runtime: Mount.arguments(runtime)")
        if self.kind == "tmpfs":
            return f"type=tmpfs,destination={self.target},tmpfs-mode={self.tmpfs_mode:o}"
        text = f"type={self.kind},source={self.source},destination={self.target}"
        return text + (",readonly" if self.readonly else "")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything one ``podman run`` / ``docker run`` needs (paths absolute)."""

    runtime: Literal["podman", "docker"]
    executable: str  # the runtime's client binary
    image: str
    name: str  # the container's name: how the runner kills and removes it
    mounts: tuple[Mount, ...]
    env_file: str  # NAME=VALUE lines: the child's whole environment (never on the command line)
    workdir: str
    user: str  # "UID:GID"
    limits: Limits
    nproc: int  # RLIMIT_NPROC: counts every process of the uid on the host, so the pids limit binds
    command: tuple[str, ...]
    cpus: float | None = None
    rootless: bool = False  # rootless podman: --userns=keep-id (files stay the user's)
    oci_runtime: str | None = None  # podman --runtime (runc here: crun fails on hybrid cgroups)
    interactive: bool = True  # -i: the agent's stdin is the launcher's
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _check(path: str, *, colon: bool = False) -> str:
    # (an overlay's paths: the kernel splits lowerdir on ``:`` and takes ``\\`` as an escape,
    # so ``/p/ws\\1`` would mount ``/p/ws1``, another directory: review round 9, finding 2)
    bad = (*_BAD_CHARS, ":", "\\") if colon else _BAD_CHARS
    if not path.startswith("/") or any(c in path for c in bad):
        raise UnmountablePath(path, bad)
    return path


def container_mounts(view: View, *, run_binds: Sequence[tuple[str, bool]] = (), tmpfs: Sequence[str] = (),
                     volumes: Sequence[tuple[str, str]] = (), overlay: Overlay | None = None) -> tuple[Mount, ...]:
    """The mounts for ``view``: private tmpfs (``/tmp``, the sandbox ``HOME`` and
    ``TMPDIR``), named volumes ``(name, target)``, the read roots read-only and the write
    roots read-write at their own paths, the launcher's run files ``(path, writable)`` (the
    effective policy, the audit FIFO, the proxy socket), the allowed host sockets, the
    write-denied paths read-only on themselves, and last the covers: an empty read-only
    file or directory over each path the gate refused. The image itself is the system part
    of the view (``view.system`` is not bound).

    With ``overlay`` (a staged run), the overlay is mounted at ``overlay.lower`` (the
    workspace) and no read or write root beneath it is bound from the host; the run binds,
    sockets, read-only re-binds and covers beneath it are, on top of it."""
    out: list[Mount] = [Mount(_check(t), kind="tmpfs", readonly=False, tmpfs_mode=0o1777 if t == "/tmp" else 0o700)
                        for t in tmpfs]
    out += [Mount(_check(target), name, readonly=False, kind="volume") for name, target in volumes]
    writable = tuple(view.write)
    for path in sorted(set(view.read) | set(writable), key=lambda p: (p.count("/"), p)):
        if path in ("/", "/dev", "/proc", "/sys") or any(is_within(path, k) for k in ("/dev", "/proc", "/sys")):
            continue  # the runtime makes these; a host one never goes in
        if overlay is not None and is_within(path, overlay.lower):
            continue  # (the overlay, below: a host bind here would be the real workspace)
        rw = any(is_within(path, w) for w in writable)
        out.append(Mount(_check(path), _check(path), readonly=not rw))
    if overlay is not None:
        out.append(Mount(_check(overlay.lower, colon=True), _check(overlay.lower, colon=True), readonly=False,
                         kind="overlay", overlay=overlay))
    out += [Mount(_check(path), _check(path), readonly=not rw) for path, rw in run_binds]
    out += [Mount(_check(path), _check(path), readonly=False) for path in view.sockets]
    out += [Mount(_check(path), _check(path)) for path in view.scan.readonly]
    out += [Mount(_check(path), _check(view.empty_dir)) for path in view.scan.hidden_dirs]
    out += [Mount(_check(path), _check(view.empty_file)) for path in view.scan.hidden_files]
    last: dict[str, int] = {m.target: i for i, m in enumerate(out)}
    unique = [m for i, m in enumerate(out) if last[m.target] == i]
    # By depth, as both runtimes apply them (stable: at one depth, the order above): a mount
    # always lands on top of every mount that holds it.
    return tuple(sorted(unique, key=lambda m: m.target.rstrip("/").count("/")))


def container_argv(spec: ContainerSpec) -> list[str]:
    """``podman run`` / ``docker run`` for ``spec`` (see the module docstring)."""
    if spec.runtime not in RUNTIMES:
        raise ValueError(f"unknown container runtime {spec.runtime!r} (podman or docker)")
    limits = spec.limits
    memory = f"{limits.memory_mb}m"
    fsize = limits.max_file_size_mb * MB
    argv = [spec.executable, "run", "--rm", "--name", spec.name]
    if spec.runtime == "podman":
        if spec.oci_runtime:
            argv += ["--runtime", spec.oci_runtime]
        # podman copies the host's proxy variables in otherwise; the run's own come from the env file
        argv += ["--http-proxy=false", "--read-only-tmpfs=false"]
        if spec.rootless:
            argv.append("--userns=keep-id")
    argv += [
        "--network=none",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--user", spec.user,
        "--hostname", "capgate",
        "--ipc=private",
        "--log-driver=none",  # the agent's output is its own: never a copy in the runtime's logs
        "--pids-limit", str(limits.max_processes),
        "--memory", memory,
        "--memory-swap", memory,  # no swap on top: the memory limit is the limit
        "--ulimit", f"nofile={limits.max_open_files}:{limits.max_open_files}",
        "--ulimit", f"nproc={spec.nproc}:{spec.nproc}",
        "--ulimit", f"fsize={fsize}:{fsize}",
        "--ulimit", "core=0:0",
        "--ulimit", f"cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        "--env-file", spec.env_file,
        "--workdir", _check(spec.workdir),
    ]
    if spec.cpus is not None:
        argv += ["--cpus", f"{spec.cpus:g}"]
    if spec.interactive:
        argv.append("--interactive")
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    for mount in spec.mounts:
        argv += mount.arguments(spec.runtime)
    argv += ["--entrypoint", spec.command[0], spec.image, *spec.command[1:]]
    return argv
