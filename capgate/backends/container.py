"""Container backend: the agent in a hardened OCI container (podman or Docker), the gate inside.

The kernel view is the namespace backend's, decided by the gate once: ``namespace_view.scan``
walks the read and write roots with the gate's ``PathRules`` (deny-read matches, planted hard
links and unlisted host sockets covered by an empty read-only file or directory, write-denied
paths bound read-only) and ``container_argv`` turns that view into ``--mount`` arguments and
the hardening flags (no network, read-only root, no capabilities, no new privileges, the
launching user's uid:gid, the policy's limits, ``--rm``). The image (``capgate image
build``, ``container_shim``) is the system part of the view.

Inside, ``container_shim/entrypoint.py`` runs first: it opens the launcher's audit FIFO (bound
in from the run directory) for the child, forwards the egress proxy's Unix socket to
``127.0.0.1:3128`` when the network is on, applies the run's Landlock plan and execs the
command with ``AGENT_IN_SANDBOX=1``; a Python child boots the same gate with the same
effective policy (bound read-only) from the image's ``/opt/capgate/boot``, and its decisions
come back over the FIFO into the launcher's audit log (``ChildReportReader``, as for soft).

The runner (``_ContainerRun``) names the container, waits for the client with the wall time,
and kills the container by name on timeout or a stopping signal (killing ``docker run``
alone would leave the container running). Names the gate refuses that a program creates in
the write roots during the run are reported at exit (``created_denials``), as for namespace.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from capgate.backends.base import LaunchRequest, LaunchResult
from capgate.backends.container_argv import (
    ContainerSpec,
    Mount,
    Overlay,
    UnmountablePath,
    container_argv,
    container_mounts,
)
from capgate.errors import BackendUnavailable

if TYPE_CHECKING:
    from capgate.audit import AuditLog
    from capgate.backends.namespace_view import View
    from capgate.backends.soft import ChildReportReader

__all__ = ["CACHE_VOLUME", "IMAGE_ROOT", "INNER_PROXY_PORT", "ContainerBackend", "exit_limits"]

IMAGE_ROOT = "/opt/capgate"  # the image's capgate: bin/python, boot/, shim/ (container_shim.rootfs)
INNER_PROXY_PORT = 3128
CACHE_VOLUME = "capgate-cache"  # the one thing a run leaves behind: the agent's ~/.cache
IMAGE_PATH = "/usr/local/bin:/usr/bin:/bin"
_RUNC_PATHS = ("/usr/bin/runc", "/usr/sbin/runc", "/usr/local/bin/runc")
_available_cache: dict[tuple[str | None, str | None, bool], tuple[bool, str, str, str, str]] = {}


def exit_limits(returncode: int, timed_out: bool) -> tuple[str, ...]:
    """Which limit a container's exit status points at (the container is gone by then, so
    this is read from the signal that ended it): SIGXCPU is ``cpuSeconds``, SIGXFSZ
    ``maxFileSizeMb``; SIGKILL outside the wall time is most likely the memory limit's OOM
    kill (nothing else in the container sends it; the runtime's own record is gone with
    ``--rm``)."""
    if timed_out:
        return ("wall_time",)
    return {128 + 24: ("cpuSeconds",), 128 + 25: ("maxFileSizeMb",),
            128 + 9: ("memoryMb (SIGKILL in the container: most likely the memory limit)",)}.get(returncode, ())


def _probe(runtime: str | None, image: str | None, auto: bool) -> tuple[bool, str, str, str, str]:
    """(ok, why not, runtime, its client binary, image): the first runtime that answers and
    holds the image. One ``image inspect`` per runtime proves both (~50-100 ms); for
    ``auto`` without ``--image``, only a runtime ``capgate image build`` made this
    capgate's image with is asked at all; ``--backend container --runtime R`` with that
    image trusts the record and lets the run be the check."""
    build = _shim_build()
    default_image, find_runtime = build.default_image, build.find_runtime
    wanted = default_image() if image is None else image
    reasons = []
    for name in (runtime,) if runtime else ("podman", "docker"):
        exe = find_runtime(name)
        if exe is None:
            reasons.append(f"{name} is not installed")
            continue
        built = build.built_image(name) if image is None else None
        if auto and image is None and built is None:
            hint = "capgate image build" + (f" --runtime {name}" if name != "podman" else "")
            reasons.append(f"{name}: no image built for this capgate (`{hint}`)")
            continue
        if not auto and built is not None:
            # Asked for by name, and `capgate image build` made this capgate's image here: the
            # run itself is the check (~70 ms saved; an image removed since makes the run stop
            # with 125 and the runtime's message, never run anything weaker).
            return True, "", name, exe, wanted
        try:
            done = subprocess.run([exe, "image", "inspect", "--format", "{{.Id}}", wanted], capture_output=True,
                                  timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{name} did not answer ({exc})")
            continue
        if done.returncode == 0:
            return True, "", name, exe, wanted
        said = done.stderr.decode(errors="replace").strip().splitlines()
        text = said[-1] if said else f"exit {done.returncode}"
        if "no such image" in text.lower() or "image not known" in text.lower() or "no such object" in text.lower():
            hint = "run `capgate image build" + (f" --runtime {name}`" if name != "podman" else "`")
            reasons.append(f"{name}: the image {wanted} is not there ({hint})")
        else:
            reasons.append(f"{name} did not answer ({text})")
    if auto and image is None and all("no image built" in r or "not installed" in r for r in reasons):
        # (the usual case on a machine that never built one: one short reason, not one a runtime)
        return False, "no container image built for this capgate (`capgate image build`)", "", "", wanted
    return False, "; ".join(reasons), "", "", wanted


def _shim_build() -> Any:
    """``capgate.container_shim.build`` (mapped from the repository's ``container_shim/``
    folder, which mypy checks under that name)."""
    import importlib

    return importlib.import_module("capgate.container_shim.build")


class ContainerBackend:
    name = "container"
    # --staged: the runtime mounts an overlay of the workspace (``container_argv.Overlay``);
    # the launcher watches the staged bytes (``_QuotaWatch``).
    staging_refusal: str | None = None

    def __init__(self, runtime: str | None = None, image: str | None = None, *, auto: bool = False) -> None:
        self.runtime = runtime
        self.image = image
        self.auto = auto
        self._reader: ChildReportReader | None = None
        self._found: tuple[bool, str, str, str, str] | None = None

    def native_execs(self) -> int | None:
        return None if self._reader is None else self._reader.native_execs

    def available(self) -> tuple[bool, str]:
        if self._found is None:
            key = (self.runtime, self.image, self.auto)
            if key not in _available_cache:
                _available_cache[key] = _probe(self.runtime, self.image, self.auto)
            self._found = _available_cache[key]
        return self._found[0], self._found[1]

    def describe(self) -> str:
        """``podman, image localhost/capgate:k…`` once ``available()`` found one."""
        return f"{self._found[2]}, image {self._found[4]}" if self._found and self._found[0] else ""

    def launch(self, request: LaunchRequest, audit: AuditLog) -> LaunchResult:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(why)
        assert self._found is not None
        _ok, _why, runtime, exe, image = self._found
        from capgate.backends.namespace import _count_reasons, _empties, say_foreign
        from capgate.backends.namespace_view import View, created_denials, scan
        from capgate.backends.soft import ChildReportReader, _check_launched_git, _reported_write_roots
        from capgate.gate import Gate

        policy = request.policy
        fs = policy.filesystem
        run_dir = request.run_dir
        rules = Gate(policy, audit=audit).path_rules
        sockets = tuple(getattr(policy.network, "allowed_unix_sockets", ()) or ())
        writes = tuple(w for w in fs.write if w not in (request.home, request.tmpdir, "/dev/null"))
        reads = (*fs.read, *request.mount_read)
        staging = request.staging
        if staging is not None:
            _check_overlay_defaults(runtime)
        # Rootless podman maps only the user's ids (and subordinate ones) into the container:
        # the overlay could not copy up a file of another owner (EOVERFLOW), so those are
        # bound read-only and fail plainly (EROFS), as in an unprivileged staged namespace run.
        rootless = runtime == "podman" and os.geteuid() != 0
        owner = (os.getuid(), os.getgid()) if staging is not None and rootless else None
        found = scan(rules, reads, writes, sockets, owner=owner)
        if owner is not None:
            say_foreign(found, audit)
        empty_file, empty_dir = _empties(run_dir)
        view = View(system=(), read=tuple(r for r in reads if os.path.exists(r)),
                    write=tuple(w for w in writes if os.path.exists(w)), sockets=sockets, scan=found,
                    empty_file=empty_file, empty_dir=empty_dir, workspace=policy.workspace, uid=os.getuid(),
                    gid=os.getgid())
        env = self._environment(request)
        _check_launched_git(request.argv, policy.workspace, {**env, "PATH": IMAGE_PATH}, audit)
        fifo = os.path.join(run_dir, "audit.fifo")
        os.mkfifo(fifo, 0o600)
        proxies: list[Any] = []  # (the egress proxy, once started: stopped whatever fails after)
        try:
            argv, name, mounts = self._argv(request, audit, view, env, fifo, runtime, exe, image, proxies)
            # The runtime first: its daemon spends ~150-250 ms creating the container before the
            # shim opens the FIFO (that open waits for a reader), so the launcher's remaining
            # work (the audit line, the FIFO's reader thread) runs in that time, not before it.
            lock = request.staging_lock
            runner = _ContainerRun(exe, name, argv, dict(request.environ), float(policy.limits.wall_time_seconds),
                                   keep_fds=() if lock is None or lock.fileno() < 0 else (lock.fileno(),))
            watch = None if staging is None else _QuotaWatch(staging.upper,
                                                             policy.limits.output_quota_mb * 1024 * 1024, runner)
            runner.start()
            reader: ChildReportReader | None = None
            keep_fd = -1
            try:
                audit.event("container.view", runtime=runtime, image=image, container=name, mounts=len(mounts),
                            hidden=len(found.hidden_files) + len(found.hidden_dirs), readonly=len(found.readonly),
                            scanned=found.entries, reasons=_count_reasons(found))
                if watch is not None:
                    audit.event("staging.overlay", run=staging.run_id, upper=staging.upper, lower=policy.workspace)
                    watch.start()
                read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                keep_fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)  # EOF only once we let go, after the container
                os.set_blocking(read_fd, True)
                reader = self._reader = ChildReportReader(read_fd, audit)
                reader.start()
                returncode, timed_out, duration = runner.wait()
            finally:
                runner.stop()  # (the container killed and removed unless it ended on its own)
                if watch is not None:
                    watch.stop()
                if staging is not None and rootless:
                    clear_rootless_work(exe, staging.work)
                if keep_fd >= 0:
                    os.close(keep_fd)
                if reader is not None:
                    reader.join(timeout=5.0)
            assert reader is not None  # (set before the wait returned)
        finally:
            for proxy in proxies:
                proxy.stop()
        started = getattr(reader, "container_started", False)
        quota_fired = watch is not None and watch.fired
        if not started and not timed_out and not quota_fired:
            raise BackendUnavailable(f"the {runtime} container did not start (exit {returncode}; the runtime's "
                                     "message is above)")
        from capgate import ops
        from capgate.decision import Decision

        for path, rule, reason in created_denials(rules, _reported_write_roots(request), found):
            audit.record(ops.FS_WRITE, path, Decision.deny(f"appeared during the run, made by a program the hooks "
                                                          f"do not see: {reason}", rule, path), source="launcher")
        if reader.dropped or reader.malformed:
            audit.warning("child.report", lines=reader.lines, dropped=reader.dropped, malformed=reader.malformed)
        fired = ("outputQuotaMb",) if quota_fired else exit_limits(returncode, timed_out)
        return LaunchResult(returncode=returncode, timed_out=timed_out, duration=duration,
                            limits_fired=fired, child_activated=reader.activated,
                            native_execs=reader.native_execs)

    def _argv(self, request: LaunchRequest, audit: AuditLog, view: View, env: dict[str, str], fifo: str,
              runtime: str, exe: str, image: str, proxy_holder: list[Any]) -> tuple[list[str], str, tuple[Mount, ...]]:
        """The runtime's command line (and, network on, the egress proxy started, handed back
        in ``proxy_holder`` at once so the caller stops it whatever fails after)."""
        from capgate._sys.rlimits import user_process_count
        from capgate.backends.soft import _start_proxy, inspection_for_child

        policy = request.policy
        run_dir = request.run_dir
        inner = [f"{IMAGE_ROOT}/bin/python", "-I", "-S", f"{IMAGE_ROOT}/shim/entrypoint.py"]
        confine = request.confine
        # The run directory whole, read-only (the effective policy, the audit FIFO, the proxy
        # socket): the gate inside checks that the policy file and its directory are this
        # user's, which a mount point the runtime made would not be. Its HOME and TMPDIR are
        # private tmpfs on top.
        run_binds = [(run_dir, False)]
        sock = os.path.join(run_dir, "proxy.sock")
        if policy.network.enabled:
            # Credentials and request rules: the proxy outside inspects TLS to their hosts; the
            # child (the run directory is bound at the same path) trusts the run CA and holds
            # only the placeholders — as in the soft and namespace backends.
            inspection = inspection_for_child(request, env, audit)
            proxy_holder.append(_start_proxy(policy, audit, unix_path=sock, inspection=inspection))
            url = f"http://127.0.0.1:{INNER_PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
                env[name] = url
            env["CAPGATE_PROXY"] = f"127.0.0.1:{INNER_PROXY_PORT}"
            audit.event("proxy.started", address=f"unix:{sock} -> 127.0.0.1:{INNER_PROXY_PORT} in the container")
            if confine is not None:
                confine = confine.with_connect_ports((INNER_PROXY_PORT,))
        inner += ["-" if confine is None else confine.encode(), "--audit", fifo]
        if policy.network.enabled:
            inner += ["--forward", str(INNER_PROXY_PORT), sock]
        inner += ["--", *request.argv]
        name = f"capgate-{os.urandom(6).hex()}"  # (not uuid: its import alone is ~5 ms of start-up)
        env_file = os.path.join(run_dir, "container.env")
        staging = request.staging
        overlay = None if staging is None else Overlay(policy.workspace, staging.upper, staging.work)
        try:
            mounts = container_mounts(view, run_binds=run_binds, tmpfs=("/tmp", request.home, request.tmpdir),
                                      volumes=((CACHE_VOLUME, os.path.join(request.home, ".cache")),),
                                      overlay=overlay)
        except UnmountablePath as exc:
            raise BackendUnavailable(str(exc)) from None
        _write_env_file(env_file, env)
        limits = policy.limits
        rootless = runtime == "podman" and os.geteuid() != 0
        if rootless:
            # Rootless podman cannot always apply the memory and pids cgroups (on cgroup v1 it
            # ignores --memory and --pids-limit with a warning): the shim also sets
            # RLIMIT_AS = memoryMb, as the soft backend does; RLIMIT_NPROC bounds the processes.
            split = inner.index("--")
            inner[split:split] = ["--rlimit-as", str(limits.memory_mb * 1024 * 1024)]
        spec = ContainerSpec(
            runtime=runtime,  # type: ignore[arg-type]
            executable=exe, image=image, name=name, mounts=mounts, env_file=env_file,
            workdir=policy.workspace, user=f"{os.getuid()}:{os.getgid()}", limits=limits,
            # RLIMIT_NPROC counts the uid's processes on the whole host: the pids limit binds
            nproc=user_process_count() + limits.max_processes + 16,
            command=tuple(inner), rootless=rootless,
            oci_runtime=_runc() if runtime == "podman" else None,
            labels=(("capgate.run", os.path.basename(run_dir)),), interactive=_stdin_wanted(),
        )
        try:
            return container_argv(spec), name, mounts
        except UnmountablePath as exc:
            raise BackendUnavailable(str(exc)) from None

    def _environment(self, request: LaunchRequest) -> dict[str, str]:
        """The child's whole environment: the clean one (``build_child_env``), the image's
        PATH and boot directory, git's overrides, proxy variables empty unless the network
        is on (so no runtime's or client configuration's proxy settings get in)."""
        from capgate._sys.clean_env import build_child_env
        from capgate.cmdrules import GIT_ENV

        extra = {"AGENT_IN_SANDBOX": "1", "CAPGATE_POLICY": request.policy_file}
        env = build_child_env(request.policy, home=request.home, tmpdir=request.tmpdir, extra=extra,
                              base_env=request.environ, cwd=request.policy.workspace, path_dirs=(IMAGE_PATH,))
        env["PATH"] = IMAGE_PATH
        env["PYTHONPATH"] = f"{IMAGE_ROOT}/boot:{IMAGE_ROOT}/site"  # (the gate's boot stub, then capgate itself)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONNOUSERSITE"] = "1"
        env.update(GIT_ENV)
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
                     "NO_PROXY", "no_proxy"):
            env[name] = ""
        return env


_OVERLAY_PARAMETERS = "/sys/module/overlay/parameters"


def _check_overlay_defaults(runtime: str) -> None:
    """podman mounts its overlay volumes with the kernel's defaults (only ``upperdir`` and
    ``workdir`` can be given): a kernel whose overlay makes metadata-only copies or
    directory redirects by default would leave a change set ``capgate changes`` refuses to
    read. Refuse to start then (Docker's overlay is mounted with our options)."""
    if runtime != "podman":
        return
    for name in ("metacopy", "redirect_dir"):
        try:
            with open(os.path.join(_OVERLAY_PARAMETERS, name), encoding="ascii") as fh:
                value = fh.read().strip()
        except OSError:
            continue  # (no overlay module loaded yet: the built-in defaults, off unless configured)
        if value not in ("N", "off", "nofollow"):
            raise BackendUnavailable(f"--staged with podman: this kernel's overlay defaults to {name}={value}, "
                                     "which podman's overlay volumes cannot switch off; use --runtime docker "
                                     "or --backend namespace")


def clear_rootless_work(exe: str, work: str) -> None:
    """Empty a staged run's overlay ``work`` directory after rootless podman: the kernel made
    ``work/work`` there as the container's root, a subordinate uid the user cannot remove
    as themself (``discard`` and ``apply`` could not delete the staging). ``podman unshare``
    runs ``rm`` with the user's id mapping; ``rm -rf`` never follows a symlink, and ``work``
    is the user's own private directory (nothing a container can write)."""
    try:
        subprocess.run([exe, "unshare", "rm", "-rf", "--", os.path.join(work, "work")], capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        pass  # (left for `capgate discard`, which tries again)


class _QuotaWatch:
    """``limits.outputQuotaMb`` for a staged container run: a thread of the launcher walks the
    upper directory (``stage_mount.staged_bytes``, as the namespace run's watcher does) and
    kills the container once it holds more, leaving the same ``quota-exceeded`` mark. A
    writer can pass the quota by what it writes between two walks."""

    def __init__(self, upper: str, quota: int, runner: _ContainerRun) -> None:
        self.upper, self.quota, self.runner = upper, quota, runner
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capgate-quota", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        from capgate._sys.stage_mount import mark_quota_exceeded, staged_bytes

        interval = 0.05
        while not self._stop.wait(interval):
            started = time.monotonic()
            used = staged_bytes(self.upper)
            if used > self.quota:
                self.fired = True
                mark_quota_exceeded(self.upper, used, self.quota)
                self.runner.stop()
                return
            # Walk at most ~5% of the time; at least every second.
            interval = min(1.0, max(0.05, (time.monotonic() - started) * 20))


def _stdin_wanted() -> bool:
    """Whether to attach the launcher's stdin (``--interactive``): not when it is closed or
    ``/dev/null`` (attaching costs the runtime a stream, ~tens of ms, for nothing)."""
    import stat

    try:
        st = os.fstat(0)
        null = os.stat(os.devnull)
    except OSError:
        return False
    return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev)


def _runc() -> str | None:
    for path in _RUNC_PATHS:
        if os.path.isfile(path):
            return "runc"
    return None


def _write_env_file(path: str, env: dict[str, str]) -> None:
    """``NAME=VALUE`` lines (0600, a new file). A value holding a newline cannot be carried by
    the runtimes' env-file format: the variable is left out rather than split into two."""
    lines = "".join(f"{k}={v}\n" for k, v in env.items() if "\n" not in v and "\r" not in v and "=" not in k)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(lines)


class _ContainerRun:
    """Runs the client to the end (``start``, ``wait``, then ``stop`` in a ``finally``):
    wall-time kill of the container by name, and on any way out that is not the client's own
    exit (a stopping signal, an error) the container is killed and removed, so nothing is
    left running or behind."""

    def __init__(self, exe: str, name: str, argv: list[str], env: dict[str, str], wall: float,
                 keep_fds: tuple[int, ...] = ()) -> None:
        self.exe, self.name, self.argv, self.env, self.wall = exe, name, argv, env, wall
        # (a staged run's lock: the client lives as long as the container, also when the
        # launcher is killed, and holds the run as "running" that long)
        self.keep_fds = keep_fds

    def _kill(self) -> None:
        for action in (["kill", self.name], ["rm", "-f", self.name]):
            try:
                subprocess.run([self.exe, *action], capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
                               env=self.env)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def start(self) -> None:
        """Start the client; the wall time counts from here (a timer thread kills the
        container when it is up)."""
        self.started = time.monotonic()
        self.proc = proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                             pass_fds=self.keep_fds)
        self.fired = fired = threading.Event()
        self.finished = False

        def wall_time() -> None:
            fired.set()
            self._kill()
            if proc.poll() is None:  # (a client that outlives its container: nothing left to wait for)
                proc.kill()

        self.timer = threading.Timer(self.wall, wall_time)
        self.timer.daemon = True
        self.timer.start()

    def wait(self) -> tuple[int, bool, float]:
        """Wait for the client (a blocking wait: ``Popen.wait(timeout)`` polls, up to 50 ms
        late): (exit status, timed out, seconds)."""
        rc = self.proc.wait()
        self.finished = True
        self.timer.cancel()
        timed_out = self.fired.is_set()
        if timed_out:
            self.timer.join(30)  # (the container is gone once _kill returned)
            rc = 128 + 9
        return (rc if rc >= 0 else 128 - rc), timed_out, time.monotonic() - self.started

    def stop(self) -> None:
        """On any way out that is not the client's own exit (a stopping signal, an error in
        the launcher after ``start``): kill and remove the container, end the client."""
        if self.finished:
            return
        self.timer.cancel()
        killer = threading.Thread(target=self._kill)
        killer.start()
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
        killer.join()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
