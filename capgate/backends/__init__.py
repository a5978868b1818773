"""Sandbox backends: ``soft`` (audit hooks + process controls), ``namespace`` (the same inside a
view of its own) and ``container``."""

from __future__ import annotations

from capgate.backends.base import Backend, LaunchRequest, LaunchResult

__all__ = ["Backend", "LaunchRequest", "LaunchResult", "get_backend"]


def get_backend(name: str, *, runtime: str | None = None, image: str | None = None) -> Backend:
    """The backend called ``name`` (``soft``, ``namespace`` or ``container``; ``runtime`` and
    ``image`` are the container backend's)."""
    if name == "soft":
        from capgate.backends.soft import SoftBackend

        return SoftBackend()
    if name == "namespace":
        from capgate.backends.namespace import NamespaceBackend

        return NamespaceBackend()
    if name == "container":
        from capgate.backends.container import ContainerBackend

        return ContainerBackend(runtime=runtime, image=image)
    raise ValueError(f"unknown backend {name!r}")
