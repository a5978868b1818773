"""Container backend (podman/docker): not built yet.

Until it is, ``available()`` says so plainly; ``--backend container`` therefore refuses to
start (exit 125) instead of silently running something weaker, and ``auto`` picks soft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from capgate.backends.base import LaunchRequest, LaunchResult
from capgate.errors import BackendUnavailable

if TYPE_CHECKING:
    from capgate.audit import AuditLog

__all__ = ["ContainerBackend"]


class ContainerBackend:
    name = "container"
    # (To support --staged: mount an overlay of the workspace with the run's upper/work
    # directories, ``capgate.staging.store.StagedRun``, in place of the workspace bind.)
    staging_refusal: str | None = "staged writes are not yet supported by the container backend"

    def available(self) -> tuple[bool, str]:
        return False, "not built yet"

    def launch(self, request: LaunchRequest, audit: AuditLog) -> LaunchResult:
        raise BackendUnavailable(self.available()[1])
