"""Soft backend: the agent as a child process with process-level controls, and — for Python
children — the gate inside it through audit hooks (``capgate.soft``). ``SOFT_SANDBOX=true``.

What it enforces for every child: a new session, resource limits, whole-tree kill at the wall
time (``capgate.supervisor``), a clean environment (``capgate._sys.clean_env``), a private
``TMPDIR`` and a sandbox ``HOME``. For a Python child, additionally: every file, network and
process action of the interpreter is decided by the gate (see ``capgate.soft`` for the list
and for what audit hooks cannot see). With the network enabled, the child can only reach the
launcher's egress proxy, which asks the gate about each destination.

Decisions made in the child come back over a pipe whose write end only the child holds. The
reader here treats every line as untrusted: size-capped, strictly parsed, and logged with
``source="child"`` under the child's own event names — a child can lie about its own
decisions (it could anyway), never write a launcher record.

What it does not do: isolate. Non-Python children (and native code) are not hooked: they get
the process-level controls only, and the launcher says so.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from capgate.backends.base import LaunchRequest, LaunchResult
from capgate.errors import BackendUnavailable
from capgate.soft import is_python_command

if TYPE_CHECKING:
    from capgate.audit import AuditLog

__all__ = ["MAX_CHILD_LINE", "MAX_CHILD_LINES", "ChildReportReader", "SoftBackend"]

MAX_CHILD_LINE = 8192
MAX_CHILD_LINES = 1_000_000
_CHILD_FIELDS = ("op", "target", "decision", "rule", "reason")
_decode = json.JSONDecoder().decode
_ROWS_MAX = 8192


class ChildReportReader(threading.Thread):
    """Reads the child's JSON lines from ``fd`` into the launcher's audit log."""

    def __init__(self, fd: int, audit: AuditLog) -> None:
        super().__init__(name="capgate-child-audit", daemon=True)
        self.fd = fd
        self.audit = audit
        self.activated = False
        self.namespace_started = False  # ns_exec ran inside the view (the namespace backend)
        self.container_started = False  # the shim ran inside the container (the container backend)
        self.lines = 0
        self.dropped = 0
        self.malformed = 0
        # Allowed execs of programs that are not Python (their own actions are unhooked: what
        # the kernel layer refuses them is not observable, and the summary must say so).
        self.native_execs = 0
        # Decision lines already parsed and validated, by their exact bytes: a child re-reading
        # files sends the same line again (capgate.soft keeps the encoded line of an allowed
        # decision), and a dict lookup is a fraction of a JSON decode. Same bytes, same row.
        self._rows: dict[bytes, tuple[str, str, bool, str, str, int | None]] = {}

    def run(self) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                self.handle_many(lines)
                if len(pending) > MAX_CHILD_LINE:
                    self.malformed += 1
                    pending = b""
        finally:
            try:
                os.close(self.fd)
            except OSError:
                pass

    def handle(self, line: bytes) -> None:
        self.handle_many([line])

    def handle_many(self, lines: list[bytes]) -> None:
        """One read's worth of lines. Decisions go to the log as one batch (one write, one
        timestamp: the time they arrived), in order with the events between them."""
        batch: list[tuple[str, str, bool, str, str, int | None]] = []
        rows = self._rows
        for line in lines:
            if not line:
                continue
            if self.lines >= MAX_CHILD_LINES:
                self.dropped += 1
                continue
            self.lines += 1
            row = rows.get(line)
            if row is not None:
                batch.append(row)
                continue
            data = _parse(line)
            if data is not None and "event" not in data:
                pid = data.get("pid")
                if data["op"] == "proc.exec" and data["decision"] == "allow" and not is_python_command(data["target"]):
                    self.native_execs += 1
                row = (data["op"], data["target"], data["decision"] == "allow", data["rule"], data["reason"],
                       pid if type(pid) is int else None)
                batch.append(row)
                if data["op"] != "proc.exec":  # (an exec is counted above each time it comes)
                    if len(rows) >= _ROWS_MAX:
                        rows.clear()
                    rows[line] = row
                continue
            if batch:
                self.audit.record_child(batch)
                batch = []
            self._other(line, data)
        if batch:
            self.audit.record_child(batch)

    def _other(self, line: bytes, data: dict[str, Any] | None) -> None:
        if data is None:
            self.malformed += 1
            if self.malformed <= 20:
                self.audit.warning("child.malformed", source="child", line=line[:200].decode("utf-8", "replace"))
            return
        pid = data.get("pid") if isinstance(data.get("pid"), int) else None
        name = data["event"]
        if name == "soft.activated":
            self.activated = True
        elif name == "namespace.started":
            self.namespace_started = True
        elif name == "container.started":
            self.container_started = True
        extra = {k: v for k, v in data.items() if k not in ("event", "pid") and isinstance(v, (str, int, bool))}
        self.audit.event("child." + name, source="child", child_pid=pid,
                         **{f"child_{k}": v for k, v in list(extra.items())[:8]})


def _parse(line: bytes) -> dict[str, Any] | None:
    if len(line) > MAX_CHILD_LINE:
        return None
    try:
        data = _decode(line.decode("utf-8"))  # (json.loads(bytes) would sniff the encoding first)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if "event" in data:
        name = data["event"]
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            return None
        if not name.replace(".", "").replace("_", "").isalnum():
            return None
        return data
    for key in _CHILD_FIELDS:
        if not isinstance(data.get(key), str) or len(data[key]) > 4096:
            return None
    if data["decision"] not in ("allow", "deny"):
        return None
    return data


def _widen_pipe(fd: int) -> None:
    """Give the audit pipe room for bursts (1 MiB, or what ``pipe-max-size`` allows, instead
    of 64 KiB): a child that opens thousands of files in a row writes its decisions faster
    than this process turns them into log lines, and would otherwise wait on the pipe."""
    import fcntl

    size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size is None:
        return
    for want in (1 << 20, 1 << 18):
        try:
            fcntl.fcntl(fd, size, want)
            return
        except OSError:  # EPERM above pipe-max-size for an unprivileged user, EBUSY: try smaller
            continue


class SoftBackend:
    name = "soft"
    # Why ``--staged`` cannot run here (None: it can). Staging needs an overlay of the
    # workspace, which needs a mount namespace; hooks cannot redirect a native child's writes.
    staging_refusal: str | None = ("the soft backend cannot stage writes: it has no mount namespace to put an "
                                   "overlay of the workspace in, and its hooks cannot redirect a native program's "
                                   "writes (use --backend namespace where user namespaces work)")

    def __init__(self) -> None:
        self._reader: ChildReportReader | None = None
        self._inspection: Any = None

    def native_execs(self) -> int | None:
        """How many non-Python programs the (Python part of the) child tree was seen to start
        in the current or last run (None before a run): also valid when ``launch`` was
        interrupted, for the launcher's summary."""
        return None if self._reader is None else self._reader.native_execs

    def available(self) -> tuple[bool, str]:
        if not hasattr(os, "pipe2") or not os.path.isdir("/proc/self/fd"):
            return False, "the soft backend needs Linux (/proc/self/fd, pipe2)"
        return True, ""

    def launch(self, request: LaunchRequest, audit: AuditLog) -> LaunchResult:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(why)
        from capgate._sys.clean_env import build_child_env

        policy = request.policy
        proxy = None
        extra = {
            "AGENT_IN_SANDBOX": "1",
            "SOFT_SANDBOX": "true",
            "CAPGATE_POLICY": request.policy_file,
        }
        env = build_child_env(policy, home=request.home, tmpdir=request.tmpdir, extra=extra,
                              base_env=request.environ, cwd=policy.workspace)
        # Set after the clean environment on purpose: these are the launcher's own values
        # (clean_env refuses PYTHON* and proxy names from anywhere else). See _soft_boot.
        env["PYTHONPATH"] = os.path.join(request.run_dir, "boot")
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ writes into read-only sources
        env["PYTHONNOUSERSITE"] = "1"
        # Every git in the tree — the launched command, one a Python child starts (the hooks
        # keep these in place for it), one a shell script or make starts — runs with the
        # overrides proc.run's git gets: no repository hooks (core.hooksPath=/dev/null), no
        # fsmonitor, pager, editor or credential helper, no system or global configuration.
        from capgate.cmdrules import GIT_ENV

        env.update(GIT_ENV)
        _check_launched_git(request.argv, policy.workspace, env, audit)
        self._inspection = inspection_for_child(request, env, audit)
        if policy.network.enabled:
            proxy, host, port = self._start_egress(request, audit)
            url = f"http://{host}:{port}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
                env[name] = url
            env["NO_PROXY"] = env["no_proxy"] = ""
            env["CAPGATE_PROXY"] = f"{host}:{port}"
            # Node's fetch: NODE_USE_ENV_PROXY where Node has it, the preload below 22.21 (_node_boot).
            from capgate._node_boot import NODE_PRELOAD_NAME

            env["NODE_USE_ENV_PROXY"] = "1"
            env["NODE_OPTIONS"] = f'--require "{os.path.join(request.run_dir, "boot", NODE_PRELOAD_NAME)}"'
            audit.event("proxy.started", address=f"{host}:{port}")
        confine = request.confine
        if confine is not None and proxy is not None:  # the kernel layer lets TCP reach the proxy alone
            confine = confine.with_connect_ports((port,))
        # The command before anything runs beside this thread (the child-report reader): the
        # namespace backend's scan is CPU work.
        try:
            argv, confine = self._command(request, list(request.argv), confine, proxy, audit)
        except BaseException:
            if proxy is not None:
                proxy.stop()
            raise
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        _widen_pipe(write_fd)
        env["CAPGATE_AUDIT_FD"] = str(write_fd)
        reader = self._reader = ChildReportReader(read_fd, audit)
        reader.start()
        started = time.monotonic()
        try:
            result = _supervise(argv, policy=policy, env=env, cwd=policy.workspace,
                                pass_fds=(write_fd,), confine=confine)
        finally:
            os.close(write_fd)
            reader.join(timeout=5.0)
            if proxy is not None:
                proxy.stop()
        self._after(request, audit)
        if reader.dropped or reader.malformed:
            audit.warning("child.report", lines=reader.lines, dropped=reader.dropped, malformed=reader.malformed)
        returncode = int(result.returncode)
        if returncode < 0:
            returncode = 128 - returncode
        return LaunchResult(
            returncode=returncode,
            timed_out=bool(getattr(result, "timed_out", False)),
            duration=float(getattr(result, "duration", time.monotonic() - started)),
            limits_fired=tuple(getattr(result, "limits_fired", ()) or ()),
            child_activated=reader.activated,
            native_execs=reader.native_execs,
        )


    # -- what the namespace backend changes (capgate.backends.namespace) ----------------
    def _start_egress(self, request: LaunchRequest, audit: AuditLog) -> tuple[Any, str, int]:
        """Start the egress proxy; return it and the ``host``, ``port`` the child is told."""
        proxy = _start_proxy(request.policy, audit, inspection=self._inspection)
        return proxy, str(proxy.address[0]), int(proxy.address[1])

    def _command(self, request: LaunchRequest, argv: list[str], confine: Any, proxy: Any,
                 audit: AuditLog) -> tuple[list[str], Any]:
        """The command the supervisor starts, and the Landlock plan it puts the tree under.
        Also remembers what the write roots hold that the gate refuses the agent (``_after``
        reports what appears beside it)."""
        from capgate.backends.namespace_view import snapshot_write_roots
        from capgate.gate import Gate

        self._rules = Gate(request.policy, audit=audit).path_rules
        self._before = snapshot_write_roots(self._rules, _reported_write_roots(request))
        return argv, confine

    def _after(self, request: LaunchRequest, audit: AuditLog) -> None:
        """After a run that completed (the tree is gone): names the gate would not have let the
        agent write that appeared in the write roots during the run — a native program's
        ``output/.bashrc``, a ``.git`` made a symlink, a ``.git/hooks`` recreated under a moved
        parent, none of which the hooks see — are logged as denials. Landlock lets the tree
        write anywhere beneath the write roots; this makes sure it is never silent."""
        from capgate import ops
        from capgate.backends.namespace_view import created_denials
        from capgate.decision import Decision

        before = getattr(self, "_before", None)
        if before is None:
            return
        for path, rule, reason in created_denials(self._rules, _reported_write_roots(request), before):
            audit.record(ops.FS_WRITE, path, Decision.deny(f"appeared during the run, made by a program the hooks "
                                                          f"do not see: {reason}", rule, path), source="launcher")


