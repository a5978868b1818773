"""Namespace backend: the soft backend's gate and kernel layer, inside a view of its own.

The whole child tree runs in new user, mount, pid, network, ipc and uts namespaces made by
bubblewrap (``bwrap``, Debian's ``bubblewrap``; no setuid helper: it is used unprivileged,
through user namespaces). The view (``namespace_view``) holds only what the policy lets the
agent see; inside it everything the soft backend does still holds — the hooks for Python
children, Landlock for the whole tree (applied inside by ``capgate._sys.ns_exec``, since a
Landlock domain may not mount), rlimits, the pids cgroup, the wall-time kill and the tree
kill — so a native child meets the same refusals as a Python one: a deny-listed file inside
the workspace is an empty file, a host Unix socket or the launcher's ``/proc`` entries do not
exist, files outside the write roots are on read-only mounts (also for ``chmod``), and a
mandatory write-deny path inside a write root is a read-only mount.

Why bubblewrap rather than the kernel calls directly: the mount sequence (a fresh root, binds
in order, a pid-1 reaper, ``--die-with-parent``) is exactly what it was built and reviewed for,
and the two best-known agent sandboxes on Linux use it; capgate adds the decisions.

Where user namespaces are refused (Docker's default seccomp profile, AppArmor's
``restrict_unprivileged_userns``, ``max_user_namespaces=0``) or bwrap is missing,
``available()`` says why: ``auto`` then falls back to soft, ``--backend namespace`` refuses.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import TYPE_CHECKING, Any

from capgate.backends.base import LaunchRequest
from capgate.backends.namespace_view import FOREIGN_OWNER_RULE, Scan, View, bwrap_argv, command_links, scan
from capgate.backends.soft import SoftBackend, _start_proxy
from capgate.paths import is_within

if TYPE_CHECKING:
    from capgate.audit import AuditLog

__all__ = ["BWRAP_PATHS", "INNER_PROXY_PORT", "NamespaceBackend", "find_bwrap"]

# Only a root-owned bwrap that nobody else can replace: it runs with the run's files.
BWRAP_PATHS = ("/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap")
# The loopback port the egress forwarder listens on inside the view's own network namespace.
INNER_PROXY_PORT = 3128
_probe_cache: tuple[bool, str] | None = None


def find_bwrap() -> str | None:
    for path in BWRAP_PATHS:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022 and st.st_mode & 0o111:
            return path
    return None


def _probe(bwrap: str) -> tuple[bool, str]:
    """Whether bwrap can make the namespaces here (a real try: seccomp filters and AppArmor
    refuse at unshare time, which no sysctl shows)."""
    import subprocess  # (here: most runs read the remembered answer, and the launcher's start-up is short)

    try:
        done = subprocess.run(
            [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"],
            capture_output=True, timeout=10, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bubblewrap could not run: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        return False, "user namespaces are refused here (" + (reason[-1] if reason else f"exit {done.returncode}") + ")"
    return True, ""


def _probe_key(bwrap: str) -> str:
    """What the probe's answer depends on: this boot, this kernel, this bwrap, this user."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        return ""
    st = os.stat(bwrap)
    return f"{boot} {os.uname().release} {bwrap} {st.st_mtime_ns} {st.st_size} {os.getuid()}"


def _probe_cache_path() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "capgate", "namespace-probe")


def _cached_probe(bwrap: str) -> tuple[bool, str]:
    """``_probe``, its "yes" remembered for this boot in the user's state directory (~10 ms a
    run otherwise). Only a yes is kept, in a file of ours nobody else can write: a forged "no"
    could quietly move later runs to the soft backend, and a stale or forged "yes" only means
    bubblewrap refuses at start — the run then stops with exit 125 and forgets the answer
    (``NamespaceBackend._after``), never runs weaker."""
    key = _probe_key(bwrap)
    path = _probe_cache_path()
    if key:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd, encoding="utf-8") as fh:
                st = os.fstat(fh.fileno())
                stored = fh.read(4096) if (st.st_uid == os.getuid() and not st.st_mode & 0o022
                                           and stat.S_ISREG(st.st_mode)) else ""
            if stored == key + "\nok":
                return True, ""
        except OSError:
            pass
    result = _probe(bwrap)
    if key and result[0]:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(key + "\nok")
            os.replace(tmp, path)
        except OSError:
            pass
    return result


