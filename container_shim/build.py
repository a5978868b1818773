"""``capgate image build``: the default local image, made without any registry.

The root file system (``rootfs.write_rootfs``) is streamed as a tar straight into
``podman import`` / ``docker import``: no staging directory, no base image, no build
daemon features, a few seconds. The tag carries the image key (``rootfs.image_key``: this
Python, capgate's files, the shim), so a launcher finds *the* image made from the capgate it
is — a stale one (capgate upgraded since) is simply not found, and ``auto`` says to build
again instead of running an older gate inside.

Entry points: ``build_image(runtime) -> image name`` and ``default_image() -> image name``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from capgate.errors import BackendUnavailable

from .rootfs import IMAGE_SITE, image_key, write_rootfs

__all__ = ["IMAGE_REPOSITORY", "build_image", "built_image", "default_image", "find_runtime", "runtime_command"]

IMAGE_REPOSITORY = "localhost/capgate"
_RUNTIME_PATHS = {
    "podman": ("/usr/bin/podman", "/usr/local/bin/podman", "/bin/podman"),
    "docker": ("/usr/bin/docker", "/usr/local/bin/docker", "/bin/docker"),
}


def default_image() -> str:
    """The name of the default image for this capgate (``localhost/capgate:k<key>``)."""
    return f"{IMAGE_REPOSITORY}:k{image_key()}"


def _marker(runtime: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "capgate", "images", runtime)


def built_image(runtime: str) -> str | None:
    """The default image ``capgate image build`` last made for ``runtime`` as this user, if
    it is the one for this capgate (one small file read: how ``auto`` avoids asking a
    runtime on every run on a machine where no image was ever built)."""
    try:
        with open(_marker(runtime), encoding="utf-8") as fh:
            name = fh.read(200).strip()
    except OSError:
        return None
    return name if name == default_image() else None


def _record(runtime: str, name: str) -> None:
    path = _marker(runtime)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(name + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # auto then does not pick the container backend; --backend container still works


def find_runtime(runtime: str) -> str | None:
    """The runtime's client binary, from the fixed system locations first (a binary found
    through the user's PATH is taken only when it is in none of them)."""
    for path in _RUNTIME_PATHS.get(runtime, ()):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(runtime)


def runtime_command(runtime: str) -> list[str]:
    """The client's argv prefix (podman as root uses runc: crun fails on hybrid cgroups)."""
    exe = find_runtime(runtime)
    if exe is None:
        raise BackendUnavailable(f"{runtime} is not installed")
    return [exe]


def build_image(runtime: str = "podman", *, tag: str | None = None) -> str:
    """Build the default image with ``runtime`` (``podman`` or ``docker``); returns its name.
    Raises ``BackendUnavailable`` when the runtime is missing or refuses the import."""
    if runtime not in ("podman", "docker"):
        raise ValueError(f"unknown container runtime {runtime!r} (podman or docker)")
    key = image_key()
    name = tag or f"{IMAGE_REPOSITORY}:k{key}"
    import tempfile

    # PYTHONPATH: ``/opt/capgate/bin/python -m capgate`` works in the image on its own (the
    # Kubernetes export's entrypoint), as in an image built from the Containerfile; a capgate
    # run sets its own PYTHONPATH (boot directory first) over it.
    argv = [*runtime_command(runtime), "import", "--change", "WORKDIR /", "--change",
            f"ENV PYTHONPATH={IMAGE_SITE}", "-", name]
    with tempfile.TemporaryFile() as output:  # (a file, not a pipe: the import cannot block on it)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=output, stderr=output)
        assert proc.stdin is not None
        try:
            write_rootfs(proc.stdin, key=key)
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        returncode = proc.wait()
        output.seek(0)
        said = output.read().decode(errors="replace").strip()
    if returncode != 0:
        raise BackendUnavailable(f"{runtime} import failed: {said}")
    if tag is None:
        _record(runtime, name)
    return name
