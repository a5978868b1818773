"""Shared by the container-backend tests: the runtimes here, one test image per runtime and
session, and the check that a run leaves nothing behind.

``.ci/run`` installs podman, runc and docker.io and starts ``dockerd``, so in CI (``CI=true``)
a runtime that does not answer is a failure, never a skip; elsewhere the tests say what is
missing and skip. The image is built under a test tag (never the default one: a developer's
``auto`` must not start picking the container backend because the tests ran).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from capgate.container_shim.build import build_image, find_runtime
from capgate.container_shim.rootfs import image_key

RUNTIMES = ("podman", "docker")
CACHE_VOLUME = "capgate-cache"


def require_runtime(runtime: str) -> str:
    """The runtime's client binary, once it answers (skip or, in CI, fail otherwise)."""
    exe = find_runtime(runtime)
    why = f"{runtime} is not installed"
    if exe is not None:
        done = subprocess.run([exe, "info", "--format", "{{.Host.Arch}}" if runtime == "podman" else "{{.ID}}"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return exe
        why = f"{runtime} does not answer: {done.stderr.strip()[-300:]}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the container backend must run in CI: {why}")
    pytest.skip(f"container backend unavailable here: {why}")


def test_image_name() -> str:
    return f"localhost/capgate-test:k{image_key()}"


test_image_name.__test__ = False  # type: ignore[attr-defined]  # (not a test: pytest collects test_*)


def build_test_image(runtime: str) -> Iterator[str]:
    """Build the image once for the session (or reuse one of this very capgate), then remove it."""
    exe = require_runtime(runtime)
    name = test_image_name()
    have = subprocess.run([exe, "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, timeout=60)
    if have.returncode != 0:
        build_image(runtime, tag=name)
    yield name
    subprocess.run([exe, "rmi", "-f", name], capture_output=True, timeout=120)


def leftovers(exe: str, image: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """Containers (any state; with ``image``, only those of that image: on a shared machine
    other people's containers come and go), volumes and networks the runtime holds now."""
    def names(*args: str) -> list[str]:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return sorted(done.stdout.split())

    only = ["--filter", f"ancestor={image}"] if image else []
    return (names("ps", "-a", *only, "--format", "{{.Names}}"), names("volume", "ls", "--format", "{{.Name}}"),
            names("network", "ls", "--format", "{{.Name}}"))



def run_owners(exe: str) -> dict[str, int | None]:
    """Each container's launcher pid (from the run directory its ``capgate.run`` label names:
    ``capgate-run-<pid>-...``), None for a container of no capgate run."""
    from capgate.launcher import _run_dir_owner

    label = '{{index .Labels "capgate.run"}}' if os.path.basename(exe).startswith("podman") else \
        '{{.Label "capgate.run"}}'
    done = subprocess.run([exe, "ps", "-a", "--format", "{{.Names}} " + label], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    owners: dict[str, int | None] = {}
    for line in done.stdout.splitlines():
        name, _, run = line.partition(" ")
        owners[name] = _run_dir_owner(run.strip(), "capgate-run-")
    return owners


def others_live_runs(exe: str) -> set[str]:
    """Containers of capgate runs whose launcher still lives: another suite's runs on a shared
    machine. When a test's teardown looks, its own launchers have all ended, so a container
    whose launcher is gone is a leak whoever made it."""
    live = set()
    for name, owner in run_owners(exe).items():
        if owner is None:
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            continue
        except OSError:
            pass  # (EPERM: it lives, as another user)
        live.add(name)
    return live