def _reported_write_roots(request: LaunchRequest) -> list[str]:
    """The write roots whose contents outlive the run (not the run's private HOME and TMPDIR;
    in a staged run not the workspace either: the real one is untouched, and what the run
    staged is judged from its change list, ``capgate.staging.report``)."""
    from capgate.paths import is_within

    roots = [w for w in request.policy.filesystem.write if w not in (request.home, request.tmpdir, "/dev/null")]
    if request.staging is not None:
        roots = [w for w in roots if not is_within(w, request.policy.workspace)]
    return roots


def _check_launched_git(argv: tuple[str, ...], cwd: str, env: dict[str, str], audit: AuditLog) -> None:
    """The same git-configuration check as ``proc.run`` (``capgate.gitconfig``) for a
    launched command that runs git: a hostile ``.git/config`` is refused here, visibly, with
    the reason in the audit log — not left to the kernel layer, which stops the program git
    would run without a word the launcher can see. Raises ``PermissionDenied``."""
    from capgate import ops
    from capgate.decision import Decision
    from capgate.errors import PermissionDenied
    from capgate.gitconfig import GIT_CONFIG_RULE, git_config_refusal

    def find_git(word: str) -> str | None:
        if argv and word == argv[0]:
            return argv[0]  # (resolved by the launcher)
        if "/" in word:
            return word if os.access(word, os.X_OK) else None
        import shutil

        return shutil.which(word, path=env.get("PATH", os.defpath))

    try:
        why = git_config_refusal(argv, cwd, env, find_git)
    except Exception as exc:  # fail closed: an error while deciding is a denial
        why = f"error while checking the git configuration: {exc!r}"
    if why is None:
        return
    target = argv[0] if argv else "git"
    audit.record(ops.PROC_EXEC, target, Decision.deny(why, GIT_CONFIG_RULE, target), argv=list(argv[:32]),
                 cwd=cwd, source="launcher")
    raise PermissionDenied(ops.PROC_EXEC, target, why, GIT_CONFIG_RULE)