def _forget_probe() -> None:
    global _probe_cache
    _probe_cache = None
    try:
        os.unlink(_probe_cache_path())
    except OSError:
        pass


class NamespaceBackend(SoftBackend):
    name = "namespace"
    staging_refusal = None  # --staged: an overlay of the workspace (capgate._sys.stage_mount)

    def __init__(self) -> None:
        super().__init__()
        self._bwrap: str | None = None

    def available(self) -> tuple[bool, str]:
        global _probe_cache
        ok, why = super().available()
        if not ok:
            return ok, why
        bwrap = find_bwrap()
        if bwrap is None:
            return False, "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
        if _probe_cache is None:
            _probe_cache = _cached_probe(bwrap)
        self._bwrap = bwrap
        return _probe_cache

    # -- the differences from soft --------------------------------------------------------
    def _start_egress(self, request: LaunchRequest, audit: AuditLog) -> tuple[Any, str, int]:
        """The proxy listens on a Unix socket in the run directory; inside, the forwarder
        offers it on loopback (there is no other network in the view)."""
        path = os.path.join(request.run_dir, "proxy.sock")
        proxy = _start_proxy(request.policy, audit, unix_path=path, inspection=self._inspection)
        return proxy, "127.0.0.1", INNER_PROXY_PORT

    def _command(self, request: LaunchRequest, argv: list[str], confine: Any, proxy: Any,
                 audit: AuditLog) -> tuple[list[str], Any]:
        from capgate.gate import Gate

        if self._bwrap is None:
            ok, why = self.available()
            if not ok:
                from capgate.errors import BackendUnavailable

                raise BackendUnavailable(why)
        assert self._bwrap is not None
        policy = request.policy
        fs = policy.filesystem
        rules = Gate(policy, audit=audit).path_rules
        sockets = tuple(getattr(policy.network, "allowed_unix_sockets", ()) or ())
        staging = request.staging
        # A staged run started unprivileged: files of other owners cannot be copied up (see
        # stage_mount), so they are bound read-only. Root maps every id: nothing to do.
        owner = (os.getuid(), os.getgid()) if staging is not None and os.getuid() != 0 else None
        found = scan(rules, (*fs.read,), (*fs.write,), sockets, owner=owner)
        self._rules, self._before = rules, found
        empty_file, empty_dir = _empties(request.run_dir)
        system, links, hidden_files, hidden_dirs = _system_view()
        read = (*fs.read, *fs.runtime_read, request.run_dir)  # (boot/, policy.json, the proxy socket)
        write = tuple(w for w in fs.write if w != "/dev/null")
        if staging is not None:
            # The workspace path is the overlay (mounted by stage_mount before bubblewrap
            # starts): bound read-write as one root; nothing beneath it is bound from the host.
            ws = policy.workspace
            read = tuple(r for r in read if not is_within(r, ws))
            write = (*(w for w in write if not is_within(w, ws)), ws)
        view = View(
            system=system,
            system_links=links,
            command_links=command_links(request.argv, (*system, *read, *write, *(t for _t, t in links))),
            system_hidden_files=hidden_files,
            system_hidden_dirs=hidden_dirs,
            read=read,
            write=write,
            sockets=sockets,
            scan=found,
            empty_file=empty_file,
            empty_dir=empty_dir,
            workspace=policy.workspace,
            uid=os.getuid(),
            gid=os.getgid(),
        )
        # Both by their real directories: the view binds the read roots at their real paths, so
        # a path through a symbolic link to a directory (capgate.pyz's environment under
        # ~/.cache/pex/venvs/.../s/HASH/venv, a venv reached through a link) does not exist inside.
        # The interpreter keeps its own name (a venv's bin/python stays the venv's).
        shim = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_sys", "ns_exec.py")
        python = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(sys.executable))),
                              os.path.basename(sys.executable))
        inner = [python, "-I", "-S", shim, "-" if confine is None else confine.encode()]
        if proxy is not None:
            inner += ["--forward", str(INNER_PROXY_PORT), str(proxy.address)]
        audit.event("namespace.view", hidden=len(found.hidden_files) + len(found.hidden_dirs),
                    readonly=len(found.readonly), scanned=found.entries,
                    reasons=_count_reasons(found))
        command = bwrap_argv(self._bwrap, view, [*inner, "--", *argv])
        if staging is None:
            return command, None
        say_foreign(found, audit)
        mount = os.path.join(os.path.dirname(shim), "stage_mount.py")
        quota = policy.limits.output_quota_mb * 1024 * 1024
        audit.event("staging.overlay", run=staging.run_id, upper=staging.upper, lower=policy.workspace)
        return [sys.executable, "-I", "-S", mount, policy.workspace, staging.upper, staging.work, str(quota),
                "--", *command], None

    def _after(self, request: LaunchRequest, audit: AuditLog) -> None:
        """A run whose view never came up (bubblewrap refused: user namespaces switched off
        since the probe, a mount it could not make) is a refusal to start, not the child's
        exit status; then the soft backend's report of what appeared in the write roots."""
        reader = self._reader
        if reader is not None and not reader.namespace_started:
            _forget_probe()
            from capgate.errors import BackendUnavailable

            raise BackendUnavailable("the namespace sandbox did not start: bubblewrap could not build the view "
                                     "(its message is above)")
        super()._after(request, audit)


