"""Sandbox backends: ``soft`` (audit hooks + process controls) and ``container``."""

from __future__ import annotations

from capgate.backends.base import Backend, LaunchRequest, LaunchResult

__all__ = ["Backend", "LaunchRequest", "LaunchResult", "get_backend"]


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``soft`` or ``container``)."""
    if name == "soft":
        from capgate.backends.soft import SoftBackend

        return SoftBackend()
    if name == "container":
        from capgate.backends.container import ContainerBackend

        return ContainerBackend()
    raise ValueError(f"unknown backend {name!r}")
