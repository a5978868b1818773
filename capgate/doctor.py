"""``capgate doctor``: what this machine offers the sandbox, and which backend ``auto`` picks.

Every answer comes from the probe the sandbox itself relies on, so the report cannot drift
from what ``capgate run`` does: the container runtimes from ``capgate.runtimes``, user
namespaces from the namespace backend's bubblewrap probe (plus one ``unshare(CLONE_NEWUSER)``
in a child, and the sysctls that explain a refusal), the Landlock ABI from
``capgate._sys.landlock``, openat2 from ``capgate._sys.openat2``, the cgroup layout from
``capgate._sys.cgroup`` and the backend choice from the launcher's own ``auto`` rule.

It changes nothing (no cgroup, no cache file); ``--json`` prints the same report as one
object. Exit status 0 (warnings are printed, not failures); 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["LANDLOCK_FEATURES", "collect", "doctor_command", "render"]

LANDLOCK_FEATURES: Mapping[int, str] = {
    1: "file access rights",
    2: "rename and link across directories",
    3: "truncate",
    4: "TCP connect (the whole tree reaches only the egress proxy)",
    5: "ioctl on devices",
    6: "signal and abstract Unix socket scoping",
    7: "control of the kernel's audit logging of denials",
}
"""What each Landlock ABI version adds (capgate uses 1-4 and 6 where the kernel has them)."""

_USERNS_SYSCTLS = {
    "/proc/sys/user/max_user_namespaces": ("0", "user.max_user_namespaces is 0: no user namespaces at all"),
    "/proc/sys/kernel/unprivileged_userns_clone": (
        "0", "kernel.unprivileged_userns_clone is 0: user namespaces only for root (Debian's switch)"),
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": (
        "1", "kernel.apparmor_restrict_unprivileged_userns is 1: AppArmor refuses user namespaces to "
             "programs without a profile allowing them (Ubuntu 23.10+)"),
}

# In a child: unshare(CLONE_NEWUSER) through libc, exit 0 or the errno.
_UNSHARE_CHILD = ("import ctypes, os\n"
                  "libc = ctypes.CDLL(None, use_errno=True)\n"
                  "os._exit(0 if libc.unshare(0x10000000) == 0 else (ctypes.get_errno() or 1))\n")


def _sysctl(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _kernel_userns() -> tuple[bool, str]:
    """Can this user create a user namespace at all (without bubblewrap)?"""
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _UNSHARE_CHILD], capture_output=True, timeout=10,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"the probe could not run: {exc}"
    if done.returncode == 0:
        return True, ""
    return False, f"unshare(CLONE_NEWUSER) failed: {os.strerror(done.returncode)}"


def _user_namespaces() -> dict[str, Any]:
    from capgate.backends import namespace

    kernel_ok, kernel_why = _kernel_userns()
    hints = [why for path, (bad, why) in _USERNS_SYSCTLS.items() if _sysctl(path) == bad]
    bwrap = namespace.find_bwrap()
    if bwrap is None:
        works, why = False, ("bubblewrap is not installed (a root-owned bwrap in "
                             f"{', '.join(namespace.BWRAP_PATHS)}; Debian/Ubuntu: apt install bubblewrap)")
    else:
        # A real try, never the answer cached for this boot; the backend choice below is made
        # with it too (a stale cached "yes" would otherwise contradict this line).
        works, why = namespace._probe(bwrap)
        namespace._probe_cache = (works, why)
    if not works and not kernel_ok and hints:
        why = f"{why}; {'; '.join(hints)}"
    return {"works": works, "bwrap": bwrap, "why": why,
            "kernel": {"works": kernel_ok, "why": kernel_why}, "sysctlHints": hints, "user": os.getuid()}


def _backend(env: Mapping[str, str]) -> dict[str, str | None]:
    from capgate.errors import CapgateError
    from capgate.launcher import UsageError, _choose_backend

    try:
        name, why, _chosen = _choose_backend("auto", env)
    except (CapgateError, UsageError) as exc:
        return {"auto": None, "why": str(exc)}
    return {"auto": name, "why": why.removeprefix("auto: ")}


def collect(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The whole report as data (the ``--json`` object)."""
    from capgate import __version__, runtimes
    from capgate._sys import cgroup, landlock, openat2

    environ = os.environ if env is None else env
    warnings: list[str] = []
    python = {"version": sys.version.split()[0], "implementation": sys.implementation.name,
              "executable": sys.executable, "supported": sys.implementation.name == "cpython"
              and sys.version_info >= (3, 10)}
    if not python["supported"]:
        warnings.append(f"Python {python['version']} ({python['implementation']}): capgate needs CPython 3.10+")
    found = runtimes.detect_all(env=environ)
    for rt in found:
        warnings.extend(rt.warnings)
    engines = [rt for rt in found if rt.name in runtimes.RUNTIMES]
    if not any(rt.usable for rt in engines):
        warnings.append("no container runtime answers (" + "; ".join(f"{rt.name}: {rt.why}" for rt in engines) + ")")
    userns = _user_namespaces()
    if not userns["works"]:
        warnings.append(f"no namespace backend: {userns['why']}")
    abi = landlock.available()
    if abi == 0:
        warnings.append("no Landlock (kernel 5.13+ with landlock in the lsm= list): the soft backend has no "
                        "kernel layer for native programs")
    if not openat2.AVAILABLE:
        warnings.append("no openat2 (kernel 5.6+; refused under some seccomp profiles): file opens use the "
                        "slower no-follow walk")
    cgroups = cgroup.layout()
    if cgroups.get("perRunPids") is None:
        warnings.append("no writable pids cgroup: maxProcesses falls back to RLIMIT_NPROC (per user, not per run)")
    uname = os.uname()
    return {
        "capgate": {"version": __version__, "location": os.path.dirname(os.path.abspath(__file__))},
        "python": python,
        "system": {"system": uname.sysname, "release": uname.release, "machine": uname.machine},
        "containerRuntimes": [rt.to_dict() for rt in found],
        "userNamespaces": userns,
        "landlock": {"abi": abi, "features": [LANDLOCK_FEATURES[v] for v in sorted(LANDLOCK_FEATURES) if v <= abi]},
        "openat2": {"available": openat2.AVAILABLE},
        "cgroups": cgroups,
        "backend": _backend(environ),
        "warnings": warnings,
    }