def say_foreign(found: Scan, audit: AuditLog) -> None:
    """Say how many workspace entries a staged run binds read-only because an unprivileged
    overlay could not copy them up (``scan(owner=...)``)."""
    foreign = _count_reasons(found).get(FOREIGN_OWNER_RULE, 0)
    if foreign:
        audit.warning("staging.foreign", count=foreign)
        os.write(2, (f"capgate: {foreign} entr{'ies' if foreign != 1 else 'y'} of the workspace belong to "
                     "another user or group: read-only in this staged run (an unprivileged overlay cannot "
                     "copy them up)\n").encode())


def _count_reasons(found: Scan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in found.reasons.values():
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def _empties(run_dir: str) -> tuple[str, str]:
    """An empty read-only file and directory in the run directory, to cover things with."""
    empty_file = os.path.join(run_dir, "empty-file")
    empty_dir = os.path.join(run_dir, "empty-dir")
    if not os.path.exists(empty_file):
        fd = os.open(empty_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
    os.makedirs(empty_dir, mode=0o555, exist_ok=True)
    return empty_file, empty_dir


def _system_view() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]:
    """The system part of the view: the same files Landlock lets the tree read
    (``launcher.system_read_roots``), built as whole directories with the secrets covered —
    ``/etc`` bound once, ``/etc/shadow``, ``/etc/ssh``, ``/etc/ssl/private``... covered. A
    secret directory holding one of the reviewed public system files (``/etc/ssl/certs``) is
    covered entry by entry around it instead of whole."""
    from capgate.launcher import _ETC_SECRETS, _SYSTEM_READ_ROOTS, system_files

    roots = [r for r in (*_SYSTEM_READ_ROOTS, "/etc") if os.path.exists(r) and not os.path.islink(r)]
    links = tuple((os.readlink(r), r) for r in _SYSTEM_READ_ROOTS if os.path.islink(r))
    public = [f for f in system_files() if os.path.exists(f)]
    hidden_files: list[str] = []
    hidden_dirs: list[str] = []

    def cover(path: str) -> None:
        if path in public:
            return
        inside = [f for f in public if f.startswith(path + "/")]
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        if not inside or not is_dir:
            (hidden_dirs if is_dir else hidden_files).append(path)
            return
        try:
            names = sorted(os.listdir(path))
        except OSError:
            hidden_dirs.append(path)
            return
        for name in names:
            cover(os.path.join(path, name))

    for name in sorted(_ETC_SECRETS):
        path = os.path.join("/etc", name)
        if os.path.lexists(path):
            cover(path)
    return tuple(roots), links, tuple(hidden_files), tuple(hidden_dirs)
