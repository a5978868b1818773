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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from capgate.paths import is_within

if TYPE_CHECKING:
    from capgate.backends.namespace_view import View
    from capgate.policy.model import Limits

__all__ = ["RUNTIMES", "ContainerSpec", "Mount", "UnmountablePath", "container_argv", "container_mounts"]

RUNTIMES = ("podman", "docker")
MB = 1024 * 1024
_BAD_CHARS = (",", '"', "\n", "\r", "\0")


class UnmountablePath(ValueError):
    """A path the runtimes' mount syntax cannot carry exactly (see the module docstring)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path!r} holds a character ({', '.join(repr(c) for c in _BAD_CHARS)}) that the "
                         "container runtime's --mount syntax cannot carry; rename it or use --backend namespace")
        self.path = path


@dataclass(frozen=True)
class Mount:
    """One mount: a host path (``bind``), a named volume (``volume``) or a ``tmpfs``."""

    target: str
    source: str = ""
    readonly: bool = True
    kind: Literal["bind", "volume", "tmpfs"] = "bind"
    tmpfs_mode: int = 0o700

    def argument(self) -> str:
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


def _check(path: str) -> str:
    if not path.startswith("/") or any(c in path for c in _BAD_CHARS):
        raise UnmountablePath(path)
    return path


def container_mounts(view: View, *, run_binds: Sequence[tuple[str, bool]] = (), tmpfs: Sequence[str] = (),
                     volumes: Sequence[tuple[str, str]] = ()) -> tuple[Mount, ...]:
    """The mounts for ``view``: private tmpfs (``/tmp``, the sandbox ``HOME`` and
    ``TMPDIR``), named volumes ``(name, target)``, the read roots read-only and the write
    roots read-write at their own paths, the launcher's run files ``(path, writable)`` (the
    effective policy, the audit FIFO, the proxy socket), the allowed host sockets, the
    write-denied paths read-only on themselves, and last the covers: an empty read-only
    file or directory over each path the gate refused. The image itself is the system part
    of the view (``view.system`` is not bound)."""
    out: list[Mount] = [Mount(_check(t), kind="tmpfs", readonly=False, tmpfs_mode=0o1777 if t == "/tmp" else 0o700)
                        for t in tmpfs]
    out += [Mount(_check(target), name, readonly=False, kind="volume") for name, target in volumes]
    writable = tuple(view.write)
    for path in sorted(set(view.read) | set(writable), key=lambda p: (p.count("/"), p)):
        if path in ("/", "/dev", "/proc", "/sys") or any(is_within(path, k) for k in ("/dev", "/proc", "/sys")):
            continue  # the runtime makes these; a host one never goes in
        rw = any(is_within(path, w) for w in writable)
        out.append(Mount(_check(path), _check(path), readonly=not rw))
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
        argv += ["--mount", mount.argument()]
    argv += ["--entrypoint", spec.command[0], spec.image, *spec.command[1:]]
    return argv
