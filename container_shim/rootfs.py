"""The default image's root file system, written as one tar stream (no registry, no build tool).

What goes in, each at **the same absolute path as on this host** (so the launcher's plans —
the interpreter's runtime read roots, the Landlock rules, exec dependencies — mean the same
inside the container as outside):

* this host's Python installation (the interpreter ``capgate`` runs under, resolved through a
  virtual environment to the real one): the binary, ``libpython``, the standard library
  without its test suites, IDLE, tkinter and ensurepip;
* capgate (with ``capgate.wrappers``) and the distributions it requires, in
  ``/opt/capgate/site`` (on the ``PYTHONPATH`` every capgate run sets, after the boot
  directory): the same place whatever the interpreter's own layout (Debian's Python has no
  ``lib/python3.N/site-packages`` on its path);
* a handful of ordinary programs (``sh``, ``true``, ``cat``, ``ls``...) so that shells and
  tools exist to be refused by the policy, not merely missing;
* every shared library those need (from ``ldd``), the dynamic loader, and the root symlinks
  (``/bin -> usr/bin`` on a merged-/usr host);
* ``/opt/capgate``: ``boot/sitecustomize.py`` (the soft sandbox's boot stub, the same text
  the launcher writes), ``shim/`` (the entrypoint with its stdlib-only siblings
  ``landlock.py``, ``ns_exec.py`` and ``forwarder.py``), ``bin/python`` (the interpreter), ``image.json``;
* a minimal ``/etc`` (``passwd``, ``group``, ``hosts``, ``nsswitch.conf``, the CA bundle) and
  empty mount points (``/proc``, ``/dev``, ``/sys``, ``/tmp``, ``/run``).

Why this rather than a Containerfile build or debootstrap: no registry is reachable (no base
image to start from), and copying the files already on disk takes a few seconds and gives a
~60 MB image whose Python is bit-for-bit the one capgate was tested with here.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import importlib.metadata
    import tarfile

# (importlib.metadata, tarfile, subprocess and json load only when an image is built: the
# launcher imports this module for ``image_key`` on every container run)

__all__ = ["IMAGE_PREFIX", "IMAGE_SITE", "TOOLS", "base_python", "image_key", "write_rootfs"]

IMAGE_PREFIX = "/opt/capgate"
IMAGE_SITE = f"{IMAGE_PREFIX}/site"  # capgate and its dependencies
# Programs put in the image from this host (when present): enough for scripts, and a shell
# for the policy to refuse.
TOOLS = ("sh", "dash", "bash", "true", "false", "cat", "ls", "env", "echo", "sleep", "id", "mkdir", "rm", "touch",
         "head", "cp", "mv", "ln", "chmod", "git")
_STDLIB_SKIP = frozenset({"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
                          "pydoc_data", "__phello__", "distutils"})
# Extension modules left out with them (_tkinter alone pulls in Tcl/Tk and X11).
_DYNLOAD_SKIP = ("_tkinter", "_test", "xxlimited", "xxsubtype", "_xxtestfuzz", "_ctypes_test")
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def base_python() -> str:
    """The real interpreter behind ``sys.executable`` (a venv's ``python`` is a symlink)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _stdlib() -> str:
    return os.path.dirname(os.__file__)


def _capgate_dirs() -> list[tuple[str, str]]:
    """(host directory, path in the image) for capgate and capgate.wrappers."""
    import capgate

    site = IMAGE_SITE
    pkg = os.path.dirname(os.path.realpath(capgate.__file__))
    out = [(pkg, os.path.join(site, "capgate"))]
    import importlib.util

    spec = importlib.util.find_spec("capgate.wrappers")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        real = os.path.realpath(location)
        if not real.startswith(pkg + os.sep):
            out.append((real, os.path.join(site, "capgate", "wrappers")))
    return out


def _requirement_names(dist: importlib.metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or ():
        if "extra ==" in req or "extra==" in req:
            continue
        name = re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0]
        if name:
            names.append(name)
    return names


def _dependency_files() -> list[tuple[str, str]]:
    """(host file, path in the image) for every installed distribution capgate needs."""
    import importlib.metadata

    site = IMAGE_SITE
    seen: set[str] = set()
    todo = _requirement_names(importlib.metadata.distribution("capgate"))
    out: list[tuple[str, str]] = []
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        todo += _requirement_names(dist)
        base = os.path.realpath(str(dist.locate_file("")))
        for entry in dist.files or ():
            path = os.path.realpath(str(dist.locate_file(entry)))
            if not path.startswith(base + os.sep) or not os.path.isfile(path) or "/bin/" in f"/{entry}":
                continue
            if path.endswith(".pyc") and ".opt-" in os.path.basename(path):
                continue
            out.append((path, os.path.join(site, os.path.relpath(path, base))))
    return out


@functools.lru_cache(maxsize=1)
def image_key() -> str:
    """What the image depends on: this Python, capgate's files (names, sizes, times) and the
    shim. A different key means the image is stale: ``capgate image build`` again."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(f"{base_python()}\0{sys.version}\0".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for root, _tail in (*_capgate_dirs(), (here, "")):
        for directory, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".txt", ".json", ".typed")):
                    st = os.stat(os.path.join(directory, name))
                    digest.update(f"{os.path.relpath(os.path.join(directory, name), root)}\0{st.st_size}\0"
                                  f"{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


class _Tar:
    """A tar being written: each path once, parent directories first."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        import tarfile

        self.tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.GNU_FORMAT)
        self.done: set[str] = {"/"}
        self.shared: list[str] = []  # host files of the shared objects written (for ldd)

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        import tarfile

        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, 0, 0, 0
        return info

    def directory(self, path: str, mode: int = 0o755) -> None:
        if path in self.done:
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        self.tar.addfile(self._info(path, b"5", mode))  # (tarfile.DIRTYPE)

    def symlink(self, path: str, target: str) -> None:
        if path in self.done:
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        info = self._info(path, b"2", 0o777)  # (tarfile.SYMTYPE)
        info.linkname = target
        self.tar.addfile(info)

    def data(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if path in self.done:
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        import io

        info = self._info(path, b"0", mode)  # (tarfile.REGTYPE)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def python(self, path: str, source: bytes, mode: int = 0o444) -> None:
        """A Python module at ``path`` and its bytecode, compiled now as an unchecked-hash
        ``.pyc`` (the image never changes, so it is never checked against the source): the
        shim and the boot stub run in every container and would be compiled there each time."""
        import importlib.util
        import py_compile
        import tempfile

        self.data(path, source, mode)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = os.path.join(tmp, "module.py"), os.path.join(tmp, "module.pyc")
            with open(src, "wb") as fh:
                fh.write(source)
            py_compile.compile(src, cfile=out, dfile=path, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            with open(out, "rb") as fh:
                self.data(importlib.util.cache_from_source(path), fh.read(), mode)

    def file(self, source: str, path: str | None = None) -> None:
        """``source`` (a host file, symlinks followed) at ``path`` (default: the same)."""
        path = path or source
        if path in self.done:
            return
        self.directory(os.path.dirname(path))
        st = os.stat(source)
        self.done.add(path)
        if ".so" in os.path.basename(source):
            self.shared.append(source)
        info = self._info(path, b"0", st.st_mode & 0o755)  # (tarfile.REGTYPE)
        # The host's time, not 0: a ``__pycache__`` file copied beside its source is valid only
        # for the source's size and modification time; with 0, every Python in the container
        # (the shim, the Python child's gate) compiled every module it imported from source on
        # every run (the root is read-only: nothing is ever cached).
        info.mtime = int(st.st_mtime)
        info.size = st.st_size
        with open(source, "rb") as fh:
            self.tar.addfile(info, fh)

    def host_path(self, path: str) -> None:
        """``path`` as this host has it: each symlink on the way (``/lib64 -> usr/lib64``,
        ``libc.so.6 -> libc-2.36.so``) as a symlink, then the file it ends at."""
        for _ in range(40):
            parent = os.path.realpath(os.path.dirname(path))
            here = os.path.join(parent, os.path.basename(path))
            if not os.path.islink(here):
                if os.path.isfile(here):
                    self.file(here)
                return
            target = os.readlink(here)
            self.symlink(here, target)
            path = target if target.startswith("/") else os.path.join(parent, target)

    def tree(self, source: str, target: str, skip: Iterable[str] = ()) -> None:
        skipped = frozenset(skip)
        for directory, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in skipped and not d.startswith("config-"))
            rel = os.path.relpath(directory, source)
            dest = target if rel == "." else os.path.join(target, rel)
            self.directory(dest)
            for name in sorted(files):
                if (".opt-" in name and name.endswith(".pyc")) or name.startswith(_DYNLOAD_SKIP):
                    continue
                full = os.path.join(directory, name)
                if os.path.islink(full) and not os.path.exists(full):
                    continue
                self.file(full, os.path.join(dest, name))

    def close(self) -> None:
        self.tar.close()


def _libraries(files: Iterable[str]) -> list[str]:
    """The shared libraries (and loader) the ELF ``files`` load, by ``ldd``."""
    import subprocess

    candidates = [f for f in files if os.path.isfile(f)]
    found: list[str] = []
    for start in range(0, len(candidates), 200):
        done = subprocess.run(["ldd", *candidates[start:start + 200]], capture_output=True, text=True,
                              check=False, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
        for line in done.stdout.splitlines():
            match = _LDD_LINE.search(line)
            if match and match.group(1) not in found:
                found.append(match.group(1))
    return found


def write_rootfs(fileobj: IO[bytes], *, key: str) -> dict[str, str]:
    """Write the image's root file system as a tar stream to ``fileobj``; returns the facts
    recorded in ``/opt/capgate/image.json``."""
    import json
    import shutil

    from capgate._soft_boot import SITECUSTOMIZE

    tar = _Tar(fileobj)
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        path = "/" + name
        if os.path.islink(path):
            tar.symlink(path, os.readlink(path))
    for name in ("proc", "dev", "sys", "run", "root", "home", "var", "var/tmp"):
        tar.directory("/" + name)
    tar.directory("/tmp", 0o1777)
    python = base_python()
    version = _version()
    stdlib = _stdlib()
    tar.host_path(python)
    prefix = sys.base_prefix
    for name in (f"libpython{version}.so.1.0", f"libpython{version}.so", "libpython3.so"):
        lib = os.path.join(prefix, "lib", name)
        if os.path.lexists(lib):
            tar.host_path(lib)
    for alias in ("python3", "python", f"python{version}"):
        tar.symlink(f"/usr/local/bin/{alias}", python)
    tar.symlink(f"{IMAGE_PREFIX}/bin/python", python)
    tar.tree(stdlib, stdlib, skip=_STDLIB_SKIP)
    site = IMAGE_SITE
    for source, target in _capgate_dirs():
        tar.tree(source, target, skip=("tests",))
    for source, target in _dependency_files():
        tar.file(source, target)
    tools: list[str] = []
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for tool in TOOLS:
        found = shutil.which(tool, path=search)
        if found:
            tar.host_path(found)
            tools.append(os.path.realpath(found))
    for loader in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(loader):
            tar.host_path(loader)
    for lib in _libraries([python, *tools, *tar.shared]):
        tar.host_path(lib)
    here = os.path.dirname(os.path.abspath(__file__))
    import capgate._sys

    sys_dir = os.path.dirname(os.path.realpath(capgate._sys.__file__ or ""))
    tar.file(os.path.join(here, "entrypoint.py"), f"{IMAGE_PREFIX}/shim/entrypoint.py")  # (run as a script)
    for name in ("landlock", "forwarder", "ns_exec"):  # (ns_exec: its _ctypes Landlock path)
        with open(os.path.join(sys_dir, f"{name}.py"), "rb") as fh:
            tar.python(f"{IMAGE_PREFIX}/shim/{name}.py", fh.read())
    tar.python(f"{IMAGE_PREFIX}/boot/sitecustomize.py", SITECUSTOMIZE.encode())
    facts = {"key": key, "python": python, "site": site, "capgate": os.path.join(site, "capgate")}
    tar.data(f"{IMAGE_PREFIX}/image.json", json.dumps(facts, indent=1).encode(), 0o444)
    tar.data("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    tar.data("/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    tar.data("/etc/hosts", b"127.0.0.1 localhost capgate\n::1 localhost\n")
    tar.data("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files\n")
    for bundle in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if os.path.exists(bundle):
            tar.file(bundle)
    tar.close()
    return facts