def upstream_proxy(environ: Any) -> tuple[str, int] | None:
    """``CAPGATE_UPSTREAM_PROXY=HOST:PORT`` in the launcher's environment: the egress proxy
    sends every connection it allowed on through that proxy (a pod whose network policy lets
    it reach only the cluster's capgate proxy; see ``capgate export kubernetes``). It can only
    add a layer: the launcher's own proxy still decides first. A malformed value is refused
    (``BackendUnavailable``), never ignored."""
    text = environ.get("CAPGATE_UPSTREAM_PROXY")
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in text):
        raise BackendUnavailable(f"CAPGATE_UPSTREAM_PROXY must be HOST:PORT, not {text!r}")
    return host, int(port)


CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                       "GIT_SSL_CAINFO", "PIP_CERT")


def _inspection(request: LaunchRequest) -> Any:
    """The proxy's TLS inspection for this run (``capgate.inspection``), or None when no host
    needs it (no credentials, no request rules, or the network is off)."""
    net = request.policy.network
    if not net.enabled or not (net.credentials or net.request_rules):
        return None
    from capgate.credentials import CredentialSet
    from capgate.inspection.relay import Inspection

    credentials = request.credentials if request.credentials is not None else CredentialSet()
    if net.credentials and not credentials:
        raise BackendUnavailable("the policy has credentials but the launcher read none; refusing to start")
    return Inspection(credentials, net.request_rules, request.upstream_ca, request.on_misuse)