_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy"}


def _runtime_line(rt: dict[str, Any]) -> str:
    if not rt["installed"]:
        return f"  {rt['name']:<8} not installed"
    where = f"({rt['path']})"
    if rt["name"] == "docker":
        if rt["answers"]:
            extra = f", runs containers with {rt['ociRuntime']}" if rt["ociRuntime"] else ""
            return (f"  docker   client {rt['version']}, Docker Engine {rt['engineVersion']} {where}: "
                    f"the daemon answers{extra}")
        return f"  docker   client {rt['version']} {where}: {rt['why']}"
    if rt["name"] == "podman":
        state = "works (no daemon needed)" if rt["answers"] else rt["why"]
        return f"  podman   {rt['version']} {where}: {state}"
    return f"  {rt['name']:<8} {rt['version']} {where}" + ("" if rt["answers"] else f": {rt['why']}")


def render(report: Mapping[str, Any]) -> str:
    """The report as text, one topic a line (continuations indented)."""
    py, system, userns = report["python"], report["system"], report["userNamespaces"]
    lines = [f"capgate {report['capgate']['version']} ({report['capgate']['location']})",
             f"python           {_IMPLEMENTATIONS.get(py['implementation'], py['implementation'])} {py['version']} "
             f"({py['executable']})"
             + ("" if py["supported"] else ": unsupported, capgate needs CPython 3.10+"),
             f"system           {system['system']} {system['release']} {system['machine']}",
             "container runtimes (tested: podman 4.3.1, Docker Engine 20.10.24, runc 1.1.5)"]
    lines += [_runtime_line(rt) for rt in report["containerRuntimes"]]
    if userns["works"]:
        lines.append(f"user namespaces  work (bubblewrap {userns['bwrap']} made user, pid, network, ipc and uts "
                     "namespaces)")
    else:
        kernel = "the kernel allows them to this user" if userns["kernel"]["works"] else userns["kernel"]["why"]
        lines.append(f"user namespaces  no namespace backend: {userns['why']} ({kernel})")
    ll = report["landlock"]
    lines.append(f"landlock         ABI {ll['abi']}: " + ", ".join(ll["features"]) if ll["abi"] else
                 "landlock         not available")
    lines.append("openat2          available: opens resolve beneath their root in the kernel"
                 if report["openat2"]["available"] else "openat2          not available: opens use the no-follow walk")
    cg = report["cgroups"]
    controllers = ", ".join(f"{name} {where or 'missing'}" for name, where in cg["controllers"].items())
    per_run = (f"per-run pids cgroups under {cg['perRunPids']}" if cg["perRunPids"]
               else "no per-run pids cgroup (not writable here)")
    lines.append(f"cgroups          {cg['version']}; {controllers}; {per_run}")
    backend = report["backend"]
    lines.append(f"backend          auto picks {backend['auto']}: {backend['why']}" if backend["auto"]
                 else f"backend          auto cannot pick: {backend['why']}")
    if report["warnings"]:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in report["warnings"]]
    else:
        lines.append("warnings: none")
    return "".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 100) -> str:
    """One line in at most ``width`` columns, continuing under its value (or its item)."""
    import textwrap

    indent = " " * (4 if line.startswith("  - ") else 11 if line.startswith("  ") else 17)
    return "\n".join(textwrap.wrap(line, width=width, subsequent_indent=indent, break_on_hyphens=False,
                                   break_long_words=False)) + "\n"


def doctor_command(*, as_json: bool = False, stdout: IO[str] | None = None,
                   env: Mapping[str, str] | None = None) -> int:
    """``capgate doctor [--json]``."""
    out = stdout or sys.stdout
    report = collect(env)
    out.write(json.dumps(report, indent=2) + "\n" if as_json else render(report))
    out.flush()
    return 0
