"""The default image: what ``auto`` needs to know without asking a runtime, and what the
root file system holds (and does not)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from capgate.backends import container
from capgate.container_shim import build
from capgate.container_shim.rootfs import IMAGE_PREFIX, base_python, write_rootfs


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(container, "_available_cache", {})
    return tmp_path / "capgate" / "images"


def test_auto_asks_no_runtime_where_no_image_was_built(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: asked.append(a))
    ok, why = container.ContainerBackend(auto=True).available()
    assert not ok and why == "no container image built for this capgate (`capgate image build`)"
    assert asked == []


def test_the_record_counts_only_for_this_capgates_image(state: Path) -> None:
    assert build.built_image("podman") is None
    state.mkdir(parents=True)
    (state / "podman").write_text("localhost/capgate:kstale\n")
    assert build.built_image("podman") is None  # an older capgate's image: not this one
    (state / "podman").write_text(build.default_image() + "\n")
    assert build.built_image("podman") == build.default_image()
    assert build.built_image("docker") is None


def test_asked_by_name_with_a_recorded_image_the_run_is_the_check(state: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if build.find_runtime("podman") is None:
        pytest.skip("podman is not installed")
    state.mkdir(parents=True)
    (state / "podman").write_text(build.default_image() + "\n")
    asked: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: asked.append(a))
    backend = container.ContainerBackend(runtime="podman")
    assert backend.available() == (True, "") and asked == []
    assert backend.describe() == f"podman, image {build.default_image()}"


@pytest.fixture(scope="module")
def rootfs() -> tuple[io.BytesIO, dict[str, str]]:
    buf = io.BytesIO()
    facts = write_rootfs(buf, key="k0")
    return buf, facts


def test_the_root_file_system_holds_the_shim_and_python_and_no_secrets(rootfs: tuple[io.BytesIO,
                                                                                     dict[str, str]]) -> None:
    buf, facts = rootfs
    buf.seek(0)
    names = {"/" + m.name for m in tarfile.open(fileobj=buf)}
    for needed in (f"{IMAGE_PREFIX}/shim/entrypoint.py", f"{IMAGE_PREFIX}/shim/landlock.py",
                   f"{IMAGE_PREFIX}/shim/forwarder.py", f"{IMAGE_PREFIX}/boot/sitecustomize.py",
                   f"{IMAGE_PREFIX}/bin/python", f"{IMAGE_PREFIX}/image.json", base_python(), "/etc/passwd"):
        assert needed in names, needed
    assert f"{facts['capgate']}/gate.py" in names
    assert facts["key"] == "k0"
    # nothing of the host's secrets or users, no test suites
    assert not any(n.startswith(("/etc/shadow", "/etc/ssh", "/etc/ssl/private", "/root/.ssh", "/home/")) for n in names)
    assert not any("/test/" in n and "/python3." in n for n in names)


def test_the_images_bytecode_is_valid_for_its_sources(rootfs: tuple[io.BytesIO, dict[str, str]]) -> None:
    """The root is read-only in every run, so a ``.pyc`` that does not match its source is
    compiled again by every Python in every container: the shim's modules and the boot stub
    carry unchecked-hash bytecode, and a copied module's bytecode names its source's size and
    time as the image holds them."""
    import importlib.util
    import os
    import struct
    import sys

    buf, _facts = rootfs
    buf.seek(0)
    members = {"/" + m.name: m for m in tarfile.open(fileobj=buf)}
    buf.seek(0)
    tar = tarfile.open(fileobj=buf)

    def header(path: str) -> tuple[int, int, int]:
        fh = tar.extractfile(members[path].name)
        assert fh is not None
        flags, mtime, size = struct.unpack("<III", fh.read(16)[4:16])
        return flags, mtime, size

    for module in ("shim/landlock.py", "shim/ns_exec.py", "shim/forwarder.py", "boot/sitecustomize.py"):
        path = f"{IMAGE_PREFIX}/{module}"
        assert header(importlib.util.cache_from_source(path))[0] == 0b01, path  # hash-based, unchecked
    source = os.path.join(os.path.dirname(os.__file__), "struct.py")  # (the stdlib's own, with its bytecode)
    cached = importlib.util.cache_from_source(source)
    assert os.path.isfile(cached), f"the host has no bytecode for {source}"
    assert members[source].mtime == int(os.stat(source).st_mtime)
    flags, mtime, size = header(cached)
    assert flags == 0 and (mtime, size) == (members[source].mtime, members[source].size), sys.version