def inspection_for_child(request: LaunchRequest, env: dict[str, str], audit: AuditLog) -> Any:
    """The run's TLS inspection (``_inspection``), with the child's side of it set in ``env``:
    the child trusts the run CA (plus the system's CAs, a bundle in the run directory) through
    every usual variable, and holds the placeholders where its code expects the secrets.
    Every backend whose child reads the run directory at the same path uses it."""
    inspection = _inspection(request)
    if inspection is not None:
        bundle = inspection.ca.write_bundle(os.path.join(request.run_dir, "ca-bundle.pem"))
        for name in CA_BUNDLE_VARIABLES:
            env[name] = bundle
        env.update(inspection.credentials.child_env())
        audit.event("proxy.inspection", hosts=sorted(inspection.hosts()),
                    credentials=[c.credential.key for c in inspection.credentials.items])
    return inspection


def _start_proxy(policy: Any, audit: AuditLog, *, unix_path: str | None = None, inspection: Any = None) -> Any:
    try:
        from capgate.proxy import EgressProxy  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise BackendUnavailable("the policy enables the network, but the egress proxy (capgate.proxy) is "
                                 "not available; refusing to start rather than allow direct connections") from exc
    from capgate.gate import Gate

    gate = Gate(policy, audit=audit)
    upstream = upstream_proxy(os.environ)
    proxy = EgressProxy(gate, unix_path=unix_path, upstream=upstream, inspection=inspection) if unix_path is not None \
        else EgressProxy(gate, upstream=upstream, inspection=inspection)
    if upstream is not None:
        audit.event("proxy.upstream", address=f"{upstream[0]}:{upstream[1]}")
    proxy.start()
    return proxy


def _supervise(argv: list[str], *, policy: Any, env: dict[str, str], cwd: str, pass_fds: tuple[int, ...],
               confine: Any = None) -> Any:
    try:
        from capgate.supervisor import supervise
    except ImportError:
        return _basic_supervise(argv, policy=policy, env=env, cwd=cwd, pass_fds=pass_fds)
    return supervise(argv, limits=policy.limits, env=env, cwd=cwd, capture=False,
                     timeout=float(policy.limits.wall_time_seconds), pass_fds=pass_fds, confine=confine)


def _basic_supervise(argv: list[str], *, policy: Any, env: dict[str, str], cwd: str,
                     pass_fds: tuple[int, ...]) -> Any:  # pragma: no cover - until capgate.supervisor lands
    """Stand-in for ``capgate.supervisor.supervise`` while that module is being written: new
    session, the basic rlimits, wall-time kill of the whole process group."""
    import resource
    import signal
    import subprocess
    from types import SimpleNamespace

    limits = policy.limits

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        size = limits.max_file_size_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True, pass_fds=pass_fds,
                            preexec_fn=preexec)
    timed_out = False
    try:
        rc = proc.wait(timeout=limits.wall_time_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    return SimpleNamespace(returncode=rc, timed_out=timed_out, duration=time.monotonic() - started,
                           limits_fired=("wall_time",) if timed_out else ())
