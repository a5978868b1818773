"""Container runtimes on this machine: which are installed, their versions, and whether the
engine answers — for ``capgate doctor`` and for the container backend's ``available()``.

Only the runtimes' own command-line tools are asked (``podman version``, ``docker version``,
``runc --version``), each with a short timeout and a clean answer on any failure: this module
decides nothing about a policy and never raises for a missing or broken runtime. The docker
CLI is asked rather than its socket so that ``DOCKER_HOST`` and docker contexts mean what
they mean to the user. podman has no daemon: it "answers" when ``podman version`` itself
reports the engine side (the local libpod), which fails when its storage or user namespace
setup is broken.

``TESTED`` holds the versions this release was tested with (Debian bookworm's podman, runc
and Docker Engine); an older one gets a warning naming the minimum, never a refusal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["RUNTIMES", "TESTED", "Runtime", "detect", "detect_all", "parse_version", "version_below"]

TESTED: Mapping[str, str] = {"podman": "4.3.1", "docker": "20.10.24", "runc": "1.1.5"}
"""The oldest version of each tool this release was tested with (Debian bookworm's)."""

RUNTIMES = ("podman", "docker")
"""The container engines capgate's container backend can drive, in order of preference."""

_TIMEOUT = 5.0
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The first ``X.Y[.Z]`` in ``text`` (``20.10.24+dfsg1`` -> (20, 10, 24)), or None."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def version_below(version: str | None, minimum: str) -> bool:
    """Is ``version`` older than ``minimum``? An unreadable version is not called old."""
    have, want = parse_version(version or ""), parse_version(minimum)
    return have is not None and want is not None and have < want


@dataclass(frozen=True)
class Runtime:
    """What was found of one tool. ``engine_version`` is the server side (Docker Engine; for
    podman its local engine), known only when ``answers``; ``why`` says what failed."""

    name: str
    path: str | None
    version: str | None = None
    engine_version: str | None = None
    answers: bool = False
    why: str = ""
    oci_runtime: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def installed(self) -> bool:
        return self.path is not None

    @property
    def usable(self) -> bool:
        """Installed and its engine answers: the container backend can start containers."""
        return self.installed and self.answers

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "path": self.path, "installed": self.installed, "version": self.version,
                "engineVersion": self.engine_version, "answers": self.answers, "why": self.why,
                "ociRuntime": self.oci_runtime, "testedMinimum": TESTED.get(self.name),
                "warnings": list(self.warnings)}


def _run(argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[int, str, str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL,
                              env=None if env is None else dict(env), check=False)
    except subprocess.TimeoutExpired:
        return -1, "", f"no answer within {_TIMEOUT:g} s"
    except OSError as exc:
        return -1, "", str(exc)
    return done.returncode, done.stdout, done.stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _age_warnings(name: str, *versions: str | None) -> tuple[str, ...]:
    minimum = TESTED.get(name)
    if minimum is None:
        return ()
    return tuple(f"{name} {v} is older than {minimum}, the oldest version capgate was tested with"
                 for v in dict.fromkeys(versions) if v and version_below(v, minimum))


def _docker(path: str, env: Mapping[str, str] | None) -> Runtime:
    code, out, err = _run([path, "version", "--format", "{{json .}}"], env)
    try:
        data = json.loads(out) if out.strip() else {}
    except ValueError:
        data = {}
    client = data.get("Client") or {}
    server = data.get("Server") or {}
    version = client.get("Version")
    if code == 0 and server:
        engine = server.get("Version")
        oci = next((c.get("Version") for c in server.get("Components") or () if c.get("Name") == "runc"), None)
        return Runtime("docker", path, version, engine, True, "", f"runc {oci}" if oci else None,
                       _age_warnings("docker", engine))
    why = _last_line(err) or f"docker version exited {code}"
    if version is None:  # an old CLI without --format json output: its --version line
        _c, vout, _e = _run([path, "--version"], env)
        parsed = parse_version(vout)
        version = ".".join(map(str, parsed)) if parsed else None
    return Runtime("docker", path, version, None, False, f"the Docker daemon does not answer ({why})")


def _podman(path: str, env: Mapping[str, str] | None) -> Runtime:
    code, out, err = _run([path, "version", "--format", "{{json .}}"], env)
    try:
        data = json.loads(out) if out.strip() else {}
    except ValueError:
        data = {}
    version = (data.get("Client") or {}).get("Version")
    if version is None:
        _c, vout, _e = _run([path, "--version"], env)
        parsed = parse_version(vout)
        version = ".".join(map(str, parsed)) if parsed else None
    if code != 0:
        why = _last_line(err) or f"podman version exited {code}"
        return Runtime("podman", path, version, None, False, f"podman does not work here ({why})",
                       warnings=_age_warnings("podman", version))
    # podman is daemonless: a remote client (podman-remote, CONTAINER_HOST) reports a Server.
    engine = (data.get("Server") or {}).get("Version") or version
    return Runtime("podman", path, version, engine, True, "", None, _age_warnings("podman", version, engine))


def _runc(path: str, env: Mapping[str, str] | None) -> Runtime:
    code, out, err = _run([path, "--version"], env)
    first = out.strip().splitlines()[0] if out.strip() else ""
    parsed = parse_version(first)
    if first.startswith("runc version"):
        version: str | None = first.split()[-1]
    else:
        version = ".".join(map(str, parsed)) if parsed else None
    if code != 0:
        return Runtime("runc", path, version, None, False, _last_line(err) or f"runc --version exited {code}")
    # runc is an OCI runtime, not an engine: nothing to answer beyond running.
    return Runtime("runc", path, version, None, True, "", None, _age_warnings("runc", version))


_PROBES = {"docker": _docker, "podman": _podman, "runc": _runc}


def detect(name: str, *, env: Mapping[str, str] | None = None) -> Runtime:
    """Find ``name`` (podman, docker or runc) on ``PATH`` (of ``env``, default this process's)
    and ask it for its version and whether its engine answers."""
    probe = _PROBES.get(name)
    if probe is None:
        raise ValueError(f"unknown container runtime {name!r}: one of {', '.join(_PROBES)}")
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    path = shutil.which(name, path=search)
    if path is None:
        return Runtime(name, None, why=f"{name} is not installed (not found on PATH)")
    return probe(path, env)


def detect_all(*, env: Mapping[str, str] | None = None) -> list[Runtime]:
    """podman, docker and runc, in that order."""
    return [detect(name, env=env) for name in (*RUNTIMES, "runc")]
